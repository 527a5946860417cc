"""The systems under test: the sidecar variants and the Collector, each started pinned to
the SUT core and ready to take OTLP/gRPC."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    COLLECTOR_CONFIG,
    DIMENSIONS,
    FILE_SINK,
    OUT_DIR,
    REPO,
    SIDECAR_PROCESSORS,
    WITH_DIMENSIONS,
    WITH_GRPCIO,
    WITH_GZIP,
    WITHOUT_NATIVE,
)
from .load import Sink
from .procfs import free_port, pin


@dataclass
class Sut:
    name: str
    proc: subprocess.Popen[bytes]
    endpoint: str  # OTLP/gRPC receiver
    log_path: Path
    queue_size: Callable[[], float]  # items (sidecar) or batches (Collector) waiting to export
    queue_unit: str
    queue_bound: str
    # spans delivered so far, when no counting sink sees them (the file sink): its own count
    delivered: Callable[[], float] | None = None
    scratch: Path | None = None  # a directory removed when the system stops

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as r:
        return str(r.read().decode())


def _gauge(text: str, name: str, must_contain: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in "{ ") and must_contain in line:
            total += float(line.rsplit(None, 1)[-1])
    return total


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready:\n{log_path.read_text()[-3000:]}")


def start_sidecar(
    name: str, sink_endpoint: str, core: int | None, queue_items: int | None, tag: str
) -> Sut:
    import yaml

    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    forward = {
        "protocol": "grpc",
        "endpoint": sink_endpoint,
        "compression": "gzip" if name in WITH_GZIP else "none",
        "grpc_transport": "grpcio" if name in WITH_GRPCIO else "auto",
    }
    cfg: dict[str, Any] = {
        "exporters": {"traces": forward, "logs": forward, "metrics": forward},
        "file": {"directory": str(OUT_DIR / "pipeline-data")},
        "log_level": "warning",
    }
    scratch = None
    if name in FILE_SINK:  # the embedded default: no destination, OTLP/JSON lines in files
        scratch = Path(tempfile.mkdtemp(prefix="bench-file-"))
        del cfg["exporters"]
        # bounded on disk: a 40k spans/s step writes ~45 MB/s
        cfg["file"] = {"directory": str(scratch), "max_bytes": 256 << 20, "max_files": 1}
    processors = SIDECAR_PROCESSORS[name]
    if processors is not None:
        cfg["processors"] = processors
    if queue_items is not None:
        cfg["queue"] = {"max_items": queue_items}
    if name in WITH_GRPCIO:
        cfg["receivers"] = {"grpc_transport": "grpcio"}
    if name in WITH_DIMENSIONS:
        cfg["dimensions"] = DIMENSIONS
        cfg["metrics"] = {"max_series": 50_000}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    cfg_path = OUT_DIR / f"{name}-{tag}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log_path = OUT_DIR / f"{name}-{tag}.log"
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        "--config",
        str(cfg_path),
        "--otlp-grpc",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http",
        f"127.0.0.1:{http_port}",
        "--metrics",
        f"127.0.0.1:{metrics_port}",
    ]
    # the checkout first; what PYTHONPATH held after it (a worktree's own native build)
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    if name in WITHOUT_NATIVE:
        env["LLM_PIPELINE_NATIVE"] = "0"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=OUT_DIR,
            env=env,
            preexec_fn=(lambda: pin(core)),
        )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    _wait_ready(f"http://127.0.0.1:{metrics_port}/health", proc, log_path, name)

    def queue_size() -> float:
        return _gauge(_scrape(metrics_url), "llm_pipeline_queue_size", 'signal="traces"')

    def delivered() -> float:
        return _gauge(_scrape(metrics_url), "llm_pipeline_exported_items_total", 'signal="traces"')

    bound = f"queue.max_items={queue_items or 'default (200000)'} spans"
    return Sut(
        name,
        proc,
        f"127.0.0.1:{grpc_port}",
        log_path,
        queue_size,
        "spans",
        bound,
        delivered if scratch is not None else None,
        scratch,
    )


def collector_binary(explicit: str | None) -> str:
    if explicit:
        return explicit
    env = os.environ.get("OTELCOL_BIN")
    if env:
        return env
    r = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-collector.sh")],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"scripts/build-collector.sh failed:\n{r.stderr[-3000:]}")
    return r.stdout.strip().splitlines()[-1]


def start_collector(
    binary: str,
    sink_endpoint: str,
    core: int | None,
    queue_batches: int | None,
    tag: str,
    batch_size: int = 8192,
) -> Sut:
    grpc_port, metrics_port, health_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "BENCH_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
        "BENCH_SINK_ENDPOINT": sink_endpoint,
        "BENCH_COLLECTOR_METRICS_PORT": str(metrics_port),
        "BENCH_HEALTH_ENDPOINT": f"127.0.0.1:{health_port}",
        "BENCH_COLLECTOR_BATCH_SIZE": str(batch_size),
    }
    if queue_batches is not None:
        env["BENCH_COLLECTOR_QUEUE_SIZE"] = str(queue_batches)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    log_path = OUT_DIR / f"collector-{tag}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [binary, "--config", str(COLLECTOR_CONFIG)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=OUT_DIR,
            env=env,
            preexec_fn=(lambda: pin(core)),
        )
    _wait_ready(f"http://127.0.0.1:{health_port}/", proc, log_path, "collector")
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def queue_size() -> float:
        return _gauge(_scrape(metrics_url), "otelcol_exporter_queue_size", "otlp_grpc/sink")

    bound = f"sending_queue.queue_size={queue_batches or 1000} requests"
    return Sut("collector", proc, f"127.0.0.1:{grpc_port}", log_path, queue_size, "batches", bound)


def start_system(
    name: str, sink: Sink, args: argparse.Namespace, tag: str, queue: int | None
) -> Sut:
    if name == "collector":
        return start_collector(
            args.collector_bin, sink.endpoint, args.sut_core, queue, tag, args.collector_batch_size
        )
    return start_sidecar(name, sink.endpoint, args.sut_core, queue, tag)
