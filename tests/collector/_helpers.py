"""Reusable pieces for tests that run the real otelcol-llm Collector.

- ``build_collector()``: build (or find cached) otelcol-llm via scripts/build-collector.sh.
- ``free_port()``: a free TCP port on 127.0.0.1.
- ``collector_env(tmp_path)``: env for collector/config.yaml with every listener on a free loopback
  port and the file_storage directory under ``tmp_path``.
- ``Collector``: start/stop the binary with a config and env, wait for health, read its own metrics.
- ``OtlpGrpcSink``: raw grpcio OTLP server (traces + logs + metrics) recording what it receives;
  stands in for the sidecar or Tempo. Can be stopped and started again on the same port.
- ``OtlpHttpSink``: OTLP/HTTP (protobuf, gzip) server recording requests; stands in for Loki's and
  Prometheus's OTLP endpoints.
- ``spans_of`` / ``log_records_of`` / ``attrs``: flatten received requests for assertions.
"""

from __future__ import annotations

import gzip
import http.server
import os
import re
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.helpers.process import ManagedProcess, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-collector.sh"
CONFIG = REPO_ROOT / "collector" / "config.yaml"
LOADBALANCING_CONFIG = REPO_ROOT / "collector" / "loadbalancing.yaml"
REMOTE_WRITE_CONFIG = REPO_ROOT / "collector" / "remote-write.yaml"
BUILDER_CONFIG = REPO_ROOT / "collector" / "builder-config.yaml"
SKIP_ENV = "LLM_PIPELINE_SKIP_COLLECTOR"

# --------------------------------------------------------------------------------------- build

_build_result: Path | Exception | None = None
_build_lock = threading.Lock()


class CollectorBuildError(RuntimeError):
    pass


def build_collector(timeout: float = 1800) -> Path:
    """Run scripts/build-collector.sh once per process; return the binary path (or re-raise)."""
    global _build_result
    with _build_lock:
        if _build_result is None:
            try:
                proc = subprocess.run(
                    ["bash", str(BUILD_SCRIPT)],
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
                lines = proc.stdout.strip().splitlines()
                if proc.returncode != 0 or not lines:
                    raise CollectorBuildError(
                        f"{BUILD_SCRIPT} exited {proc.returncode}\n--- stderr (tail) ---\n"
                        + "\n".join(proc.stderr.splitlines()[-40:])
                    )
                path = Path(lines[-1])
                if not os.access(path, os.X_OK):
                    raise CollectorBuildError(f"build script printed {path}, not an executable")
                _build_result = path
            except Exception as exc:  # remembered so every test reports the same error
                _build_result = exc
        if isinstance(_build_result, Exception):
            raise _build_result
        return _build_result


# ---------------------------------------------------------------------------------- ports, env


@dataclass
class CollectorPorts:
    otlp_grpc: int = field(default_factory=free_port)
    otlp_http: int = field(default_factory=free_port)
    enriched_grpc: int = field(default_factory=free_port)
    enriched_http: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)


def collector_env(
    storage_dir: Path,
    ports: CollectorPorts,
    *,
    sidecar: str = "127.0.0.1:1",
    tempo: str = "127.0.0.1:1",
    loki: str = "http://127.0.0.1:1/otlp",
    prometheus: str = "http://127.0.0.1:1/api/v1/otlp",
    **extra: str,
) -> dict[str, str]:
    """Env for collector/config.yaml (and loadbalancing.yaml): loopback listeners, local sinks."""
    env = {
        "COLLECTOR_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports.otlp_grpc}",
        "COLLECTOR_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports.otlp_http}",
        "COLLECTOR_ENRICHED_GRPC_ENDPOINT": f"127.0.0.1:{ports.enriched_grpc}",
        "COLLECTOR_ENRICHED_HTTP_ENDPOINT": f"127.0.0.1:{ports.enriched_http}",
        "COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{ports.health}",
        "COLLECTOR_METRICS_HOST": "127.0.0.1",
        "COLLECTOR_METRICS_PORT": str(ports.metrics),
        "COLLECTOR_STORAGE_DIR": str(storage_dir),
        "COLLECTOR_BATCH_TIMEOUT": "200ms",
        "SIDECAR_RETRY_MAX_INTERVAL": "1s",
        "SIDECAR_ENDPOINT": sidecar,
        "TEMPO_ENDPOINT": tempo,
        "LOKI_ENDPOINT": loki,
        "PROMETHEUS_OTLP_ENDPOINT": prometheus,
    }
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------- collector


class Collector(ManagedProcess):
    """The otelcol-llm binary running one config; logs go to ``log_path``."""

    name = "collector"

    def __init__(
        self, binary: Path, configs: Iterable[Path], env: dict[str, str], log_path: Path
    ) -> None:
        super().__init__(log_path, env)
        self.binary = binary
        self.configs = list(configs)

    @property
    def health_url(self) -> str:
        return f"http://{self.env['COLLECTOR_HEALTH_ENDPOINT']}/"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.env['COLLECTOR_METRICS_HOST']}:{self.env['COLLECTOR_METRICS_PORT']}/metrics"

    def args(self) -> list[str]:
        args = [str(self.binary)]
        for c in self.configs:
            args += ["--config", str(c)]
        return args

    def ready(self) -> bool:
        return self.healthy()

    def start(self, timeout: float = 20) -> Collector:
        return super().start(timeout)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=2) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float | None:
        """Sum of the samples of ``name`` whose labels include ``labels`` (None if absent)."""
        total, seen = 0.0, False
        for line in self.metrics_text().splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)", line)
            if not m or m.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(4))
                seen = True
        return total if seen else None


# ------------------------------------------------------------------------------------ OTLP sinks


def attrs(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP attributes -> plain dict (scalars only, which is all these tests use)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        v: AnyValue = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = getattr(v, kind) if kind else None
    return out


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


@dataclass
class ReceivedLog:
    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    trace_id: str


def spans_of(requests: Iterable[trace_service_pb2.ExportTraceServiceRequest]) -> list[ReceivedSpan]:
    out = []
    for req in requests:
        for rs in req.resource_spans:
            res = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(ReceivedSpan(s.name, s.trace_id.hex(), attrs(s.attributes), res))
    return out


def log_records_of(
    requests: Iterable[logs_service_pb2.ExportLogsServiceRequest],
) -> list[ReceivedLog]:
    out = []
    for req in requests:
        for rl in req.resource_logs:
            res = attrs(rl.resource.attributes)
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    kind = r.body.WhichOneof("value")
                    body = getattr(r.body, kind) if kind else None
                    out.append(ReceivedLog(body, attrs(r.attributes), res, r.trace_id.hex()))
    return out


def metric_names_of(
    requests: Iterable[metrics_service_pb2.ExportMetricsServiceRequest],
) -> set[str]:
    return {
        m.name
        for req in requests
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


class _Recorder:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []

    def add(self, kind: str, req: Any) -> None:
        with self.cond:
            getattr(self, kind).append(req)
            self.cond.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        with self.cond:
            return spans_of(list(self.traces))

    def log_records(self) -> list[ReceivedLog]:
        with self.cond:
            return log_records_of(list(self.logs))

    def metric_names(self) -> set[str]:
        with self.cond:
            return metric_names_of(list(self.metrics))

    def wait_spans(self, pred: Callable[[list[ReceivedSpan]], bool], timeout: float) -> bool:
        return bool(wait_until(lambda: pred(self.spans()), timeout))


class OtlpGrpcSink(_Recorder):
    """Raw OTLP/gRPC server (TraceService, LogsService, MetricsService) on 127.0.0.1:port."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self._server: grpc.Server | None = None
        sink = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # type: ignore[no-untyped-def]
                sink.add("traces", request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):  # type: ignore[no-untyped-def]
                sink.add("logs", request)
                return logs_service_pb2.ExportLogsServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # type: ignore[no-untyped-def]
                sink.add("metrics", request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self._servicers = (Traces(), Logs(), Metrics())

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> OtlpGrpcSink:
        assert self._server is None, "already running"
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        traces, logs, metrics = self._servicers
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(traces, server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(logs, server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics, server)
        # The port may linger briefly after a stop(); retry the bind for a few seconds.
        bound = wait_until(lambda: _try_bind(server, self.endpoint), timeout=5)
        if not bound:
            raise RuntimeError(f"could not bind {self.endpoint}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def __enter__(self) -> OtlpGrpcSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _try_bind(server: grpc.Server, endpoint: str) -> bool:
    try:
        return bool(server.add_insecure_port(endpoint) != 0)
    except RuntimeError:
        return False


class OtlpHttpSink(_Recorder):
    """OTLP/HTTP protobuf server; ``base_path`` is what the exporter's endpoint ends with
    (e.g. "/otlp" for Loki, "/api/v1/otlp" for Prometheus). Records the request paths too."""

    _TYPES: dict[str, tuple[str, Any, Any]] = {
        "/v1/traces": (
            "traces",
            trace_service_pb2.ExportTraceServiceRequest,
            trace_service_pb2.ExportTraceServiceResponse,
        ),
        "/v1/logs": (
            "logs",
            logs_service_pb2.ExportLogsServiceRequest,
            logs_service_pb2.ExportLogsServiceResponse,
        ),
        "/v1/metrics": (
            "metrics",
            metrics_service_pb2.ExportMetricsServiceRequest,
            metrics_service_pb2.ExportMetricsServiceResponse,
        ),
    }

    def __init__(self, base_path: str = "") -> None:
        super().__init__()
        self.base_path = base_path.rstrip("/")
        self.paths: list[str] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                sink.paths.append(self.path)
                suffix = (
                    self.path[len(sink.base_path) :]
                    if self.path.startswith(sink.base_path)
                    else None
                )
                if suffix not in sink._TYPES:
                    self.send_response(404)
                    self.end_headers()
                    return
                kind, req_t, resp_t = sink._TYPES[suffix]
                sink.add(kind, req_t.FromString(body))
                payload = resp_t().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """Value for the Collector's otlp_http exporter ``endpoint``."""
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    def start(self) -> OtlpHttpSink:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpHttpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Sinks:
    """Everything config.yaml exports to, on loopback."""

    sidecar: OtlpGrpcSink
    tempo: OtlpGrpcSink
    loki: OtlpHttpSink
    prometheus: OtlpHttpSink

    def env(self) -> dict[str, str]:
        return {
            "sidecar": self.sidecar.endpoint,
            "tempo": self.tempo.endpoint,
            "loki": self.loki.endpoint,
            "prometheus": self.prometheus.endpoint,
        }


# ------------------------------------------------------------------ sending with the real SDK


def send_spans(
    grpc_endpoint: str,
    spans: Iterable[tuple[str, dict[str, Any]]],
    service: str = "collector-test",
) -> list[str]:
    """Export (name, attributes) spans, one trace each, with the SDK's OTLP/gRPC exporter.
    Returns the trace ids (hex). Raises if the exporter did not get a success answer."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = OTLPSpanExporter(endpoint=f"http://{grpc_endpoint}", insecure=True, timeout=10)
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tracer = tp.get_tracer("tests.collector")
    finished = []
    trace_ids = []
    for name, attributes in spans:
        with tracer.start_as_current_span(name, attributes=attributes) as span:
            trace_ids.append(format(span.get_span_context().trace_id, "032x"))
        finished.append(span)
    result = exporter.export(finished)  # type: ignore[arg-type]
    exporter.shutdown()
    tp.shutdown()
    if result != SpanExportResult.SUCCESS:
        raise RuntimeError(f"span export to {grpc_endpoint} failed: {result}")
    return trace_ids


def send_log(
    http_logs_url: str, message: str, attributes: dict[str, Any], service: str = "collector-test"
) -> None:
    """Emit one log record through the SDK's LoggerProvider and OTLP/HTTP log exporter
    (``http_logs_url`` is the full URL, e.g. http://127.0.0.1:4318/v1/logs)."""
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    lp = LoggerProvider(resource=Resource.create({"service.name": service}))
    lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=http_logs_url)))
    lp.get_logger("tests.collector").emit(
        body=message,
        attributes=attributes,
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
    )
    lp.shutdown()


def send_counter(
    grpc_endpoint: str,
    name: str,
    value: int,
    attributes: dict[str, Any],
    service: str = "collector-test",
) -> None:
    """Export one counter data point with the SDK's OTLP/gRPC metric exporter."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"http://{grpc_endpoint}", insecure=True, timeout=10),
        export_interval_millis=3_600_000,
    )
    mp = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader])
    mp.get_meter("tests.collector").create_counter(name).add(value, attributes)
    if not mp.force_flush(10_000):
        raise RuntimeError("metric export did not finish")
    mp.shutdown()
