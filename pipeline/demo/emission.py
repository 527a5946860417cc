"""The spans and log records of one request (`generate_request`), in the GenAI semantic
conventions."""

from __future__ import annotations

import random
import time
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import Logger, LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from . import attribution
from .content import _messages, _output
from .profiles import ERRORS, DemoStats, ServiceProfile, TokenCounts, error_label
from .scenarios import SCENARIOS, _Call, _profile, _response_id, _weighted

_STACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/llm/client.py", line 88, in complete\n'
    "    response = self._client.chat.completions.create(**params)\n"
)


class _Emitter:
    """Emits the spans and log records of one request into `stats`."""

    __slots__ = ("conversation", "logger", "profile", "rng", "stats", "tracer")

    def __init__(
        self,
        tracer: Tracer,
        logger: Logger | None,
        rng: random.Random,
        profile: ServiceProfile,
        stats: DemoStats,
    ) -> None:
        self.tracer = tracer
        self.logger = logger
        self.rng = rng
        self.profile = profile
        self.stats = stats
        self.conversation = ""  # gen_ai.conversation.id on the request's LLM spans

    def log(
        self,
        ctx: Context,
        t_ns: int,
        severity: SeverityNumber,
        body: str,
        attributes: dict[str, Any],
    ) -> None:
        if self.logger is None:
            return
        self.logger.emit(
            LogRecord(
                timestamp=t_ns,
                context=ctx,
                severity_text=severity.name,
                severity_number=severity,
                body=body,
                attributes=attributes,
            )
        )
        self.stats.log_records += 1
        self.stats.logs_by_severity[severity.name] += 1

    def span(
        self,
        name: str,
        ctx: Context | None,
        start_ns: int,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> Span:
        self.stats.spans += 1
        return self.tracer.start_span(
            name, context=ctx, kind=kind, attributes=attributes, start_time=start_ns
        )

    def llm(self, parent: Context, call: _Call, start_ns: int, next_action: str = "") -> int:
        """Emit one LLM span starting at `start_ns`; returns its end time.

        `next_action` says what the application does after a failed call ("retry",
        "fallback:<model>" or "" when it gives up), for the log record.
        """
        spec, stats, rng = call.spec, self.stats, self.rng
        end_ns = start_ns + int(call.duration_s * 1e9)
        attrs: dict[str, Any] = {
            "gen_ai.request.model": spec.request_model,
            "server.address": spec.server_address,
            "server.port": 443,
        }
        if self.conversation:
            attrs["gen_ai.conversation.id"] = self.conversation
        if call.legacy:
            attrs["gen_ai.system"] = spec.provider
        else:
            attrs["gen_ai.operation.name"] = spec.operation
            attrs["gen_ai.provider.name"] = spec.provider
        if call.max_tokens:
            attrs["gen_ai.request.max_tokens"] = call.max_tokens
        if call.temperature is not None:
            attrs["gen_ai.request.temperature"] = call.temperature
        if spec.operation == "embeddings":
            attrs["gen_ai.request.encoding_formats"] = ("float",)
        ok = not call.error_kind
        if ok:
            attrs["gen_ai.response.model"] = spec.response_model
            if spec.id_prefix:
                attrs["gen_ai.response.id"] = _response_id(rng, spec)
            if call.finish:
                attrs["gen_ai.response.finish_reasons"] = (call.finish,)
            if call.legacy:
                attrs["gen_ai.usage.prompt_tokens"] = call.input_tokens
                attrs["gen_ai.usage.completion_tokens"] = call.output_tokens
            else:
                attrs["gen_ai.usage.input_tokens"] = call.input_tokens
                if spec.operation != "embeddings":
                    attrs["gen_ai.usage.output_tokens"] = call.output_tokens
                else:
                    attrs["gen_ai.embeddings.dimension.count"] = 1536
                if call.cache_read or spec.cached_prefix[1]:
                    attrs["gen_ai.usage.cache_read.input_tokens"] = call.cache_read
                if spec.cache_writes:
                    attrs["gen_ai.usage.cache_creation.input_tokens"] = call.cache_creation
                if spec.reasoning:
                    attrs["gen_ai.usage.reasoning.output_tokens"] = call.reasoning
            if call.ttft_s is not None and call.ttft_as_attribute:
                attrs["gen_ai.response.time_to_first_chunk"] = round(call.ttft_s, 6)
        elif call.error_type_attr:
            attrs["error.type"] = call.error_type_attr
        c = call.content
        if c is not None and not call.legacy:
            attrs["gen_ai.input.messages"] = _messages(self.profile.system_prompt, c.prompt)
            if ok:
                attrs["gen_ai.output.messages"] = _output(c.answer, call.finish)
        span = self.span(
            f"{spec.operation} {spec.request_model}", parent, start_ns, SpanKind.CLIENT, attrs
        )
        stats.llm_spans += 1
        t = stats.token_counts(spec.request_model)
        key = (self.profile.name, spec.operation, spec.provider, spec.request_model)
        series = stats.tokens_by_series.get(key)
        if series is None:
            series = stats.tokens_by_series[key] = TokenCounts()
        for tc in (t, series):
            tc.calls += 1
            tc.input += call.input_tokens
            tc.output += call.output_tokens
            tc.cache_read += call.cache_read
            tc.cache_creation += call.cache_creation
            tc.reasoning += call.reasoning
        if call.legacy:
            stats.legacy_convention += 1
            stats.legacy_by_model[spec.request_model] += 1
        if c is not None:
            if call.legacy:
                span.add_event(
                    "gen_ai.content.prompt",
                    {"gen_ai.prompt": _messages(self.profile.system_prompt, c.prompt)},
                    timestamp=start_ns,
                )
                if ok:
                    span.add_event(
                        "gen_ai.content.completion",
                        {"gen_ai.completion": _output(c.answer, call.finish)},
                        timestamp=end_ns,
                    )
            # A failed call has no completion (which may echo the address).
            emails = c.prompt_emails + (c.answer_emails if ok else 0)
            if emails:
                stats.pii["email"] += emails
            if c.prompt_phones:
                stats.pii["phone"] += c.prompt_phones
        ctx = trace.set_span_in_context(span, parent)
        log_attrs: dict[str, Any] = {
            "gen_ai.provider.name": spec.provider,
            "gen_ai.request.model": spec.request_model,
            "duration_ms": round(call.duration_s * 1000, 1),
        }
        if ok:
            if not spec.priced:
                stats.unpriced += 1
            if call.ttft_s is not None:
                stats.streamed += 1
                stats.streamed_by_model[spec.request_model] += 1
                first_ns = start_ns + int(call.ttft_s * 1e9)
                if not call.ttft_as_attribute:
                    stats.ttft_from_events += 1
                span.add_event("gen_ai.choice.chunk", timestamp=first_ns)
                step = (end_ns - first_ns) // 4
                for i in (1, 2, 3):
                    span.add_event("gen_ai.choice.chunk", timestamp=first_ns + i * step)
            log_attrs["gen_ai.response.model"] = spec.response_model
            log_attrs["gen_ai.usage.input_tokens"] = call.input_tokens
            log_attrs["gen_ai.usage.output_tokens"] = call.output_tokens
            self.log(ctx, end_ns, SeverityNumber.INFO, "llm call completed", log_attrs)
        else:
            exc_type, status, message = ERRORS[spec.provider][call.error_kind]
            label = error_label(exc_type, call.error_type_attr)
            stats.errors[label] += 1
            stats.errors_by_model[spec.request_model] += 1
            exc_attrs = {
                "exception.type": exc_type,
                "exception.message": message,
                "exception.stacktrace": _STACK + f"{exc_type}: {message}\n",
            }
            span.add_event("exception", exc_attrs, timestamp=end_ns)
            span.set_status(Status(StatusCode.ERROR, message))
            log_attrs["error.type"] = label
            log_attrs["exception.type"] = exc_type
            if status is not None:
                log_attrs["http.response.status_code"] = status
            if next_action == "retry":
                self.log(ctx, end_ns, SeverityNumber.WARN, "llm call failed, retrying", log_attrs)
            elif next_action.startswith("fallback:"):
                log_attrs["fallback.model"] = next_action.split(":", 1)[1]
                self.log(
                    ctx, end_ns, SeverityNumber.WARN, "llm call failed, falling back", log_attrs
                )
            else:
                body = f"llm call failed: {message}"
                if self.logger is not None and c is not None and c.email and rng.random() < 0.5:
                    body += f" (customer {c.email})"
                    stats.pii_in_logs["email"] += 1
                self.log(ctx, end_ns, SeverityNumber.ERROR, body, log_attrs)
        span.end(end_time=end_ns)
        return end_ns


# --------------------------------------------------------------------------------------------
# Scenarios: each returns the LLM calls of a request with what separates them


def generate_request(
    tracer: Tracer,
    logger: Logger | None,
    rng: random.Random,
    *,
    service: ServiceProfile | str = "chat-api",
    stats: DemoStats | None = None,
    end_ns: int | None = None,
    scenario: str | None = None,
) -> DemoStats:
    """Emit the spans (and log records, when `logger` is given) of one request.

    The request ends at `end_ns` (default: now) and its spans are laid out backwards from
    there. `scenario` forces one of `SCENARIOS`; by default it is drawn from the service's
    mix. Updates and returns `stats` (a new `DemoStats` when None).
    """
    profile = _profile(service)
    if stats is None:
        stats = DemoStats()
    name = scenario or _weighted(rng, profile.scenarios)
    plan = SCENARIOS[name](rng, profile, stats)
    stats.requests += 1
    stats.requests_by_service[profile.name] += 1
    stats.scenarios[name] += 1

    head_ns = 500_000  # request parsing before the first child span
    tail_s = rng.uniform(0.001, 0.01)
    total_s = (
        head_ns / 1e9
        + tail_s
        + sum(s.gap_s + (s.call.duration_s if s.call is not None else 0.0) for s in plan.steps)
    )
    end = time.time_ns() if end_ns is None else end_ns
    start = end - int(total_s * 1e9)
    em = _Emitter(tracer, logger, rng, profile, stats)
    who = attribution.draw(profile.name, stats.requests)
    em.conversation = who.conversation
    method_route = f"POST {profile.route}"
    http = em.span(
        method_route,
        None,
        start,
        SpanKind.SERVER,
        {
            "http.request.method": "POST",
            "http.route": profile.route,
            "url.path": profile.route,
            "url.scheme": "https",
            "server.address": f"{profile.name}.internal",
            "network.protocol.version": "1.1",
            "user_agent.original": "acme-web/4.2",
            **who.request_attributes(),
        },
    )
    ctx = trace.set_span_in_context(http)
    wrapper: Span | None = None
    if plan.wrapper is not None:
        wname, wattrs = plan.wrapper
        wrapper = em.span(wname, ctx, start + head_ns // 2, SpanKind.INTERNAL, wattrs)
        ctx = trace.set_span_in_context(wrapper, ctx)
    t = start + head_ns
    for step in plan.steps:
        gap_ns = int(step.gap_s * 1e9)
        if step.call is None:
            tool = em.span(
                f"execute_tool {step.tool}",
                ctx,
                t + gap_ns // 20,
                SpanKind.INTERNAL,
                {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": step.tool},
            )
            tool.end(end_time=t + gap_ns - gap_ns // 20)
            t += gap_ns
        else:
            t = em.llm(ctx, step.call, t + gap_ns, step.next_action)
    failed = plan.http_status >= 400
    if wrapper is not None:
        if failed:
            wrapper.set_status(Status(StatusCode.ERROR))
        wrapper.end(end_time=t + 200_000)
    http.set_attribute("http.response.status_code", plan.http_status)
    if plan.http_status >= 500:
        http.set_status(Status(StatusCode.ERROR))
    http.end(end_time=end)
    return stats
