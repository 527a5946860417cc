"""Prometheus exposition, built at scrape time from the aggregation's state.

Serves the text format, or OpenMetrics with exemplars when the scraper asks for it (Prometheus
does when exemplar storage is on).

At the cardinality cap an exposition is tens of MB and takes seconds to render, so scrapes
share renders (`Exposition`): one render at a time per process, a render's result is served
again for a moment (per format), at most a few scrapes wait for one (more get 503), and the
metrics port takes a bounded number of connections.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.samples import Exemplar as PromExemplar
from prometheus_client.utils import floatToGoString

from ..aggregation import Aggregation, Exemplar
from ..telemetry import Telemetry
from .snapshot import take


def _ex(e: Exemplar | None) -> PromExemplar | None:
    if e is None:
        return None
    trace_id, span_id, value, timestamp = e
    return PromExemplar({"trace_id": trace_id.hex(), "span_id": span_id.hex()}, value, timestamp)


def _fmt_bound(b: float) -> str:
    # Canonical float form ("1.0", "67108864.0"), as prometheus_client writes it and as
    # Prometheus 3 normalizes `le` on ingestion, so queries read the same on v2 and v3.
    return str(floatToGoString(b))  # type: ignore[no-untyped-call]


class AggregationCollector:
    """A prometheus_client collector over an `Aggregation` (no registry state of its own)."""

    def __init__(self, agg: Aggregation, telemetry: Telemetry | None = None) -> None:
        self.agg = agg
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        snap = take(self.agg)
        for fam in snap.families:
            if fam.bounds is not None:
                h = HistogramMetricFamily(fam.name, fam.documentation, labels=fam.label_names)
                for row in fam.histograms:
                    buckets: list[Any] = []
                    acc = 0
                    for i, bound in enumerate((*fam.bounds, float("inf"))):
                        acc += row.counts[i]
                        le = "+Inf" if bound == float("inf") else _fmt_bound(bound)
                        ex = _ex(row.exemplars[i])
                        buckets.append((le, acc, ex) if ex is not None else (le, acc))
                    h.add_metric(list(row.key), buckets, row.total)
                yield h
            else:
                c = CounterMetricFamily(fam.name, fam.documentation, labels=fam.label_names)
                for crow in fam.counters:
                    c.add_metric(list(crow.key), crow.value, exemplar=_ex(crow.exemplar))
                yield c
        if self.telemetry is not None:
            yield from self.telemetry.collect()


def render(collector: AggregationCollector, accept: str) -> tuple[bytes, str]:
    """The exposition body and content type for an `Accept` header."""
    encoder, content_type = choose_encoder(accept)
    return encoder(_Registry(collector)), content_type


class Exposition:
    """Renders shared between scrapes: one at a time; the result is reused for up to `ttl_s`
    (at most 10x the time it took, so a cheap exposition stays fresh); `max_waiting` scrapes
    may wait for a render, more are refused (None: answer 503)."""

    def __init__(
        self, collector: AggregationCollector, ttl_s: float = 1.0, max_waiting: int = 4
    ) -> None:
        self._collector = collector
        self.ttl_s = ttl_s
        self._render = threading.Lock()
        self._waiting = threading.BoundedSemaphore(max_waiting)
        self._cache: dict[str, tuple[float, bytes]] = {}  # content type -> (fresh until, body)
        self.renders = 0

    def _cached(self, content_type: str) -> bytes | None:
        hit = self._cache.get(content_type)
        return hit[1] if hit is not None and time.monotonic() < hit[0] else None

    def get(self, accept: str) -> tuple[bytes, str] | None:
        encoder, content_type = choose_encoder(accept)
        body = self._cached(content_type)
        if body is not None:
            return body, content_type
        if not self._waiting.acquire(blocking=False):
            return None
        try:
            with self._render:
                body = self._cached(content_type)  # rendered while this scrape waited
                if body is None:
                    t0 = time.monotonic()
                    body = encoder(_Registry(self._collector))
                    now = time.monotonic()
                    self.renders += 1
                    self._cache[content_type] = (now + min(self.ttl_s, 10 * (now - t0)), body)
                return body, content_type
        finally:
            self._waiting.release()


class _Registry:
    """The one method prometheus_client's encoders call on a registry."""

    def __init__(self, collector: AggregationCollector) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        return self._collector.collect()


class MetricsServer:
    """GET /metrics (text or OpenMetrics by Accept) and GET /health; HTTPS with `tls`.

    `tls` is (certificate file, key file), PEM. The TLS handshake runs in the connection's
    own thread (not in accept), so a client that never finishes it blocks nobody else.
    """

    def __init__(
        self,
        collector: AggregationCollector,
        endpoint: str,
        auth_token: str | None = None,
        tls: tuple[str, str] | None = None,
        max_connections: int = 16,
        on_refuse: Any = None,
    ) -> None:
        from http.server import BaseHTTPRequestHandler

        from .._http import HttpServer
        from ..receivers._common import bearer_ok

        exposition = self.exposition = Exposition(collector)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30  # a stalled client (or TLS handshake) gives its thread back

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/health", "/healthz", "/ready"):
                    body, ctype, code = b"ok\n", "text/plain", 200
                elif path == "/metrics":
                    if not bearer_ok(auth_token, self.headers.get("Authorization")):
                        body, ctype, code = b"unauthorized\n", "text/plain", 401
                    elif (got := exposition.get(self.headers.get("Accept", ""))) is None:
                        body, ctype, code = b"busy: retry later\n", "text/plain", 503
                    else:
                        (body, ctype), code = got, 200
                else:
                    body, ctype, code = b"not found: try /metrics\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if code == 503:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(body)

        self._http = HttpServer(endpoint, Handler, "metrics-http", tls, max_connections, on_refuse)
        self.scheme = self._http.scheme
        self.port = self._http.port

    def start(self) -> None:
        self._http.start()

    def shutdown(self) -> None:
        self._http.shutdown()
