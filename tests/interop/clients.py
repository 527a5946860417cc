"""The interop clients: where scripts/setup-interop.sh installed each SDK, and how to run it.

A client is missing when the set-up script has not installed it (or its toolchain is absent):
its tests skip, except under CI (`CI` set) where they fail, as nothing may download at test
time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "scenario.json"
NODE_DIR = HERE / "node"
GO_DIR = HERE / "go"
CACHE = Path(os.environ.get("LLM_PIPELINE_CACHE") or Path.home() / ".cache" / "llm-otel-pipeline")


def _hash(*files: Path) -> str:
    """What setup-interop.sh's `hash_of` computes: sha256 of the files' concatenated bytes."""
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]


def node_modules() -> Path:
    h = _hash(NODE_DIR / "package.json", NODE_DIR / "package-lock.json")
    return CACHE / "interop" / f"node-{h}" / "node_modules"


def go_binary() -> Path:
    h = _hash(GO_DIR / "go.mod", GO_DIR / "go.sum", GO_DIR / "main.go")
    return CACHE / "interop" / f"go-{h}" / "interop-go"


def require(what: str, ok: bool) -> None:
    """Skip (fail under CI) when `what` is not installed."""
    if ok:
        return
    msg = f"{what} is not installed: run scripts/setup-interop.sh"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@dataclass(frozen=True)
class Client:
    """One SDK + exporter set-up; `transport` is the sidecar receiver it talks to."""

    name: str
    sdk: str  # node | go | python
    mode: str  # the client's own mode argument / OTEL_EXPORTER_OTLP_PROTOCOL
    transport: str  # grpc | http
    chunked: bool  # sends its HTTP bodies with Transfer-Encoding: chunked

    @property
    def service(self) -> str:
        return f"interop-{self.name}"

    def command(self, base_s: int, grpc: str, http_url: str) -> tuple[list[str], dict[str, str]]:
        """argv and environment that send the scenario to a sidecar at grpc / http_url."""
        env = dict(os.environ)
        if self.sdk == "node":
            modules = node_modules()
            require("the Node.js SDK", (modules / ".package-lock.json").exists())
            node = shutil.which("node")
            require("node", node is not None)
            env["NODE_PATH"] = str(modules)
            endpoint = f"http://{grpc}" if self.transport == "grpc" else http_url
            argv = [str(node), str(NODE_DIR / "client.cjs"), str(SCENARIO), str(base_s)]
            return [*argv, self.mode, endpoint, self.service], env
        if self.sdk == "go":
            binary = go_binary()
            require("the Go client", binary.exists())
            endpoint = grpc if self.transport == "grpc" else http_url.removeprefix("http://")
            argv = [str(binary), "-scenario", str(SCENARIO), "-base", str(base_s)]
            return [*argv, "-endpoint", endpoint, "-service", self.service, "-mode", self.mode], env
        instrument = Path(sys.executable).with_name("opentelemetry-instrument")
        if not instrument.exists():
            found = shutil.which("opentelemetry-instrument")
            instrument = Path(found) if found else instrument
        require("opentelemetry-instrument (opentelemetry-distro)", _has_distro())
        env.update(
            OTEL_SERVICE_NAME=self.service,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{grpc}" if self.transport == "grpc" else http_url,
            OTEL_EXPORTER_OTLP_PROTOCOL=self.mode,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="none",
            OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="true",
            # the SDK's handler above carries the log; opentelemetry-instrumentation-logging
            # (installed beside it by traceloop-sdk) would only log that it steps aside, and
            # that warning would travel as a second record
            OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="logging",
        )
        argv = [str(instrument), sys.executable, str(HERE / "python_client.py")]
        return [*argv, str(SCENARIO), str(base_s)], env


def _has_distro() -> bool:
    out = subprocess.run(
        [sys.executable, "-c", "import opentelemetry.distro"], capture_output=True, check=False
    )
    return out.returncode == 0


CLIENTS = (
    Client("node-http-json", "node", "json", "http", chunked=True),
    Client("node-http-proto", "node", "proto", "http", chunked=True),
    Client("node-grpc", "node", "grpc", "grpc", chunked=False),
    Client("go-http", "go", "http", "http", chunked=False),
    Client("go-http-gzip", "go", "http-gzip", "http", chunked=True),
    Client("go-grpc", "go", "grpc", "grpc", chunked=False),
    Client("python-grpc", "python", "grpc", "grpc", chunked=False),
    Client("python-http-protobuf", "python", "http/protobuf", "http", chunked=False),
)
