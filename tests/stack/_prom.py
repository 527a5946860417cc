"""A real Prometheus (Debian's `prometheus`) for tests: free port, config, readiness, HTTP API.

    with PrometheusServer(tmp_path, config) as prom:      # config: dict or YAML text
        prom.wait_for('up{job="llm-pipeline"} == 1')
        prom.query("sum(rate(x[1m]))")

`compose_prometheus_config()` turns the stack's compose/prometheus/prometheus.yml into a config
for this machine: the same jobs (job names are part of the alert rules' contract), their
targets pointed at local ports, the rule files loaded from the repository.
Also used outside tests/stack (import it as `tests.stack._prom` with the repository root on
sys.path, as `python -m pytest` has it).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_PROMETHEUS = REPO / "compose" / "prometheus" / "prometheus.yml"
RULES_DIR = REPO / "dashboards" / "rules"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_binary(name: str) -> str:
    """Path of a tool the stack tests need (Debian packages prometheus, prometheus-alertmanager).

    Missing: fails under CI (a missing install step must not pass as a skip), skips locally.
    """
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not found: apt-get install prometheus prometheus-alertmanager"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def compose_prometheus_config(
    targets: dict[str, str],
    *,
    interval: str = "1s",
    rule_files: list[str] | None = None,
    keep_other_jobs: bool = False,
) -> dict[str, Any]:
    """compose/prometheus/prometheus.yml with job -> 'host:port' replaced for this machine.

    Jobs not in `targets` are dropped (unless keep_other_jobs), as is alerting; rule_files
    default to the repository's dashboards/rules/*.yml.
    """
    cfg = yaml.safe_load(COMPOSE_PROMETHEUS.read_text())
    out: dict[str, Any] = copy.deepcopy(cfg)
    out["global"]["scrape_interval"] = interval
    out["global"]["evaluation_interval"] = interval
    out.pop("alerting", None)
    out["rule_files"] = rule_files if rule_files is not None else [str(RULES_DIR / "*.yml")]
    jobs = []
    for job in cfg["scrape_configs"]:
        name = job["job_name"]
        if name in targets:
            job = copy.deepcopy(job)
            job["scrape_interval"] = interval
            job["static_configs"] = [{"targets": [targets[name]]}]
            jobs.append(job)
        elif keep_other_jobs:
            jobs.append(job)
    missing = set(targets) - {j["job_name"] for j in cfg["scrape_configs"]}
    if missing:
        raise KeyError(f"no such job in {COMPOSE_PROMETHEUS}: {sorted(missing)}")
    out["scrape_configs"] = jobs
    return out


class PromQLError(AssertionError):
    pass


class PrometheusServer:
    """Runs `prometheus` on 127.0.0.1:<free port> with exemplar storage, until stop()."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any] | str,
        extra_args: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config_path = self.workdir / "prometheus.yml"
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)
        self.log_path = self.workdir / "prometheus.log"
        self.cmd = [
            require_binary("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--enable-feature=exemplar-storage",
            *(extra_args or []),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> PrometheusServer:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- HTTP API ------------------------------------------------------------------------------
    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; the query endpoints by POST (long expressions)."""
        data = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        if path.startswith("query"):
            req = urllib.request.Request(
                f"{self.url}/api/v1/{path}", data=data.encode(), method="POST"
            )
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        else:
            req = urllib.request.Request(f"{self.url}/api/v1/{path}?{data}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise PromQLError(f"{path} {params}: HTTP {e.code}: {raw[:200]!r}") from e
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the result list (a vector; scalars as one unlabeled sample)."""
        data = self.api("query", query=expr, time=at)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] == "matrix":
            return [{"metric": s["metric"], "value": s["values"][-1]} for s in data["result"]]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        result: list[Any] = self.api("query_range", query=expr, start=start, end=end, step=step)[
            "result"
        ]
        return result

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.api("query_exemplars", query=expr, start=start, end=end)
        return data

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll an instant query until it returns something (or time is up: returns [])."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.query(expr)
            if res or time.monotonic() > deadline:
                return res
            time.sleep(0.25)
