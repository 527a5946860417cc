"""Spans that look like LLM calls but from which no call could be read are counted by scope and
logged once per scope (pipeline/processors/unreadable.py), whichever reader read the batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pipeline.config import Config
from pipeline.model import TraceBatch
from pipeline.processors.normalize import Normalize, normalize
from pipeline.service import Service
from tests.instrumentation.otlp import Span, build_request, llm

OPENLLMETRY = "opentelemetry.instrumentation.openai.v1"


def renamed(n: int, scope: str, **kw: Any) -> Span:
    # A model call under names normalize does not know (an instrumentation renamed them).
    attrs = {"gen_ai.request.model_name": "gpt-4o", "gen_ai.usage.prompt_token_count": 10}
    return Span(n, name="chat gpt-4o", scope=scope, attrs=attrs, **kw)


def mixed_batch() -> list[Span]:
    return [
        llm(1, scope=OPENLLMETRY),  # read: not counted here
        renamed(2, OPENLLMETRY),
        renamed(3, OPENLLMETRY),
        renamed(4, "my.llm.lib"),  # unknown scope, LLM-looking keys
        Span(5, scope=OPENLLMETRY, name="openai.chat"),  # known scope, no keys at all
        # not model calls, though they carry such keys:
        Span(6, scope="litellm", name="raw_gen_ai_request", attrs={"llm.openai.model": "m"}),
        Span(
            7,
            scope="agents",
            attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 9},
        ),
        Span(
            8,
            scope="openinference.instrumentation.langchain",
            attrs={"openinference.span.kind": "CHAIN", "llm.token_count.prompt": 9},
        ),
        Span(
            9, scope="app", name="GET /", attrs={"http.route": "/", "gen_ai.conversation.id": "c"}
        ),
        Span(10, scope="app", attrs={"llm_model": "x"}),  # not a gen_ai./llm. key
        # the OpenAI Agents SDK's task/turn spans (opentelemetry-instrumentation-openai-agents-v2):
        # not under the openai instrumentation's scope, whatever the prefix says
        Span(
            11,
            scope="opentelemetry.instrumentation.openai_agents",
            name="unknown",
            attrs={"gen_ai.operation.name": "unknown"},
        ),
    ]


@pytest.mark.parametrize("raw", [False, True], ids=["parsed", "from_bytes"])
def test_unreadable_spans_are_counted_by_scope(raw: bool) -> None:
    req = build_request(mixed_batch())
    batch = TraceBatch(request=req, raw=req.SerializeToString() if raw else None)
    found: dict[str, int] = {}
    normalize(batch, found)
    assert [c.span.name for c in batch.calls] == ["chat 1"]
    assert found == {OPENLLMETRY: 3, "my.llm.lib": 1}


def test_a_readable_batch_reports_nothing() -> None:
    req = build_request([llm(1), llm(2, parent=1), Span(3, scope="app")])
    found: dict[str, int] = {}
    normalize(TraceBatch(request=req, raw=req.SerializeToString()), found)
    assert found == {}


def test_the_processor_reports_every_batch_and_logs_each_scope_once() -> None:
    reported: list[tuple[str, int]] = []
    proc = Normalize(lambda scope, n: reported.append((scope, n)))
    with capture_logs() as logs:
        for _ in range(3):
            req = build_request(mixed_batch())
            proc(TraceBatch(request=req, raw=req.SerializeToString()))
    assert sorted(reported) == sorted([(OPENLLMETRY, 3), ("my.llm.lib", 1)] * 3)
    warned = [e["scope"] for e in logs if "no call could be read" in e["event"]]
    assert sorted(warned) == sorted([OPENLLMETRY, "my.llm.lib"])


def test_the_service_counts_them_on_its_self_metrics(tmp_path: Path) -> None:
    cfg = Config()
    cfg.file.directory = str(tmp_path / "out")
    svc = Service(cfg)
    svc.start()
    try:
        req = build_request(mixed_batch())
        svc.accept("traces", req, req.SerializeToString(), "http")
        assert svc.wait_processed(10)
        series = {k: s.value for k, s in svc.telemetry.unreadable.series.items()}
        assert series == {(OPENLLMETRY,): 3.0, ("my.llm.lib",): 1.0}
    finally:
        svc.shutdown()
