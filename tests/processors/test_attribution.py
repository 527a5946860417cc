"""attribution: dimension labels (own span, resource, inherited), folds, invalid and redacted
values, held calls, request / agent-run / conversation cost and the rollup attributes."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.aggregation import Aggregation
from pipeline.config import Config, ConfigError, from_dict
from pipeline.model import TraceBatch, any_value
from pipeline.processors.attribution import Attribution, dimension_labels
from pipeline.processors.metrics import LLMMetrics, MetricsConfig
from pipeline.processors.redact import Redactor
from pipeline.processors.registry import Wiring, build_chain
from pipeline.telemetry import Telemetry
from tests.instrumentation.otlp import Span, build_request, llm, span_id, trace_id

# 10 input tokens at $1/Mtok + 5 output at $2/Mtok
CALL_COST = round(10 * 1e-6 + 5 * 2e-6, 12)
PRICES = {"m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
DIMS = [
    {"name": "tenant", "sources": ["resource:tenant.id", "span:tenant.id"]},
    {"name": "user", "sources": ["span:user.id", "span:enduser.id"]},
]


class Chain:
    """The default processor chain with the given config, batch after batch."""

    def __init__(self, **config: Any) -> None:
        data = {"price_overrides": PRICES, "dimensions": DIMS, **config}
        self.cfg = cfg = from_dict(Config, data)
        cfg.validate()
        names, by_metric = dimension_labels(cfg)
        self.metrics = LLMMetrics(Aggregation(), MetricsConfig(2000, "v1.41", names, by_metric))
        wiring = Wiring(cfg, Telemetry(Aggregation(), 100), self.metrics, Redactor(cfg.redact))
        self.steps = build_chain(cfg.processors, wiring)
        attribution = self.steps["attribution"]
        assert isinstance(attribution, Attribution)
        self.attribution = attribution

    def send(self, spans: list[Span], resource: dict[str, str] | None = None) -> TraceBatch:
        req = build_request(spans)
        for rs in req.resource_spans:
            for k, v in (resource or {}).items():
                kv = rs.resource.attributes.add()
                kv.key, kv.value.string_value = k, v
        return self.send_request(req)

    def send_request(self, req: Any) -> TraceBatch:
        raw = req.SerializeToString()
        batch = TraceBatch(type(req).FromString(raw), raw=raw)
        for step in self.steps.values():
            batch = step(batch)
        assert batch.request is not None  # reading it merges the deferred additions
        return batch

    def family(self, name: str) -> Any:
        return next(f for f in self.metrics.agg.families if f.name == name)

    def cost(self) -> dict[tuple[str, ...], float]:
        """gen_ai_client_cost_usd by (tenant, user)."""
        return {
            k[-2:]: round(s.value, 12)
            for k, s in self.family("gen_ai_client_cost_usd").series.items()
        }

    def counter(self, name: str) -> dict[tuple[str, ...], float]:
        return {k: s.value for k, s in self.family(name).series.items()}


def test_labels_from_the_span_the_resource_and_an_ancestor_in_the_same_batch() -> None:
    c = Chain()
    c.send(
        [
            Span(span=1, name="GET /chat", attrs={"user.id": "alice"}),
            llm(2, parent=1),
            llm(3, parent=1, attrs={"enduser.id": "bob"}),  # its own value wins
        ],
        resource={"tenant.id": "acme"},
    )
    assert c.cost() == {("acme", "alice"): CALL_COST, ("acme", "bob"): CALL_COST}
    tokens = c.counter("gen_ai_client_tokens")
    assert tokens[("svc", "chat", "openai", "m", "", "acme", "alice", "input")] == 10
    assert tokens[("svc", "chat", "openai", "m", "", "acme", "bob", "output")] == 5
    # latency histograms carry no dimension by default
    duration = c.family("gen_ai_client_operation_duration_seconds")
    assert duration.label_names[-1] == "error_type" and "user" not in duration.label_names
    assert c.attribution.held == {}  # the root came: nothing held


def test_a_call_waits_for_its_ancestors_in_a_later_batch() -> None:
    c = Chain()
    c.send([llm(3, parent=2)])  # under a tool span under the request span, both later
    assert c.cost() == {}  # held: its ancestors may carry the user
    assert len(c.attribution.held[trace_id(1)].calls) == 1
    c.send([Span(span=2, parent=1, name="tool")])
    assert c.cost() == {}
    c.send([Span(span=1, name="POST /ask", attrs={"user.id": "carol", "tenant.id": "t9"})])
    assert c.cost() == {("t9", "carol"): CALL_COST}
    assert c.attribution.held == {}
    assert c.counter("llm_pipeline_attribution_given_up") == {}


def test_a_call_whose_ancestors_never_come_is_recorded_after_idle_s() -> None:
    c = Chain(attribution={"idle_s": 5})
    c.send([llm(3, parent=2, attrs={"user.id": "dave"})])
    assert c.cost() == {}  # the tenant may still come from an ancestor
    c.attribution.flush()
    assert c.cost() == {}  # not idle yet
    c.attribution.flush(force=True)
    assert c.cost() == {("", "dave"): CALL_COST}
    assert c.counter("llm_pipeline_attribution_given_up") == {("idle",): 1}


def test_a_root_llm_span_needs_no_ancestor() -> None:
    c = Chain()
    c.send([llm(1)])
    assert c.cost() == {("", ""): CALL_COST}
    assert c.attribution.held == {}


def test_values_beyond_the_top_k_fold_into_other_and_are_counted() -> None:
    c = Chain(attribution={"top_k": 2})
    big = {"gen_ai.usage.input_tokens": 1000}
    spans = [
        llm(1, trace=1, attrs={"user.id": "u1", **big}),
        llm(1, trace=2, attrs={"user.id": "u2", **big}),
        llm(1, trace=3, attrs={"user.id": "u3"}),
        llm(1, trace=4, attrs={"user.id": "u4"}),
        llm(1, trace=5, attrs={"user.id": "u4"}),
    ]
    c.send(spans)
    big_cost = round(1000 * 1e-6 + 5 * 2e-6, 12)
    assert c.cost() == {
        ("", "u1"): big_cost,
        ("", "u2"): big_cost,
        ("", "__other__"): round(3 * CALL_COST, 12),
    }
    assert c.counter("llm_pipeline_dimension_folds") == {("user",): 3}


def test_invalid_and_secret_values_never_become_labels() -> None:
    c = Chain()
    c.send(
        [
            llm(1, trace=1, attrs={"user.id": "x" * 129}),
            llm(1, trace=2, attrs={"user.id": "bad\nvalue"}),
            llm(1, trace=3, attrs={"user.id": "alice@example.com"}),  # redact: an email
            llm(1, trace=4, attrs={"user.id": "key sk-proj-abcdefghijklmnop1234567890"}),
            llm(1, trace=5, attrs={"user.id": "x" * 128}),
        ]
    )
    assert c.cost() == {
        ("", "__invalid__"): round(2 * CALL_COST, 12),
        ("", "__redacted__"): round(2 * CALL_COST, 12),
        ("", "x" * 128): CALL_COST,
    }


def test_dimensions_on_chosen_families_only() -> None:
    dims = [
        {"name": "user", "sources": ["span:user.id"], "metrics": ["cost"]},
        {"name": "feature", "sources": ["span:app.feature"], "metrics": ["tokens", "duration"]},
    ]
    c = Chain(dimensions=dims)
    c.send([llm(1, attrs={"user.id": "u", "app.feature": "search"})])
    assert c.family("gen_ai_client_cost_usd").label_names[-1] == "user"
    assert next(iter(c.family("gen_ai_client_cost_usd").series))[-1] == "u"
    tokens = c.family("gen_ai_client_tokens")
    assert tokens.label_names[-2:] == ("feature", "gen_ai_token_type")
    assert ("svc", "chat", "openai", "m", "", "search", "input") in tokens.series
    duration = c.family("gen_ai_client_operation_duration_seconds")
    assert next(iter(duration.series))[-2:] == ("search", "")


def _attrs(batch: TraceBatch, sid: int) -> dict[str, Any]:
    """The span's attributes as the exporters send them (the received bytes patched)."""
    sent = type(batch.request).FromString(batch.encode())
    for rs in sent.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                if sp.span_id == span_id(sid):
                    return {kv.key: any_value(kv.value) for kv in sp.attributes}
    raise KeyError(sid)


def _hist(c: Chain, name: str) -> dict[tuple[str, ...], tuple[int, float]]:
    return {k: (s.count, round(s.total, 12)) for k, s in c.family(name).series.items()}


def test_requests_agent_runs_and_rollup_attributes() -> None:
    c = Chain(attribution={"requests": True})
    conv = {"gen_ai.conversation.id": "conv-1"}
    first = c.send(
        [
            llm(4, parent=3, attrs=conv),
            llm(5, parent=3, attrs=conv),
            Span(span=3, parent=2, name="invoke_agent planner"),
        ]
    )
    rollup = {
        "llm_pipeline.rollup.cost_usd": pytest.approx(2 * CALL_COST),
        "llm_pipeline.rollup.input_tokens": 20,
        "llm_pipeline.rollup.output_tokens": 10,
        "llm_pipeline.rollup.llm_calls": 2,
    }
    assert {k: v for k, v in _attrs(first, 3).items() if k.startswith("llm_pipeline")} == rollup
    assert first.patchable  # appended to the received bytes, not serialized again
    assert _hist(c, "llm_pipeline_request_cost_usd") == {}  # no root yet
    last = c.send(
        [
            llm(6, parent=1),
            Span(span=2, parent=1, name="invoke_workflow", attrs={"gen_ai.agent.name": "wf"}),
            Span(span=1, name="POST /ask", attrs={"user.id": "erin"}),
        ]
    )
    assert _attrs(last, 1)["llm_pipeline.rollup.llm_calls"] == 3
    assert _attrs(last, 2)["llm_pipeline.rollup.llm_calls"] == 2
    assert "llm_pipeline.rollup.cost_usd" not in _attrs(last, 6)
    assert _hist(c, "llm_pipeline_request_cost_usd") == {
        ("svc", "POST /ask"): (1, round(3 * CALL_COST, 12))
    }
    assert _hist(c, "llm_pipeline_request_tokens") == {("svc", "POST /ask"): (1, 45)}
    ex = c.family("llm_pipeline_request_cost_usd").series["svc", "POST /ask"].exemplars
    assert [e[:2] for e in ex if e is not None] == [(trace_id(1), span_id(1))]
    assert _hist(c, "llm_pipeline_agent_run_llm_calls") == {
        ("svc", "planner"): (1, 2),
        ("svc", "wf"): (1, 2),
    }
    assert c.cost() == {("", "erin"): round(3 * CALL_COST, 12)}
    conv_cost = c.counter("llm_pipeline_conversation_cost_usd")
    assert {k: round(v, 12) for k, v in conv_cost.items()} == {
        ("", "erin"): round(2 * CALL_COST, 12)
    }
    assert c.counter("llm_pipeline_conversations") == {("", "erin"): 1}


def test_a_root_that_arrives_first_gets_no_rollup_and_the_request_is_counted_at_idle() -> None:
    c = Chain(attribution={"requests": True, "idle_s": 0.01})
    c.send([Span(span=1, name="POST /ask")])
    later = c.send([llm(2, parent=1)])
    assert "llm_pipeline.rollup.llm_calls" not in _attrs(later, 2)
    c.attribution.flush(force=True)
    assert _hist(c, "llm_pipeline_request_cost_usd") == {("svc", "__unknown__"): (1, CALL_COST)}
    assert c.counter("llm_pipeline_requests_given_up") == {("idle",): 1}
    assert c.cost() == {("", ""): CALL_COST}


def test_open_traces_are_bounded() -> None:
    c = Chain(attribution={"max_open_traces": 3})
    for t in range(1, 6):
        c.send([llm(2, parent=1, trace=t, attrs={"user.id": f"u{t}"})])
    assert len(c.attribution.held) == 3
    assert c.counter("llm_pipeline_attribution_given_up") == {("max_open_traces",): 2}
    assert c.cost() == {("", "u1"): CALL_COST, ("", "u2"): CALL_COST}


def test_traces_followed_for_requests_are_bounded() -> None:
    c = Chain(attribution={"requests": True, "max_open_traces": 2})
    for t in range(1, 5):
        c.send([llm(2, parent=1, trace=t, attrs={"user.id": "u", "tenant.id": "t"})])
    assert c.attribution.tracker is not None and len(c.attribution.tracker.traces) == 2
    assert c.counter("llm_pipeline_requests_given_up") == {("max_open_traces",): 2}
    assert _hist(c, "llm_pipeline_request_cost_usd") == {
        ("svc", "__unknown__"): (2, round(2 * CALL_COST, 12))
    }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"dimensions": [{"name": "user", "sources": ["user.id"]}]}, "expected span:"),
        ({"dimensions": [{"name": "user", "sources": []}]}, "at least one source"),
        ({"dimensions": [{"name": "service_name", "sources": ["span:a"]}]}, "already use"),
        ({"dimensions": [{"name": "a-b", "sources": ["span:a"]}]}, "letters, digits"),
        ({"dimensions": [{"name": "u", "sources": ["span:a"], "metrics": ["x"]}]}, "unknown"),
        ({"dimensions": [{"name": "u", "sources": ["span:a"]}] * 2}, "given twice"),
        ({"attribution": {"top_k": 0}}, "top_k"),
        ({"attribution": {"idle_s": 0}}, "idle_s"),
        ({"attribution": {"max_open_traces": 0}}, "max_open_traces"),
        (
            {
                "dimensions": [{"name": "u", "sources": ["span:a"]}],
                "processors": ["normalize", "metrics"],
            },
            "need the attribution processor",
        ),
    ],
)
def test_config_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(Config, config).validate()


@pytest.mark.parametrize(
    ("value", "label"),
    [("alice", "alice"), ("", ""), (42, "42"), (-7, "-7"), (True, "true"), (1.5, "")],
)
def test_a_value_is_a_string_an_int_or_a_bool(value: Any, label: str) -> None:
    c = Chain()
    c.send([llm(1, attrs={"user.id": value})])
    assert c.cost() == {("", label): CALL_COST}


def test_an_event_attribute_is_not_read_as_the_span_s() -> None:
    c = Chain()
    req = build_request(
        [Span(span=1, name="root", attrs={"user.id": "root-user"}), llm(2, parent=1)]
    )
    span = req.resource_spans[0].scope_spans[0].spans[1]
    ev = span.events.add()
    kv = ev.attributes.add()
    kv.key, kv.value.string_value = "user.id", "mallory"
    c.send_request(req)
    assert c.cost() == {("", "root-user"): CALL_COST}
