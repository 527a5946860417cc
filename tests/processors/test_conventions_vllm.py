"""vLLM server spans from tests/testdata/conventions/vllm.json (vLLM cannot be installed here;
the fixture is built from its source's names by tests/instrumentation/make_vllm_fixture.py).
"""

from __future__ import annotations

import pytest

from pipeline.model import LLMCall, TraceBatch
from pipeline.processors.dedupe import Dedupe
from pipeline.processors.normalize import normalize
from tests.instrumentation import make_vllm_fixture as fx
from tests.instrumentation.otlp import by_scenario, load_fixture, run_chain


def scenario(name: str) -> list[LLMCall]:
    return run_chain(by_scenario(load_fixture("vllm.json"))[name]).calls


def test_the_fixture_is_what_the_generator_writes_now() -> None:
    fresh = by_scenario(load_fixture("vllm.json"))
    assert set(fresh) == {"v1", "v0", "behind_client"}
    (span,) = [s for rs in fresh["v1"].resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert (span.name, span.kind) == ("llm_request", 2)  # SERVER
    assert {kv.key for kv in span.attributes} == set(fx.vllm_attributes("x"))


@pytest.mark.parametrize(("name", "model"), [("v1", ""), ("v0", fx.MODEL)])
def test_server_span(name: str, model: str) -> None:
    (call,) = scenario(name)
    assert call.server_side and call.counted
    assert (call.provider, call.request_model) == ("vllm", model)
    assert (call.input_tokens, call.output_tokens) == (fx.PROMPT_TOKENS, fx.COMPLETION_TOKENS)
    assert (call.server_ttft_s, call.server_duration_s) == (fx.TTFT_S, fx.E2E_S)
    assert (call.ttft_s, call.streaming, call.error_type) == (None, False, "")
    assert call.convention == "otel_genai_deprecated"  # it writes gen_ai.usage.prompt_tokens


def test_behind_a_client_the_server_span_is_counted() -> None:
    calls = scenario("behind_client")
    server = [c for c in calls if c.server_side]
    client = [c for c in calls if not c.server_side]
    assert len(server) == 1 and len(client) == 1
    assert server[0].counted and not client[0].counted
    assert client[0].request_model == fx.MODEL


@pytest.mark.parametrize("server_first", [True, False])
def test_behind_a_client_across_batches(server_first: bool) -> None:
    """The app and vLLM export separately: each service's spans come in their own batch."""
    req = by_scenario(load_fixture("vllm.json"))["behind_client"]
    per_service = {}
    for rs in req.resource_spans:
        one = type(req)()
        one.resource_spans.append(rs)
        per_service[
            next(kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name")
        ] = one
    order = ["vllm", "app"] if server_first else ["app", "vllm"]
    d = Dedupe()
    counted = {}
    for service in order:
        batch = TraceBatch(request=per_service[service])
        normalize(batch)
        d(batch)
        counted.update({c.server_side: c.counted for c in batch.calls})
    # Server spans first (they end first): the client is not counted. If the client's batch
    # comes first it was already counted, and so is the server span: the documented limit.
    assert counted == ({True: True, False: False} if server_first else {True: True, False: True})


@pytest.mark.parametrize("name", ["v1", "v0"])
def test_server_time_per_output_token_from_the_fixture(name: str) -> None:
    from pipeline.aggregation import Aggregation
    from pipeline.processors.metrics import LLMMetrics

    batch = run_chain(by_scenario(load_fixture("vllm.json"))[name])
    m = LLMMetrics(Aggregation())
    m(batch)
    (series,) = m.server_tpot.series.values()
    expected = (fx.E2E_S - fx.TTFT_S) / (fx.COMPLETION_TOKENS - 1)
    assert series.count == 1 and series.total == pytest.approx(expected)
    assert 0 < expected < 1  # the fixture's latencies make a plausible per-token time
