"""Spans that look like model calls but from which normalize read none: an instrumentation
renamed its attributes, or one this sidecar does not know. They are counted by scope
(`llm_pipeline_unreadable_llm_spans_total{scope}`) so "the sidecar shows nothing" has an answer.

A span looks like a model call when its scope is a known LLM instrumentation's, or when it has a
`gen_ai.*` / `llm.*` attribute naming a model or a token count, and it is not one of the
non-call spans those instrumentations also write (agents, tools, chains, LiteLLM's raw request).
A scope of another library whose received bytes hold no such key is skipped after a C-speed
search of its bytes, so the spans of a batch are not walked again in the common case.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import TraceBatch
from ._wire import _len_fields

# Scopes of instrumentations whose spans are model calls (a prefix of the scope name).
LLM_SCOPES = (
    "opentelemetry.instrumentation.openai",  # OpenLLMetry's and openai-v2
    "opentelemetry.util.genai",  # openai-v2 with gen_ai_latest_experimental
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
# Scopes those prefixes take in by mistake: the OpenAI Agents SDK's instrumentation (agent,
# tool and task spans; its model calls are read by their keys like any scope's).
NOT_LLM_SCOPES = ("opentelemetry.instrumentation.openai_agents",)
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


def _scope_ranges(raw: bytes) -> list[tuple[int, int]]:
    """The bytes of each scope_spans message, in normalize's flat scope order (two levels of
    the wire read, nothing of the spans)."""
    out: list[tuple[int, int]] = []
    for field, start, end in _len_fields(raw, 0, len(raw)):
        if field == 1:
            out.extend((a, b) for f, a, b in _len_fields(raw, start, end) if f == 2)
    return out


def find_unreadable(
    batch: TraceBatch,
    scopes: list[tuple[str, Any]],
    read: set[tuple[int, int]],
    out: dict[str, int],
) -> None:
    """Count into `out`, by scope name, the spans of `scopes` (normalize's flat list of
    (service, scope_spans)) that look like model calls and are not in `read`."""
    raw = batch.received
    ranges: list[tuple[int, int]] | None = None
    if raw is not None:
        try:
            ranges = _scope_ranges(raw)
        except ValueError:
            ranges = None
        if ranges is not None and len(ranges) != len(scopes):
            ranges = None  # not the shape expected: look at every scope's spans
    read_in = [0] * len(scopes)
    for si, _ in read:
        read_in[si] += 1
    for si, (_, ss) in enumerate(scopes):
        spans = ss.spans
        if read_in[si] == len(spans):
            continue
        name = ss.scope.name
        known = name.startswith(LLM_SCOPES) and not name.startswith(NOT_LLM_SCOPES)
        if not known and raw is not None and ranges is not None:
            # A scope whose bytes hold no LLM-looking key (most app scopes) is skipped after
            # a literal search of its bytes (C speed); the spans are not walked.
            a, b = ranges[si]
            if raw.find(b"gen_ai.", a, b) < 0 and raw.find(b"llm.", a, b) < 0:
                continue
            if _LLM_KEY.search(raw, a, b) is None:
                continue
        n = sum(
            1
            for j, span in enumerate(spans)
            if (si, j) not in read and _looks_like_call(span, known)
        )
        if n:
            out[name or "-"] = out.get(name or "-", 0) + n
