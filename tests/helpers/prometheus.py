"""A real Prometheus (Debian's package) on a free port, scraping what the test says."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .otlp_sink import free_port


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("prometheus is not installed: run scripts/setup.sh (Debian package prometheus)")
    return path


@dataclass
class PrometheusProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"PromQL error for {promql!r}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def exemplars(self, promql: str, start: float, end: float) -> list[dict[str, Any]]:
        r = httpx.get(
            f"{self.url}/api/v1/query_exemplars",
            params={"query": promql, "start": start, "end": end},
            timeout=10,
        )
        body = r.json()
        assert body.get("status") == "success", body
        data: list[dict[str, Any]] = body["data"]
        return data

    def wait_for(self, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            res = self.query(promql)
            if res or time.monotonic() > deadline:
                return res
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_prometheus(
    tmp: Path, targets: dict[str, str | list[str]], rule_files: list[str] | None = None
) -> PrometheusProcess:
    """Scrape each job -> 'host:port' (or a list of them) every second, exemplar storage on."""
    port = free_port()
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [t] if isinstance(t, str) else t}]}
            for job, t in targets.items()
        ],
    }
    if rule_files:
        cfg["rule_files"] = rule_files
    cfg_path = tmp / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log_path = tmp / "prometheus.log"
    cmd = [
        prometheus_binary(),
        f"--config.file={cfg_path}",
        f"--storage.tsdb.path={tmp / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    p = PrometheusProcess(proc, port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{p.url}/-/ready", timeout=1).status_code == 200:
                return p
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    p.stop()
    raise RuntimeError(f"prometheus not ready:\n{log_path.read_text()}")
