"""The running sidecar: a Service plus its receivers and /metrics endpoint."""

from __future__ import annotations

from pathlib import Path

import structlog

from .config import Config
from .exporters.prometheus import AggregationCollector, MetricsServer
from .receivers.decode import Limits
from .receivers.http_conn import Timeouts
from .receivers.otlp_grpc import OtlpGrpcReceiver
from .receivers.otlp_http import OtlpHttpReceiver
from .service import Service

log = structlog.get_logger("pipeline")


class Sidecar:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.service = Service(config, limit_memory=True)
        rc = config.receivers
        limits = Limits(rc.max_request_bytes, rc.max_decompressed_bytes)
        tls_files = (rc.tls_cert_file, rc.tls_key_file) if rc.tls_cert_file else None
        self.grpc: OtlpGrpcReceiver | None = None
        self.http: OtlpHttpReceiver | None = None
        self.metrics: MetricsServer | None = None
        if rc.grpc_endpoint:
            tls = None
            if tls_files is not None and tls_files[1]:
                tls = (Path(tls_files[0]).read_bytes(), Path(tls_files[1]).read_bytes())
            self.grpc = OtlpGrpcReceiver(
                self.service,
                rc.grpc_endpoint,
                rc.max_request_bytes,
                rc.auth_token,
                tls,
                transport=rc.grpc_transport,
                max_inflight_bytes=rc.grpc_max_inflight_bytes,
                max_decompressed_bytes=rc.max_decompressed_bytes,
                max_streams_per_connection=rc.grpc_max_streams_per_connection,
                max_connections=rc.grpc_max_connections,
                request_timeout_s=rc.grpc_request_timeout_s,
                idle_timeout_s=rc.grpc_idle_timeout_s,
            )
        if rc.http_endpoint:
            http_tls = (tls_files[0], tls_files[1]) if tls_files and tls_files[1] else None
            self.http = OtlpHttpReceiver(
                self.service,
                rc.http_endpoint,
                limits,
                rc.auth_token,
                http_tls,
                rc.http_max_connections,
                rc.http_max_inflight_bytes,
                Timeouts(
                    header_s=rc.http_read_header_timeout_s,
                    body_s=rc.http_read_timeout_s,
                    idle_s=rc.http_idle_timeout_s,
                    min_rate=rc.http_min_body_rate,
                ),
            )
        if config.metrics.endpoint:
            mc = config.metrics
            tel = self.service.telemetry

            def refused() -> None:
                tel.inc(tel.refused_connections, ("metrics",))

            self.metrics = MetricsServer(
                AggregationCollector(self.service.agg, self.service.telemetry),
                mc.endpoint,
                mc.auth_token,
                (mc.tls_cert_file, mc.tls_key_file)
                if mc.tls_cert_file and mc.tls_key_file
                else None,
                mc.max_connections,
                refused,
            )

    def addresses(self) -> dict[str, str]:
        def host(ep: str) -> str:
            return ep.rpartition(":")[0]

        rc = self.config.receivers
        out = {}
        if self.grpc:
            out["otlp_grpc"] = f"{host(rc.grpc_endpoint)}:{self.grpc.port}"
        if self.http:
            out["otlp_http"] = f"{self.http.scheme}://{host(rc.http_endpoint)}:{self.http.port}"
        if self.metrics:
            out["metrics"] = (
                f"{self.metrics.scheme}://{host(self.config.metrics.endpoint)}:"
                f"{self.metrics.port}/metrics"
            )
        return out

    def start(self) -> None:
        self.service.start()
        for part in (self.metrics, self.grpc, self.http):
            if part is not None:
                part.start()
        log.info(
            "llm-pipeline started",
            **self.addresses(),
            **{f"{s}_to": d for s, d in self.service.destinations().items()},
            processors=",".join(self.config.processors),
            **({"grpc_transport": self.grpc.transport} if self.grpc else {}),
            **self._push_destination(),
        )

    def _push_destination(self) -> dict[str, str]:
        """Where `metrics.push` sends the derived metrics, for the start-up line."""
        push = self.config.metrics.push
        if not push.endpoint:
            return {}
        return {
            "metrics_pushed_to": f"{push.protocol}:{push.endpoint}",
            "metrics_push_interval_s": f"{push.interval_s:g}",
        }

    def shutdown(self) -> dict[str, int]:
        """Stop receiving, flush what is queued (bounded by queue.shutdown_timeout_s)."""
        if self.grpc is not None:
            self.grpc.shutdown(grace_s=2.0)
        if self.http is not None:
            self.http.shutdown()
        left = self.service.shutdown()
        if self.metrics is not None:
            self.metrics.shutdown()
        log.info("llm-pipeline stopped", undelivered=sum(left.values()), **left)
        return left
