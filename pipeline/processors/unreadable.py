"""Spans that look like model calls but from which normalize read none: an instrumentation
renamed its attributes, or one this sidecar does not know. They are counted by scope
(`llm_pipeline_unreadable_llm_spans_total{scope}`) so "the sidecar shows nothing" has an answer.

A span looks like a model call when its scope is a known LLM instrumentation's, or when it has a
`gen_ai.*` / `llm.*` attribute naming a model or a token count, and it is not one of the
non-call spans those instrumentations also write (agents, tools, chains, LiteLLM's raw request).
Only spans whose received bytes hold such a key are looked at (a C-speed search, then the
wire's span ranges), so the spans of a batch are not walked again.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

from ..model import TraceBatch
from ._wire import item_ranges

# Scopes of instrumentations whose spans are model calls (a prefix of the scope name).
LLM_SCOPES = (
    "opentelemetry.instrumentation.openai",  # OpenLLMetry's and openai-v2
    "opentelemetry.instrumentation.anthropic",
    "opentelemetry.instrumentation.bedrock",
    "opentelemetry.instrumentation.vertexai",
    "opentelemetry.instrumentation.google_genai",
    "opentelemetry.instrumentation.mistralai",
    "opentelemetry.instrumentation.cohere",
    "opentelemetry.instrumentation.groq",
    "opentelemetry.instrumentation.ollama",
    "openinference.instrumentation.openai",
    "openinference.instrumentation.anthropic",
    "openinference.instrumentation.bedrock",
    "openinference.instrumentation.litellm",
    "@traceloop/instrumentation-openai",
    "@traceloop/instrumentation-anthropic",
    "@traceloop/instrumentation-bedrock",
    "litellm",
)
# A `gen_ai.*` / `llm.*` attribute key naming a model or a token count, as a KeyValue on the
# wire (tag 0x0a, a one-byte length, the key): the span may be a model call.
_LLM_KEY = re.compile(rb"\n[\x01-\x7f](?:gen_ai|llm)\.[\w.]*?(?:model|token)")
# Spans that carry such keys and are not model calls.
_NOT_CALLS = {
    "gen_ai.operation.name": frozenset(
        {"invoke_agent", "create_agent", "execute_tool", "invoke_workflow"}
    ),
    "openinference.span.kind": frozenset(
        {"CHAIN", "TOOL", "AGENT", "RETRIEVER", "RERANKER", "GUARDRAIL", "EVALUATOR", "PROMPT"}
    ),
    "traceloop.span.kind": frozenset({"workflow", "task", "agent", "tool"}),
}
_NOT_CALL_NAMES = frozenset({"raw_gen_ai_request"})  # LiteLLM's child of its own call span


def _looks_like_call(span: Any, known_scope: bool) -> bool:
    if span.name in _NOT_CALL_NAMES:
        return False
    llm_key = known_scope
    for kv in span.attributes:
        key = kv.key
        values = _NOT_CALLS.get(key)
        if values is not None and kv.value.string_value in values:
            return False
        if (
            not llm_key
            and key.startswith(("gen_ai.", "llm."))
            and ("model" in key or "token" in key)
        ):
            llm_key = True
    return llm_key


def find_unreadable(
    batch: TraceBatch,
    scopes: list[tuple[str, Any]],
    read: set[tuple[int, int]],
    out: dict[str, int],
) -> None:
    """Count into `out`, by scope name, the spans of `scopes` (normalize's flat list of
    (service, scope_spans)) that look like model calls and are not in `read`."""
    candidates = {
        (si, j)
        for si, (_, ss) in enumerate(scopes)
        if ss.scope.name.startswith(LLM_SCOPES)
        for j in range(len(ss.spans))
    }
    raw = batch.raw if not batch.modified else None
    if raw is not None:
        # Only spans whose bytes hold an LLM-looking key are looked at (C-speed search).
        hits = [m.start() for m in _LLM_KEY.finditer(raw)]
        if hits:
            ranges = item_ranges(raw)
            starts = [r[0] for r in ranges]
            index = _scope_index(batch)
            for pos in hits:
                k = bisect.bisect_right(starts, pos) - 1
                if k >= 0:
                    _, end, resource, scope, item = ranges[k]
                    if item >= 0 and pos < end:
                        si = index.get((resource, scope))
                        if si is not None:
                            candidates.add((si, item))
    else:  # no bytes to search: every span's keys
        candidates.update(
            (si, j) for si, (_, ss) in enumerate(scopes) for j in range(len(ss.spans))
        )
    for si, j in candidates - read:
        ss = scopes[si][1]
        if _looks_like_call(ss.spans[j], ss.scope.name.startswith(LLM_SCOPES)):
            name = ss.scope.name or "-"
            out[name] = out.get(name, 0) + 1


def _scope_index(batch: TraceBatch) -> dict[tuple[int, int], int]:
    """(resource index, scope index within it) -> the flat scope index normalize uses."""
    index: dict[tuple[int, int], int] = {}
    for r, rs in enumerate(batch.request.resource_spans):
        for s in range(len(rs.scope_spans)):
            index[(r, s)] = len(index)
    return index
