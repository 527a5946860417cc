"""Start the real sidecar (`python -m pipeline.cli run`) on free ports for a test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from .process import free_port, terminate


@dataclass
class SidecarProcess:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    metrics_port: int
    config_path: Path
    log_path: Path

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def scrape(self, openmetrics: bool = True) -> str:
        accept = "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain"
        r = httpx.get(self.metrics_url, headers={"Accept": accept}, timeout=5)
        r.raise_for_status()
        return r.text

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        return terminate(self.proc, timeout)


def start_sidecar(
    tmp: Path,
    config: dict[str, Any] | None = None,
    ports: tuple[int, int, int] | None = None,
    module: str = "pipeline.cli",  # a test's own entry point that patches, then runs the CLI
) -> SidecarProcess:
    grpc_port, http_port, metrics_port = ports or (free_port(), free_port(), free_port())
    cfg = dict(config or {})
    cfg.setdefault("file", {"directory": str(tmp / "pipeline-data")})
    path = tmp / f"sidecar-{grpc_port}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log_path = tmp / f"sidecar-{grpc_port}.log"
    cmd = [
        sys.executable,
        "-m",
        module,
        "run",
        "--config",
        str(path),
        "--otlp-grpc",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http",
        f"127.0.0.1:{http_port}",
        "--metrics",
        f"127.0.0.1:{metrics_port}",
    ]
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env)
    sc = SidecarProcess(proc, grpc_port, http_port, metrics_port, path, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sidecar exited {proc.returncode}:\n{sc.logs()}")
        try:
            if httpx.get(f"http://127.0.0.1:{metrics_port}/health", timeout=1).status_code == 200:
                return sc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sc.stop()
    raise RuntimeError(f"sidecar did not become ready:\n{sc.logs()}")
