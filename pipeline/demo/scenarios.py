"""One request's plan: which calls, to which models, with which outcome (chat, completion,
RAG, ingest, agent, retry, fallback, error)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .content import _Content, _content
from .profiles import (
    CLIENT_TIMEOUT_S,
    ERROR_KINDS,
    ERROR_TYPE_ATTR_SHARE,
    ERRORS,
    LEGACY_SHARE,
    MODELS,
    SERVICES,
    STREAM_SHARE,
    TTFT_ATTR_SHARE,
    DemoStats,
    ModelSpec,
    ServiceProfile,
)


@dataclass(slots=True)
class _Call:
    spec: ModelSpec
    duration_s: float
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    reasoning: int = 0
    max_tokens: int = 0
    temperature: float | None = None
    finish: str = ""
    error_kind: str = ""  # "" on success
    error_type_attr: str | None = None
    ttft_s: float | None = None  # set when streamed
    ttft_as_attribute: bool = False
    legacy: bool = False
    content: _Content | None = None


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    if hi <= lo:
        return lo
    return int(math.exp(rng.uniform(math.log(max(lo, 1)), math.log(hi))))


def _weighted(rng: random.Random, choices: Sequence[tuple[str, float]]) -> str:
    total = sum(w for _, w in choices)
    x = rng.random() * total
    for name, w in choices:
        x -= w
        if x < 0:
            return name
    return choices[-1][0]


def _legacy(rng: random.Random, spec: ModelSpec) -> bool:
    """Old instrumentations (deprecated names) only ever wrote plain OpenAI chat calls here."""
    return (
        spec.provider == "openai"
        and spec.operation == "chat"
        and not spec.reasoning
        and rng.random() < LEGACY_SHARE
    )


def _plan_call(
    rng: random.Random,
    spec: ModelSpec,
    profile: ServiceProfile,
    *,
    error_kind: str = "",
    stream: bool | None = None,
) -> _Call:
    if error_kind:
        if error_kind == "timeout":
            d = CLIENT_TIMEOUT_S + rng.uniform(0.0, 0.05)
        elif error_kind == "rate_limit":
            d = rng.uniform(0.04, 0.4)
        else:
            d = rng.uniform(0.3, 4.0)
        call = _Call(spec, d, error_kind=error_kind, legacy=_legacy(rng, spec))
        status = ERRORS[spec.provider][error_kind][1]
        if status is not None and rng.random() < ERROR_TYPE_ATTR_SHARE:
            call.error_type_attr = str(status)
        if rng.random() < profile.capture_content:
            call.content = _content(rng)
        return call
    uncached = _log_uniform(rng, *spec.input_tokens)
    call = _Call(spec, 0.0, input_tokens=uncached, legacy=_legacy(rng, spec))
    lo, hi = spec.cached_prefix
    if hi and not call.legacy:
        r = rng.random()
        prefix = rng.randint(lo, hi)
        if spec.cache_writes:
            if r < 0.6:
                call.cache_read = prefix
            elif r < 0.85:
                call.cache_creation = prefix
        elif r < 0.35:
            call.cache_read = prefix // 128 * 128  # OpenAI caches in 128-token increments
        call.input_tokens += call.cache_read + call.cache_creation
    if spec.operation == "embeddings":
        call.duration_s = spec.ttft_s * rng.uniform(0.5, 2.0) + call.input_tokens / 20000
        return call
    call.max_tokens = rng.choice((1024, 2048, 4096)) if not spec.reasoning else 16384
    out = _log_uniform(rng, *spec.output_tokens)
    if spec.reasoning:
        call.reasoning = int(out * rng.uniform(0.4, 0.85))
    if out >= call.max_tokens:
        out = call.max_tokens
        call.finish = spec.finish_length
    else:
        call.finish = spec.finish_stop
    call.output_tokens = out
    call.reasoning = min(call.reasoning, out)
    if not spec.reasoning:
        call.temperature = rng.choice((0.0, 0.2, 0.7, 1.0))
    # TTFT grows with the prompt; a reasoning model thinks before its first visible token.
    ttft = spec.ttft_s * rng.lognormvariate(0.0, 0.35) + call.input_tokens / 50000
    ttft += call.reasoning / spec.tokens_per_s
    gen = (out - call.reasoning) / (spec.tokens_per_s * rng.uniform(0.7, 1.3))
    call.duration_s = ttft + gen
    if stream is None:
        stream = spec.operation == "chat" and rng.random() < STREAM_SHARE
    if stream:
        call.ttft_s = ttft
        call.ttft_as_attribute = not call.legacy and rng.random() < TTFT_ATTR_SHARE
    if rng.random() < profile.capture_content:
        call.content = _content(rng)
    return call


def _response_id(rng: random.Random, spec: ModelSpec) -> str:
    return f"{spec.id_prefix}{rng.getrandbits(96):024x}"


@dataclass(slots=True)
class _Step:
    call: _Call | None  # None: a tool span lasting `gap_s`
    gap_s: float  # time before this step (a tool step: its duration)
    next_action: str = ""
    tool: str = ""


@dataclass(slots=True)
class _Plan:
    steps: list[_Step]
    wrapper: tuple[str, dict[str, Any]] | None = None  # INTERNAL parent of the LLM calls
    http_status: int = 200


def _error_kind(rng: random.Random, kinds: Sequence[tuple[str, float]] = ERROR_KINDS) -> str:
    return _weighted(rng, kinds)


def _chat_model(rng: random.Random, p: ServiceProfile) -> ModelSpec:
    return MODELS[_weighted(rng, p.chat_models)]


def _sc_chat(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    return _Plan([_Step(_plan_call(rng, _chat_model(rng, p), p), rng.uniform(0.002, 0.02))])


def _sc_completion(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    call = _plan_call(rng, MODELS["gpt-3.5-turbo-instruct"], p, stream=False)
    return _Plan([_Step(call, rng.uniform(0.002, 0.01))])


def _sc_rag(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    emb = _plan_call(rng, MODELS["text-embedding-3-small"], p)
    chat = _plan_call(rng, _chat_model(rng, p), p)
    return _Plan([_Step(emb, rng.uniform(0.001, 0.005)), _Step(chat, rng.uniform(0.02, 0.12))])


def _sc_ingest(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    spec = MODELS["text-embedding-3-small"]
    steps = [
        _Step(_plan_call(rng, spec, p), rng.uniform(0.005, 0.05)) for _ in range(rng.randint(1, 3))
    ]
    return _Plan(steps)


def _agent_wrapper(p: ServiceProfile, rng: random.Random) -> tuple[str, dict[str, Any]]:
    if p.name == "support-bot":
        return "invoke_agent support-agent", {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support-agent",
            "gen_ai.agent.id": "asst_support_v2",
            "gen_ai.conversation.id": f"conv_{rng.getrandbits(48):012x}",
        }
    return "chain llm-router", {"llm.router.strategy": "fallback"}


def _sc_agent(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    spec = _chat_model(rng, p)
    first = _plan_call(rng, spec, p)
    steps = [_Step(first, rng.uniform(0.002, 0.01))]
    if rng.random() < 0.5:  # the model asked for a tool; answer with its result
        first.finish = "tool_calls" if spec.provider == "openai" else "tool_use"
        steps.append(_Step(None, rng.uniform(0.02, 0.3), tool="lookup_order"))
        steps.append(_Step(_plan_call(rng, spec, p), rng.uniform(0.001, 0.005)))
    return _Plan(steps, wrapper=_agent_wrapper(p, rng))


def _sc_retry(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    spec = _chat_model(rng, p)
    failures = 1 if rng.random() < 0.8 else 2
    steps: list[_Step] = []
    gap = rng.uniform(0.002, 0.02)
    for _ in range(failures):
        kind = _error_kind(rng, (("rate_limit", 0.6), ("server", 0.4)))
        steps.append(_Step(_plan_call(rng, spec, p, error_kind=kind), gap, "retry"))
        gap = rng.uniform(1.0, 4.0) if kind == "rate_limit" else rng.uniform(0.3, 1.5)
        stats.retries += 1
        stats.retries_by[(p.name, spec.provider, spec.request_model)] += 1
    steps.append(_Step(_plan_call(rng, spec, p), gap))
    return _Plan(steps)


def _sc_fallback(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    a, b = (MODELS[k] for k in rng.choice(p.fallbacks))
    kind = _error_kind(rng)
    steps = [
        _Step(
            _plan_call(rng, a, p, error_kind=kind),
            rng.uniform(0.002, 0.01),
            f"fallback:{b.request_model}",
        ),
        _Step(_plan_call(rng, b, p), rng.uniform(0.005, 0.03)),
    ]
    stats.fallbacks += 1
    stats.fallback_pairs[(p.name, a.provider, a.request_model, b.provider, b.request_model)] += 1
    return _Plan(steps, wrapper=_agent_wrapper(p, rng))


def _sc_error(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    kind = _error_kind(rng)
    call = _plan_call(rng, _chat_model(rng, p), p, error_kind=kind)
    status = {"rate_limit": 429, "timeout": 504}.get(kind, 502)
    return _Plan([_Step(call, rng.uniform(0.002, 0.02))], http_status=status)


SCENARIOS: dict[str, Callable[[random.Random, ServiceProfile, DemoStats], _Plan]] = {
    "chat": _sc_chat,
    "completion": _sc_completion,
    "rag": _sc_rag,
    "ingest": _sc_ingest,
    "agent": _sc_agent,
    "retry": _sc_retry,
    "fallback": _sc_fallback,
    "error": _sc_error,
}


def _profile(service: ServiceProfile | str) -> ServiceProfile:
    if isinstance(service, ServiceProfile):
        return service
    try:
        return SERVICES[service]
    except KeyError:
        raise ValueError(f"unknown demo service {service!r}; known: {sorted(SERVICES)}") from None
