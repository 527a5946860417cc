"""The demo's attribution attributes: tenants, users and features on the request span with a
Zipf-like skew, conversation ids on the LLM spans, cache reads on some calls."""

from __future__ import annotations

from collections import Counter

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.demo import emit_into
from pipeline.demo.attribution import FEATURES, TENANTS


def test_requests_carry_skewed_tenants_users_features_and_conversations() -> None:
    exp = InMemorySpanExporter()
    stats = emit_into(exp, None, 1500, seed=3)
    spans = exp.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == stats.requests == 1500
    tenants = Counter(str(s.attributes["tenant.id"]) for s in roots)
    users = Counter(str(s.attributes["user.id"]) for s in roots)
    features = Counter(str(s.attributes["app.feature"]) for s in roots)
    assert set(tenants) <= set(TENANTS) and len(tenants) >= 10
    # skew: the top tenant has several times the median tenant's requests, the top 3 most
    counts = sorted(tenants.values(), reverse=True)
    assert counts[0] >= 4 * counts[len(counts) // 2]
    assert sum(counts[:3]) > 0.5 * sum(counts)
    assert len(users) > 100 and users.most_common(1)[0][1] >= 10 * min(users.values())
    every_feature = {f for fs in FEATURES.values() for f in fs}
    assert set(features) <= every_feature and len(features) >= 8
    llm = [s for s in spans if "gen_ai.request.model" in (s.attributes or {})]
    conversations = Counter(str(s.attributes["gen_ai.conversation.id"]) for s in llm)
    assert len(conversations) > 50 and conversations.most_common(1)[0][1] > 1
    by_trace = {s.context.trace_id: s for s in roots}
    for s in llm[:200]:  # the conversation belongs to the request's tenant and user
        root = by_trace[s.context.trace_id]
        assert str(s.attributes["gen_ai.conversation.id"]).startswith(
            f"conv-{root.attributes['tenant.id']}-"
        )
    cached = [s for s in llm if s.attributes.get("gen_ai.usage.cache_read.input_tokens")]
    assert cached and stats.tokens and sum(t.cache_read for t in stats.tokens.values()) > 0
