"""Real trace and log backends for tests: Jaeger v2 (in-memory) and VictoriaLogs.

- ``build_backend("jaeger" | "victorialogs")``: the binary from scripts/build-<name>.sh (cached
  per version by scripts/build-go-program.sh; built once per test process).
- ``Jaeger``: compose/jaeger/jaeger.yaml (OTLP in, in-memory storage, the query API
  ``/api/traces/<id>`` and ``/api/v3/traces/<id>``, its own metrics), every listener on a free
  127.0.0.1 port through the file's env vars.
- ``VictoriaLogs``: OTLP/HTTP logs in (``/insert/opentelemetry/v1/logs``), LogsQL out.

Both are stopped at exit if a test forgot to.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.process import ManagedProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SKIP_ENV = "LLM_PIPELINE_SKIP_BACKENDS"
JAEGER_CONFIG = REPO_ROOT / "compose" / "jaeger" / "jaeger.yaml"
SCRIPTS = {
    "jaeger": REPO_ROOT / "scripts" / "build-jaeger.sh",
    "victorialogs": REPO_ROOT / "scripts" / "build-victorialogs.sh",
}

_built: dict[str, Path | Exception] = {}
_build_lock = threading.Lock()


class BackendBuildError(RuntimeError):
    pass


def build_backend(name: str, timeout: float = 2400) -> Path:
    """Run scripts/build-<name>.sh once per process (one at a time: each takes GBs to build);
    return the binary path, or re-raise the first failure."""
    with _build_lock:
        if name not in _built:
            script = SCRIPTS[name]
            try:
                proc = subprocess.run(
                    ["bash", str(script)],
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
                lines = proc.stdout.strip().splitlines()
                if proc.returncode != 0 or not lines:
                    raise BackendBuildError(
                        f"{script} exited {proc.returncode}\n--- stderr (tail) ---\n"
                        + "\n".join(proc.stderr.splitlines()[-40:])
                    )
                path = Path(lines[-1])
                if not os.access(path, os.X_OK):
                    raise BackendBuildError(f"{script} printed {path}, not an executable")
                _built[name] = path
            except Exception as exc:  # remembered: every test reports the same error
                _built[name] = exc
        got = _built[name]
        if isinstance(got, Exception):
            raise got
        return got


def _get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class _Process(ManagedProcess):
    """A backend binary run in its own work directory."""

    name = "backend"

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(self.workdir / f"{self.name}.log", cwd=self.workdir)


# ---------------------------------------------------------------------------------------- Jaeger


class Jaeger(_Process):
    """Jaeger v2 with in-memory storage (a restart empties it) on free loopback ports."""

    name = "jaeger"

    def __init__(self, binary: Path, workdir: Path) -> None:
        super().__init__(binary, workdir)
        self.otlp_grpc_port = free_port()
        self.otlp_http_port = free_port()
        self.query_port = free_port()
        self.query_grpc_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.env = {
            "JAEGER_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self.otlp_grpc_port}",
            "JAEGER_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.otlp_http_port}",
            "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{self.query_port}",
            "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{self.query_grpc_port}",
            "JAEGER_HEALTH_ENDPOINT": f"127.0.0.1:{self.health_port}",
            "JAEGER_METRICS_HOST": "127.0.0.1",
            "JAEGER_METRICS_PORT": str(self.metrics_port),
            "JAEGER_BATCH_TIMEOUT": "200ms",
        }

    @property
    def otlp_grpc(self) -> str:
        """host:port for an OTLP/gRPC exporter."""
        return f"127.0.0.1:{self.otlp_grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def args(self) -> list[str]:
        return [str(self.binary), "--config", str(JAEGER_CONFIG)]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/status", timeout=1
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans of a trace from the v1 API (``/api/traces/<id>``), [] when not found.

        Each span: ``traceID``, ``spanID`` (hex, zero-padded here), ``operationName``, ``tags``
        flattened to a dict, ``process`` (service name and resource tags).
        """
        try:
            body = _get_json(f"{self.url}/api/traces/{trace_id}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise
        out = []
        for t in body.get("data") or []:
            procs = t.get("processes", {})
            for s in t["spans"]:
                p = procs.get(s.get("processID"), {})
                out.append(
                    {
                        "traceID": s["traceID"].zfill(32),
                        "spanID": s["spanID"].zfill(16),
                        "operationName": s["operationName"],
                        "tags": {tag["key"]: tag["value"] for tag in s.get("tags", [])},
                        "process": {
                            "serviceName": p.get("serviceName"),
                            **{tag["key"]: tag["value"] for tag in p.get("tags", [])},
                        },
                    }
                )
        return out

    def trace_otlp(self, trace_id: str) -> dict[str, Any]:
        """The same trace from the v3 API (``/api/v3/traces/<id>``): OTLP/JSON resourceSpans."""
        body: dict[str, Any] = _get_json(f"{self.url}/api/v3/traces/{trace_id}")
        return body

    def metric(self, name: str, **labels: str) -> float | None:
        """Sum of the samples of Jaeger's own metric ``name`` (or ``name``_total) matching
        ``labels``."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2
        ) as r:
            text = r.read().decode()
        total, seen = 0.0, False
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)", line)
            if not m or m.group(1) not in (name, f"{name}_total"):
                continue
            got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(4))
                seen = True
        return total if seen else None


# ---------------------------------------------------------------------------------- VictoriaLogs


class VictoriaLogs(_Process):
    """VictoriaLogs on a free loopback port, its data under the work directory."""

    name = "victoria-logs"

    def __init__(self, binary: Path, workdir: Path) -> None:
        super().__init__(binary, workdir)
        self.port = free_port()
        self.data = self.workdir / "victoria-logs-data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        """Base endpoint for the Collector's otlp_http exporter (it appends /v1/logs)."""
        return f"{self.url}/insert/opentelemetry"

    def args(self) -> list[str]:
        return [
            str(self.binary),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.data}",
            "-retentionPeriod=1d",
            "-loggerLevel=WARN",
        ]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def query(self, logsql: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Run a LogsQL query (``/select/logsql/query``); one dict per result line."""
        params = {"query": logsql}
        if limit is not None:
            params["limit"] = str(limit)
        req = urllib.request.Request(
            f"{self.url}/select/logsql/query",
            data=urllib.parse.urlencode(params).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def count(self, logsql: str) -> int:
        """How many records match ``logsql``."""
        rows = self.query(f"{logsql} | stats count() as n")
        return int(rows[0]["n"]) if rows else 0
