"""Each real OpenTelemetry SDK (Node.js, Go, Python) -> the real sidecar -> an OTLP sink.

Every client sends scenario.json: a root span with five LLM calls (plain, streamed with chunk
events, streamed with a TTFT attribute, a rate-limited failure and its retry) and one log record
inside the retry, whose body holds an email address and an API key. The figures asserted on
/metrics and on the forwarded spans and log come from expected.py (genai-prices' own
calculation and the scenario's numbers), not from the sidecar.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline.model import any_value
from tests.helpers.metrics import value
from tests.helpers.otlp_sink import OtlpSink
from tests.helpers.sidecar import SidecarProcess, start_sidecar
from tests.interop.capture import Capture, send
from tests.interop.clients import CLIENTS, Client
from tests.interop.expected import Expected, expected, load

pytestmark = pytest.mark.e2e

# Cost: the sidecar prices in floats from per-token rates, genai-prices in Decimal; they agree
# to ~1e-15 relative (pipeline/processors/cost.py), far below a cent.
COST_REL = 1e-9


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    s = OtlpSink().start()
    yield s
    s.stop()


@pytest.fixture
def sidecar(tmp_path: Path, sink: OtlpSink) -> Iterator[SidecarProcess]:
    sc = start_sidecar(
        tmp_path,
        {
            "exporters": {
                "traces": {"protocol": "grpc", "endpoint": f"127.0.0.1:{sink.grpc_port}"},
                "logs": {"protocol": "grpc", "endpoint": f"127.0.0.1:{sink.grpc_port}"},
            },
            # the retry is counted when its trace's window closes: 1 s, not 10
            "fallback": {"window_s": 1.0},
        },
    )
    yield sc
    assert sc.stop() == 0, sc.logs()


def _attrs(item: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in item.attributes}


def _wait(what: str, pred: Any, sc: SidecarProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{sc.logs()[-4000:]}")
        time.sleep(0.1)


def _run(client: Client, sc: SidecarProcess, base_s: int) -> str:
    argv, env = client.command(base_s, sc.grpc_endpoint, sc.http_url)
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = out.stdout + out.stderr
    assert out.returncode == 0, f"{client.name} exited {out.returncode}:\n{output[-4000:]}"
    return output


@pytest.mark.parametrize("client", CLIENTS, ids=[c.name for c in CLIENTS])
def test_client_delivers_exact_values(
    client: Client, sidecar: SidecarProcess, sink: OtlpSink
) -> None:
    sc = load()
    want: Expected = expected()
    base_s = int(time.time()) - 60
    base_ns = base_s * 1_000_000_000
    n_spans = 1 + len(sc["calls"])

    _run(client, sidecar, base_s)
    _wait("the forwarded spans and log", lambda: len(sink.spans()) >= n_spans, sidecar)
    _wait("the log record", lambda: len(sink.log_records()) >= 1, sidecar)
    retries = "gen_ai_client_retries_total"
    _wait(
        "the retry (its trace's window closing)",
        lambda: value(sidecar.scrape(), retries, service_name=client.service) >= 1,
        sidecar,
    )
    time.sleep(0.5)  # anything sent twice would arrive by now
    text = sidecar.scrape()
    svc = {"service_name": client.service}
    produced: dict[str, Any] = {"client": client.name}

    # Delivered whole, nothing refused, on the transport the client uses.
    transport = client.transport
    assert value(text, "llm_pipeline_received_items_total", signal="traces") == n_spans
    bodies = [any_value(r.body) for r in sink.log_records()]
    assert value(text, "llm_pipeline_received_items_total", signal="logs") == 1, bodies
    assert value(text, "llm_pipeline_received_items_total", transport=transport) == n_spans + 1
    assert value(text, "llm_pipeline_rejected_items_total") == 0
    assert len(sink.spans()) == n_spans and len(sink.log_records()) == 1

    # Tokens and cost per provider and request model.
    for (provider, model, kind), n in want.tokens.items():
        labels = {**svc, "gen_ai_provider_name": provider, "gen_ai_request_model": model}
        got = value(text, "gen_ai_client_tokens_total", **labels, gen_ai_token_type=kind)
        produced[f"tokens {model} {kind}"] = got
        assert got == n, (model, kind)
    for (provider, model), usd in want.cost.items():
        labels = {**svc, "gen_ai_provider_name": provider, "gen_ai_request_model": model}
        got = value(text, "gen_ai_client_cost_usd_total", **labels)
        produced[f"cost {model}"] = got
        assert got == pytest.approx(float(usd), rel=COST_REL), model

    # TTFT: one observation per streamed call, from the chunk event or the attribute.
    ttft = "gen_ai_client_operation_time_to_first_chunk_seconds"
    produced["ttft count"] = value(text, f"{ttft}_count", **svc)
    produced["ttft sum"] = value(text, f"{ttft}_sum", **svc)
    assert produced["ttft count"] == want.ttft_count
    assert produced["ttft sum"] == pytest.approx(float(want.ttft_sum), abs=1e-9)

    # Errors (by type, on the duration histogram) and retries; every call has a duration.
    dur = "gen_ai_client_operation_duration_seconds"
    assert value(text, f"{dur}_count", **svc) == len(want.calls)
    assert value(text, f"{dur}_sum", **svc) == pytest.approx(
        float(sum(c.duration_s for c in want.calls)), abs=1e-9
    )
    for error_type, n in want.errors.items():
        got = value(text, f"{dur}_count", **svc, error_type=error_type)
        produced[f"errors {error_type}"] = got
        assert got == n
    assert value(text, f"{dur}_count", **svc, error_type="") == len(want.calls) - sum(
        want.errors.values()
    )
    for (provider, model), n in want.retries.items():
        got = value(text, retries, **svc, gen_ai_provider_name=provider, gen_ai_request_model=model)
        produced[f"retries {model}"] = got
        assert got == n
    assert value(text, retries, **svc) == sum(want.retries.values())
    assert value(text, "gen_ai_client_fallbacks_total", **svc) == 0

    # The forwarded spans: one trace, each call enriched with its cost; the deprecated
    # provider name and the event-derived TTFT written under their current names.
    spans = sink.spans()
    assert len({s.trace_id for s in spans}) == 1
    by_offset = {(s.start_time_unix_nano - base_ns) // 1_000_000: s for s in spans}
    calls = {c["id"]: c for c in sc["calls"]}
    span_of = {}
    for call in want.calls:
        span = by_offset[calls[call.id]["start_ms"]]
        span_of[call.id] = span
        a = _attrs(span)
        assert a.get("gen_ai.provider.name") == call.provider, call.id
        assert a.get("gen_ai.usage.input_tokens") == call.input_tokens, call.id
        assert a.get("gen_ai.usage.output_tokens") == call.output_tokens, call.id
        if call.cost is None:
            assert "gen_ai.usage.cost" not in a, call.id
        else:
            assert a["gen_ai.usage.cost"] == pytest.approx(float(call.cost), rel=COST_REL)
            produced[f"span cost {call.id}"] = a["gen_ai.usage.cost"]
        if call.ttft_s is not None:
            got = a["gen_ai.response.time_to_first_chunk"]
            assert got == pytest.approx(float(call.ttft_s), abs=1e-9), call.id
            produced[f"span ttft {call.id}"] = got
        assert (span.status.code == 2) == bool(call.error_type), call.id

    # The log: stored with the trace and span id of the call it was written in, redacted.
    [record] = sink.log_records()
    target = span_of[sc["log"]["span"]]
    assert record.trace_id == target.trace_id and record.span_id == target.span_id
    assert record.severity_number == sc["log"]["severity_number"]
    body = sc["log"]["body"]
    email = next(w for w in body.split() if "@" in w)
    key = next(w for w in body.split() if w.startswith("sk-"))
    assert any_value(record.body) == body.replace(email, "[REDACTED:email]").replace(
        key, "[REDACTED:api_key]"
    )
    for kind in ("email", "api_key"):
        assert value(text, "llm_pipeline_redactions_total", type=kind) == 1, kind
    produced["log"] = f"trace {record.trace_id.hex()} body {any_value(record.body)!r}"
    print("\ninterop:", json.dumps(produced, default=str, sort_keys=True))


@pytest.mark.parametrize(
    "client", [c for c in CLIENTS if c.transport == "http"], ids=lambda c: str(c.name)
)
def test_http_client_framing_is_what_the_tests_claim(client: Client, capture: Capture) -> None:
    """The HTTP clients above cover chunked bodies, with and without gzip, and plain ones."""
    sent = send(capture, client.name)
    assert set(sent) == {"/v1/traces", "/v1/logs"}
    for path, (headers, _) in sent.items():
        h = {k.lower(): v.lower() for k, v in headers.items()}
        assert (h.get("transfer-encoding") == "chunked") == client.chunked, path
        assert ("content-length" in h) != client.chunked, path
        assert (h.get("content-encoding") == "gzip") == (client.mode == "http-gzip"), path


def test_expected_values_are_not_trivial() -> None:
    """The scenario exercises what the test claims: two providers, a retry, two TTFTs."""
    e = expected()
    assert len({p for p, _ in e.cost}) == 2
    assert sum(e.retries.values()) == 1 and e.errors == {"RateLimitError": 1}
    assert e.ttft_count == 2 and e.ttft_sum == Decimal("0.77")
    assert all(c > 0 for c in e.cost.values())
