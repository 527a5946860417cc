"""Sends scenario.json's spans and log record through the OpenTelemetry Python API only.

Run under `opentelemetry-instrument`: the SDK, the exporters, the endpoint and the protocol come
from OTEL_* environment variables alone (tests/interop/test_interop_clients.py sets them), as a user of
the zero-code set-up would have it. The log record goes through the standard `logging` module
(OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED), inside the span it is correlated with.

    opentelemetry-instrument python python_client.py SCENARIO BASE_UNIX_SECONDS
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from opentelemetry import _logs, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

KINDS = {"client": SpanKind.CLIENT, "internal": SpanKind.INTERNAL}


def attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in items:
        for t in ("string", "int", "double", "bool"):
            if t in a:
                out[a["key"]] = a[t]
    return out


def main(path: str, base_s: int) -> None:
    with open(path) as f:
        scenario = json.load(f)

    def at(ms: int) -> int:
        return base_s * 1_000_000_000 + ms * 1_000_000

    # The SDK's own diagnostics (a transient export error, a retry) go to stderr, not through
    # the root logger's OTLP handler: they would arrive as extra log records beside the
    # scenario's one, which is all this client is meant to send.
    sdk_log = logging.getLogger("opentelemetry")
    sdk_log.propagate = False
    sdk_log.addHandler(logging.StreamHandler(sys.stderr))

    tracer = trace.get_tracer("interop-python")
    r = scenario["root"]
    root = tracer.start_span(
        r["name"],
        kind=KINDS[r["kind"]],
        start_time=at(r["start_ms"]),
        attributes=attributes(r["attributes"]),
    )
    root_ctx = trace.set_span_in_context(root)
    spans = {}
    for c in scenario["calls"]:
        span = tracer.start_span(
            c["name"],
            context=root_ctx,
            kind=KINDS[c["kind"]],
            start_time=at(c["start_ms"]),
            attributes=attributes(c["attributes"]),
        )
        for ev in c.get("events", []):
            span.add_event(ev["name"], attributes(ev["attributes"]), timestamp=at(ev["at_ms"]))
        if c.get("error"):
            span.set_status(Status(StatusCode.ERROR, c["error"]))
        span.end(end_time=at(c["end_ms"]))
        spans[c["id"]] = span

    lg = scenario["log"]
    with trace.use_span(spans[lg["span"]], end_on_exit=False):
        logging.getLogger("interop-python").warning(lg["body"], extra=attributes(lg["attributes"]))
    root.end(end_time=at(r["end_ms"]))

    # the SDK set up by opentelemetry-instrument also flushes at exit; flushing here makes a
    # failed export show in this process's output while the test still waits for it
    provider: Any = trace.get_tracer_provider()
    log_provider: Any = _logs.get_logger_provider()
    ok = provider.force_flush() and log_provider.force_flush()
    print("interop-python: sent" if ok else "interop-python: flush timed out", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
