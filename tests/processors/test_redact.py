"""redact: secrets and PII out of real OTLP spans and logs, with exact outputs and counts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2

from pipeline.model import LogBatch, MetricBatch, TraceBatch, any_value
from pipeline.processors.normalize import normalize
from pipeline.processors.redact import RedactConfig, Redactor, is_card_number, luhn_valid
from tests.helpers.otlp_build import add_attrs, set_value

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN_ID = bytes.fromhex("00f067aa0ba902b7")

# Well-known test values, built from parts so this file holds no literal secret.
OPENAI_KEY = "sk-" + "proj-" + "Xy12AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-ab"
OPENAI_LEGACY = "sk-" + "T3BlbkFJ" + "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0"
ANTHROPIC_KEY = "sk-" + "ant-api03-" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEfGh"
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"
GOOGLE_KEY = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
GITHUB_TOKEN = "ghp_" + "abcdefghijklmnopqrstuvwxyz0123456789"
GITHUB_PAT = "github_pat_" + "11ABCDEFG0abcdefghijklmnopqrstuvwxyz"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"


# -- builders: real OTLP messages --------------------------------------------------------------


def attrs_of(attrs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in attrs}


def trace_batch(
    attributes: dict[str, Any],
    events: dict[str, dict[str, Any]] | None = None,
    resource: dict[str, Any] | None = None,
    name: str = "chat gpt-4o",
    status_message: str = "",
) -> TraceBatch:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    add_attrs(rs.resource.attributes, {"service.name": "shop-bot", **(resource or {})})
    span = rs.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = TRACE_ID, SPAN_ID, name
    span.start_time_unix_nano, span.end_time_unix_nano = (
        1_700_000_000_000_000_000,
        1_700_000_001_000_000_000,
    )
    add_attrs(span.attributes, attributes)
    for ev_name, ev_attrs in (events or {}).items():
        ev = span.events.add()
        ev.name = ev_name
        add_attrs(ev.attributes, ev_attrs)
    if status_message:
        span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        span.status.message = status_message
    return normalize(TraceBatch(req, raw=req.SerializeToString()))


def only_span(batch: TraceBatch) -> Any:
    return batch.request.resource_spans[0].scope_spans[0].spans[0]


class Counts:
    """Collects on_redact calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, kind: str, n: int) -> None:
        self.calls.append((kind, n))

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k, n in self.calls:
            out[k] = out.get(k, 0) + n
        return out


def redact_value(value: str, config: RedactConfig | None = None) -> tuple[str, dict[str, int]]:
    """Redact `value` as a span attribute (the real path); the result and the counts."""
    counts = Counts()
    batch = trace_batch({"input.value": value})
    Redactor(config, on_redact=counts)(batch)
    out = attrs_of(only_span(batch).attributes)["input.value"]
    assert batch.modified == (out != value)
    return out, counts.totals()


# -- each type, exact output -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "kind", "n"),
    [
        # email
        ("mail jane.doe@example.com now", "mail [REDACTED:email] now", "email", 1),
        (
            "j+tag@sub.example.co.uk, X_Y@Example.ORG.",
            "[REDACTED:email], [REDACTED:email].",
            "email",
            2,
        ),
        ("mailto:jane@example.com", "mailto:[REDACTED:email]", "email", 1),
        ("<jane@example.io>", "<[REDACTED:email]>", "email", 1),
        # phone: international and US formats
        ("call +1 415 555 0123 now", "call [REDACTED:phone] now", "phone", 1),
        ("+44 20 7946 0958", "[REDACTED:phone]", "phone", 1),
        ("+33 1 23 45 67 89.", "[REDACTED:phone].", "phone", 1),
        ("tel:+14155550123", "tel:[REDACTED:phone]", "phone", 1),
        ("+1 (415) 555-0123", "[REDACTED:phone]", "phone", 1),
        ("(415) 555-0123 or 415-555-0123", "[REDACTED:phone] or [REDACTED:phone]", "phone", 2),
        ("415.555.0123, 415 555 0123", "[REDACTED:phone], [REDACTED:phone]", "phone", 2),
        ("1-800-555-0199", "[REDACTED:phone]", "phone", 1),
        # credit cards: Luhn-valid, with or without separators
        (
            "card 4111 1111 1111 1111 exp 12/27",
            "card [REDACTED:credit_card] exp 12/27",
            "credit_card",
            1,
        ),
        ("5555-5555-5555-4444", "[REDACTED:credit_card]", "credit_card", 1),
        ("pay with 4012888888881881.", "pay with [REDACTED:credit_card].", "credit_card", 1),
        ("amex 3782 822463 10005", "amex [REDACTED:credit_card]", "credit_card", 1),
        ("6011111111111117", "[REDACTED:credit_card]", "credit_card", 1),
        ("4111 1111 1111 1111 12", "[REDACTED:credit_card] 12", "credit_card", 1),
        ("mc 2223 0031 2200 3222", "mc [REDACTED:credit_card]", "credit_card", 1),
        ("diners 3056 930902 5904", "diners [REDACTED:credit_card]", "credit_card", 1),
        ("jcb 3530111333300000", "jcb [REDACTED:credit_card]", "credit_card", 1),
        # api keys
        (f"key {OPENAI_KEY} end", "key [REDACTED:api_key] end", "api_key", 1),
        (f"{OPENAI_LEGACY}", "[REDACTED:api_key]", "api_key", 1),
        (f"x-api-key={ANTHROPIC_KEY}", "x-api-key=[REDACTED:api_key]", "api_key", 1),
        (f"id {AWS_KEY}", "id [REDACTED:api_key]", "api_key", 1),
        (f"?key={GOOGLE_KEY}&q=1", "?key=[REDACTED:api_key]&q=1", "api_key", 1),
        (f"{GITHUB_TOKEN} {GITHUB_PAT}", "[REDACTED:api_key] [REDACTED:api_key]", "api_key", 2),
        ("api_key=abc123def456ghi", "api_key=[REDACTED:api_key]", "api_key", 1),
        ('{"apiKey": "k9f8e7d6c5b4"}', '{"apiKey": "[REDACTED:api_key]"}', "api_key", 1),
        ("X-Api-Key: 12345678abcd", "X-Api-Key: [REDACTED:api_key]", "api_key", 1),
        (f"OPENAI_API_KEY={OPENAI_LEGACY}", "OPENAI_API_KEY=[REDACTED:api_key]", "api_key", 1),
        (
            "ANTHROPIC_API_KEY='q1w2e3r4t5y6'",
            "ANTHROPIC_API_KEY='[REDACTED:api_key]'",
            "api_key",
            1,
        ),
        # bearer tokens: the scheme stays
        (
            f"Authorization: Bearer {JWT}",
            "Authorization: Bearer [REDACTED:bearer_token]",
            "bearer_token",
            1,
        ),
        (
            "authorization: bearer abcdef1234",
            "authorization: bearer [REDACTED:bearer_token]",
            "bearer_token",
            1,
        ),
        # passwords in URLs: scheme, user and host stay
        (
            "postgres://admin:s3cr3t@db.internal:5432/app",
            "postgres://admin:[REDACTED:url_password]@db.internal:5432/app",
            "url_password",
            1,
        ),
        (
            "redis://:hunter2@cache:6379/0",
            "redis://:[REDACTED:url_password]@cache:6379/0",
            "url_password",
            1,
        ),
        (
            "https://user:p@ss@host.example/x",
            "https://user:[REDACTED:url_password]@host.example/x",
            "url_password",
            1,
        ),
        (
            "amqp+ssl://guest:guest@rabbit",
            "amqp+ssl://guest:[REDACTED:url_password]@rabbit",
            "url_password",
            1,
        ),
    ],
)
def test_each_type_exact(text: str, expected: str, kind: str, n: int) -> None:
    out, counts = redact_value(text)
    assert out == expected
    assert counts == {kind: n}


def test_every_type_in_one_value_counted_exactly() -> None:
    text = (
        "Contact jane@example.com or bob@example.org, +1 415 555 0123; card 4111-1111-1111-1111;"
        f" key {OPENAI_KEY}; Authorization: Bearer {JWT}; db postgres://app:pw123@db/x"
    )
    out, counts = redact_value(text)
    assert out == (
        "Contact [REDACTED:email] or [REDACTED:email], [REDACTED:phone]; card"
        " [REDACTED:credit_card]; key [REDACTED:api_key]; Authorization: Bearer"
        " [REDACTED:bearer_token]; db postgres://app:[REDACTED:url_password]@db/x"
    )
    assert counts == {
        "email": 2,
        "phone": 1,
        "credit_card": 1,
        "api_key": 1,
        "bearer_token": 1,
        "url_password": 1,
    }


# -- no false positives ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "input tokens 1234, output 56789, total 4096",
        "4bf92f3577b34da6a3ce929d0e0e4736",  # trace id
        "00f067aa0ba902b7",  # span id
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
        "1732259696 1732259696123 1732259696123456 1732259696123456789",  # unix s/ms/µs/ns
        "2024-08-06T12:34:56.123456+00:00 and 2024-08-06 12:34:56",
        "v1.2.3 3.11.7 10.0.19041.1288 1.2.3-beta.4 192.168.100.200",
        "gpt-4o-2024-08-06 claude-3-5-sonnet-20241022 gemini-1.5-pro-002 o1-mini",
        "550e8400-e29b-41d4-a716-446655440000",  # uuid
        "chatcmpl-AbC123xYz456 msg_01XFDUDYJgAACzvnptvVoYEL",  # response ids
        "order 58213 shipped; $1,234,567.89; 123456789; +12345; score +1234567",
        "4111111111111112 5555555555554445",  # Luhn-invalid 16 digits
        "1234567812345670",  # Luhn-valid, but no card network starts with 1
        "7992739871300008",  # Luhn-valid, no card network starts with 7
        "4111 1111-1111 1111",  # mixed separators: not how a card is written
        "years 2021 2022 2023 2024",  # card-shaped groups, not an issuer prefix
        "12345678901234567890123",  # too long for a card
        "@mention @app.route('/x') icon@2x.png user@localhost pkg@latest foo@1.2.3",
        "sk-learn, risk-averse-strategy-for-the-long-term, task-0123456789abcdefghijkl",
        "api_key=None; api_key = settings.OPENAI_API_KEY; apikey: str; my api key is safe",
        "the bearer instruments; Bearer token",
        "https://example.com:443/path?q=1 http://[::1]:8080/ ftp://host/dir",
        "[REDACTED:email] [REDACTED:api_key] [REDACTED:phone]",
        "AKIA only, ghp_short, AIza",
    ],
)
def test_no_false_positives(text: str) -> None:
    out, counts = redact_value(text)
    assert out == text
    assert counts == {}


def test_luhn_and_card_shape() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")
    assert luhn_valid("1234567812345670")  # valid, yet kept above: no issuer starts with 1
    assert luhn_valid("7992739871300008")
    assert is_card_number("4111-1111-1111-1111")
    assert not is_card_number("4111-1111 1111-1111")
    assert not is_card_number("41 11 11 11 11 11 11 11")
    assert not is_card_number("411111111111")  # 12 digits
    assert not is_card_number("41111111111111111111")  # 20 digits


def test_phone_inside_a_rejected_card_candidate_is_still_found() -> None:
    # 13 digits starting with 5 (even Luhn-valid ones) look like a card at first; not grouped as
    # a card is written, so the phone number in them is found.
    assert luhn_valid("5551234567888")
    out, counts = redact_value("555-123-4567 888")
    assert out == "[REDACTED:phone] 888"
    assert counts == {"phone": 1}


def test_json_escapes_are_boundaries_and_json_stays_valid() -> None:
    content = "Hi\njane@example.com\ncall 415-555-0123\tcard 4111111111111111\nkey " + OPENAI_KEY
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": content}]}])
    out, counts = redact_value(messages)
    assert json.loads(out)[0]["parts"][0]["content"] == (
        "Hi\n[REDACTED:email]\ncall [REDACTED:phone]\tcard [REDACTED:credit_card]\nkey"
        " [REDACTED:api_key]"
    )
    assert counts == {"email": 1, "phone": 1, "credit_card": 1, "api_key": 1}


def test_redaction_is_idempotent() -> None:
    once, _ = redact_value(f"jane@example.com {OPENAI_KEY} postgres://a:b1@h")
    twice, counts = redact_value(once)
    assert twice == once
    assert counts == {}


# -- where it looks: every convention, nested values, other span fields -------------------------


def test_prompts_and_completions_in_every_convention() -> None:
    email = "jane@example.com"
    otel_input = json.dumps([{"role": "user", "parts": [{"type": "text", "content": email}]}])
    otel_output = json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": "+44 20 7946 0958"}]}]
    )
    counts = Counts()
    batch = trace_batch(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 4111111111111111,  # an int: never scanned
            "gen_ai.usage.output_tokens": 41,
            "gen_ai.input.messages": otel_input,
            "gen_ai.output.messages": otel_output,
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": f"I am {email}",
            "gen_ai.completion.0.content": "Your card 4111 1111 1111 1111 is on file",
            "llm.input_messages.0.message.content": f"token {OPENAI_KEY}",
            "input.value": f'{{"messages": [{{"content": "{email}"}}]}}',
            "output.value": "Reach us at (415) 555-0123",
            "gen_ai.request.stop_sequences": ["END", f"mail {email}"],
            "llm.invocation_parameters": {"user": email, "temperature": 0.2, "n": 1},
        },
        events={
            "gen_ai.content.prompt": {"gen_ai.prompt": f"I am {email}"},
            "gen_ai.content.completion": {"gen_ai.completion": "ok, +1 415 555 0123"},
        },
    )
    call_before = batch.calls[0]
    (model, provider, tokens) = (
        call_before.request_model,
        call_before.provider,
        call_before.input_tokens,
    )
    Redactor(on_redact=counts)(batch)
    span = only_span(batch)
    a = attrs_of(span.attributes)
    assert json.loads(a["gen_ai.input.messages"])[0]["parts"][0]["content"] == "[REDACTED:email]"
    assert json.loads(a["gen_ai.output.messages"])[0]["parts"][0]["content"] == "[REDACTED:phone]"
    assert a["gen_ai.prompt.0.role"] == "user"
    assert a["gen_ai.prompt.0.content"] == "I am [REDACTED:email]"
    assert a["gen_ai.completion.0.content"] == "Your card [REDACTED:credit_card] is on file"
    assert a["llm.input_messages.0.message.content"] == "token [REDACTED:api_key]"
    assert a["input.value"] == '{"messages": [{"content": "[REDACTED:email]"}]}'
    assert a["output.value"] == "Reach us at [REDACTED:phone]"
    assert a["gen_ai.request.stop_sequences"] == ["END", "mail [REDACTED:email]"]
    assert a["llm.invocation_parameters"] == {
        "user": "[REDACTED:email]",
        "temperature": 0.2,
        "n": 1,
    }
    # model, provider and token attributes are untouched
    assert a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert a["gen_ai.usage.input_tokens"] == 4111111111111111
    assert a["gen_ai.usage.output_tokens"] == 41
    assert (model, provider, tokens) == ("gpt-4o", "openai", 4111111111111111)
    assert [attrs_of(ev.attributes) for ev in span.events] == [
        {"gen_ai.prompt": "I am [REDACTED:email]"},
        {"gen_ai.completion": "ok, [REDACTED:phone]"},
    ]
    assert counts.totals() == {"email": 6, "phone": 3, "credit_card": 1, "api_key": 1}
    assert sorted(counts.calls) == sorted(counts.totals().items())  # one callback per type
    assert batch.modified


def test_resource_name_links_and_status_message() -> None:
    batch = trace_batch(
        {"http.url": "https://svc:tok3n@api.internal/v1"},
        resource={"process.command_line": f"python app.py --api-key={OPENAI_LEGACY}"},
        name="GET /users/jane@example.com",
        status_message=f"Incorrect API key provided: {OPENAI_LEGACY}",
    )
    span = only_span(batch)
    link = span.links.add()
    add_attrs(link.attributes, {"note": "from bob@example.org"})
    # the received bytes carry the link too
    batch = TraceBatch(batch.request, batch.calls, raw=batch.request.SerializeToString())
    counts = Counts()
    Redactor(on_redact=counts)(batch)
    res = attrs_of(batch.request.resource_spans[0].resource.attributes)
    assert res == {
        "service.name": "shop-bot",
        "process.command_line": "python app.py --api-key=[REDACTED:api_key]",
    }
    assert span.name == "GET /users/[REDACTED:email]"
    assert attrs_of(span.attributes) == {
        "http.url": "https://svc:[REDACTED:url_password]@api.internal/v1"
    }
    assert attrs_of(span.links[0].attributes) == {"note": "from [REDACTED:email]"}
    assert span.status.message == "Incorrect API key provided: [REDACTED:api_key]"
    assert counts.totals() == {"api_key": 2, "email": 2, "url_password": 1}


def test_clean_batch_is_not_modified_and_bytes_are_unchanged() -> None:
    batch = trace_batch(
        {
            "gen_ai.request.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1234,
            "input.value": "What is the capital of France? Answer in 3 words.",
        },
        events={"gen_ai.choice": {"index": 0, "finish_reason": "stop"}},
    )
    before = batch.request.SerializeToString()
    counts = Counts()
    Redactor(on_redact=counts)(batch)
    assert not batch.modified
    assert batch.request.SerializeToString() == before
    assert counts.calls == []


def test_every_span_not_only_llm_calls() -> None:
    batch = trace_batch({"http.request.header.authorization": [f"Bearer {JWT}"]})
    assert batch.calls == []
    Redactor()(batch)
    assert attrs_of(only_span(batch).attributes) == {
        "http.request.header.authorization": ["Bearer [REDACTED:bearer_token]"]
    }
    assert batch.modified


# -- logs --------------------------------------------------------------------------------------


def log_batch(body: Any, attributes: dict[str, Any] | None = None) -> LogBatch:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    add_attrs(rl.resource.attributes, {"service.name": "shop-bot"})
    rec = rl.scope_logs.add().log_records.add()
    set_value(rec.body, body)
    add_attrs(rec.attributes, attributes or {})
    return LogBatch(req, raw=req.SerializeToString())


def only_record(batch: LogBatch) -> Any:
    return batch.request.resource_logs[0].scope_logs[0].log_records[0]


def test_log_string_body_and_attributes() -> None:
    batch = log_batch(
        "user jane@example.com paid with 4111 1111 1111 1111",
        {"gen_ai.prompt": "call me at 415-555-0123", "attempt": 2},
    )
    counts = Counts()
    Redactor(on_redact=counts)(batch)
    rec = only_record(batch)
    assert rec.body.string_value == "user [REDACTED:email] paid with [REDACTED:credit_card]"
    assert attrs_of(rec.attributes) == {
        "gen_ai.prompt": "call me at [REDACTED:phone]",
        "attempt": 2,
    }
    assert counts.totals() == {"email": 1, "credit_card": 1, "phone": 1}
    assert batch.modified


def test_log_kvlist_body_nested() -> None:
    batch = log_batch(
        {
            "role": "user",
            "content": f"my key is {OPENAI_KEY}",
            "tool_calls": [{"arguments": '{"email": "jane@example.com"}'}, 7],
            "index": 0,
        }
    )
    counts = Counts()
    Redactor(on_redact=counts)(batch)
    assert any_value(only_record(batch).body) == {
        "role": "user",
        "content": "my key is [REDACTED:api_key]",
        "tool_calls": [{"arguments": '{"email": "[REDACTED:email]"}'}, 7],
        "index": 0,
    }
    assert counts.totals() == {"api_key": 1, "email": 1}


def test_clean_log_is_not_modified() -> None:
    batch = log_batch("request served in 123 ms", {"http.status_code": 200})
    Redactor()(batch)
    assert not batch.modified


# -- configuration -----------------------------------------------------------------------------


def test_drop_attributes_exact_and_glob() -> None:
    cfg = RedactConfig(drop_attributes=["gen_ai.prompt.*", "llm.input_messages.*", "secret"])
    batch = trace_batch(
        {
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "hello",
            "gen_ai.usage.prompt_tokens": 12,
            "llm.input_messages.0.message.content": "hi",
            "secret": "x",
            "secret.other": "kept",
            "gen_ai.completion.0.content": "mail jane@example.com",
        },
        events={"gen_ai.content.prompt": {"secret": "y", "gen_ai.prompt.1.content": "z"}},
    )
    counts = Counts()
    Redactor(cfg, on_redact=counts)(batch)
    span = only_span(batch)
    assert attrs_of(span.attributes) == {
        "gen_ai.usage.prompt_tokens": 12,
        "secret.other": "kept",
        "gen_ai.completion.0.content": "mail [REDACTED:email]",
    }
    assert attrs_of(span.events[0].attributes) == {}
    assert counts.totals() == {"dropped": 6, "email": 1}
    assert batch.modified


def test_drop_attributes_on_logs() -> None:
    batch = log_batch("body", {"gen_ai.prompt": "p", "keep": "k"})
    counts = Counts()
    Redactor(RedactConfig(drop_attributes=["gen_ai.prompt"]), on_redact=counts)(batch)
    assert attrs_of(only_record(batch).attributes) == {"keep": "k"}
    assert counts.calls == [("dropped", 1)]


def test_types_as_mapping_turns_one_off() -> None:
    text = "jane@example.com 415-555-0123"
    out, counts = redact_value(text, RedactConfig(types={"phone": False}))
    assert out == "[REDACTED:email] 415-555-0123"
    assert counts == {"email": 1}


def test_types_as_set_is_exactly_those() -> None:
    text = f"jane@example.com 415-555-0123 {OPENAI_KEY}"
    out, counts = redact_value(text, RedactConfig(types={"api_key"}))
    assert out == "jane@example.com 415-555-0123 [REDACTED:api_key]"
    assert counts == {"api_key": 1}


def test_card_off_still_finds_phone() -> None:
    out, counts = redact_value("555-123-4567 888", RedactConfig(types={"credit_card": False}))
    assert out == "[REDACTED:phone] 888"
    assert counts == {"phone": 1}


def test_extra_patterns() -> None:
    cfg = RedactConfig(
        extra_patterns={
            "employee_id": r"\bEMP-\d{6}\b",
            "ticket": r"(?i)\b(ticket)-(\d+)\b",  # flags and groups are fine
        }
    )
    out, counts = redact_value("EMP-123456 filed TICKET-42 for jane@example.com; EMP-12", cfg)
    assert out == "[REDACTED:employee_id] filed [REDACTED:ticket] for [REDACTED:email]; EMP-12"
    assert counts == {"employee_id": 1, "ticket": 1, "email": 1}


def test_extra_patterns_apply_to_short_values() -> None:
    out, counts = redact_value("E7", RedactConfig(extra_patterns={"code": r"E\d"}))
    assert (out, counts) == ("[REDACTED:code]", {"code": 1})


def test_disabled_changes_nothing() -> None:
    batch = trace_batch({"input.value": "jane@example.com"})
    counts = Counts()
    Redactor(RedactConfig(enabled=False), on_redact=counts)(batch)
    assert attrs_of(only_span(batch).attributes) == {"input.value": "jane@example.com"}
    assert not batch.modified and counts.calls == []


def test_metric_batches_pass_through() -> None:
    b = MetricBatch(ExportMetricsServiceRequest())
    assert Redactor()(b) is b


def test_defaults() -> None:
    cfg = RedactConfig()
    cfg.validate()
    assert cfg.enabled is True
    assert cfg.enabled_types() == {
        "email",
        "phone",
        "credit_card",
        "api_key",
        "bearer_token",
        "url_password",
        "basic_auth",
        "aws_secret_key",
    }
    assert cfg.extra_patterns == {} and cfg.drop_attributes == []


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (RedactConfig(extra_patterns={"badre": "([a-z"}), r"extra_patterns\.badre: invalid regex"),
        (RedactConfig(extra_patterns={"empty": "x*"}), r"extra_patterns\.empty: matches the empty"),
        (
            RedactConfig(extra_patterns={"email": "x"}),
            r"extra_patterns\.email: the name of a built",
        ),
        (RedactConfig(extra_patterns={"Bad-Name": "x"}), r"extra_patterns\.Bad-Name: name must"),
        (
            RedactConfig(extra_patterns={"blank": ""}),
            r"extra_patterns\.blank: expected a non-empty",
        ),
        (RedactConfig(types={"ssn": True}), r"types: unknown \['ssn'\]"),
        (RedactConfig(types={"email", "iban"}), r"types: unknown \['iban'\]"),
        (RedactConfig(drop_attributes=[""]), "drop_attributes: expected non-empty keys"),
    ],
)
def test_config_validation(cfg: RedactConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cfg.validate()
    with pytest.raises(ValueError, match=message):
        Redactor(cfg)


# -- adversarial input stays linear ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "+" + "1" * 50_000,
        "+1 " + "2 " * 50_000,
        "4 " * 50_000,
        "a" * 50_000 + "@",
        "a@" * 50_000,
        "api_key=" * 20_000,
        "a://" * 20_000 + "@",
        "555-" * 20_000,
        "\\n" * 50_000 + "jane@example.com",
    ],
)
def test_no_catastrophic_backtracking(text: str) -> None:
    r = Redactor()
    t = time.process_time()
    r.redact_text(text, {})
    assert time.process_time() - t < 2.0


# -- the '@'-anchored email search equals the combined regex ----------------------------------

_FRAGMENTS = [
    "a",
    "Z",
    "9",
    "_",
    "-",
    ".",
    "%",
    "+",
    " ",
    "\\n",
    "\\",
    '"',
    ":",
    "/",
    "é",
    "@",
    "@@",
    "bob",
    "jane.doe+tag",
    "x@y.io",
    "bob@mail.example.com",
    "icon@2x.png",
    "a@b.co",
    "@example.com",
    ".com",
    "-x.org",
    "a" * 70,
    "b" * 63 + "@q.de",
    "https://user:pw@host.io",
    "://",
    "sk-",
    OPENAI_KEY,
    AWS_KEY,
    "api_key=",
    "apiKey: ",
    "Bearer ",
    "Bearer abcdef123456",
    "+44 20 7946 0958",
    "(415) 555-0123",
    "415-555-0123",
    "4111 1111 1111 1111",
    "4111111111111111",
    "378282246310005",
    "1-800-555-0199",
    "12345",
]


@settings(max_examples=400, deadline=None)
# an AWS key right before `@example.com`: api_key and email match at the same start, and the
# combined regex takes api_key (it comes first)
@example(parts=[AWS_KEY, "@example.com"], others={"api_key"})
@given(
    parts=st.lists(st.sampled_from(_FRAGMENTS), max_size=14),
    others=st.sets(
        st.sampled_from(["url_password", "api_key", "bearer_token", "credit_card", "phone"])
    ),
)
def test_the_anchored_email_search_equals_the_combined_regex(
    parts: list[str], others: set[str]
) -> None:
    from pipeline.processors.redact import patterns as redact_module

    text = "".join(parts)
    r = Redactor().scanner
    mask = redact_module._EMAIL | sum(redact_module._BIT[t] for t in others)
    want = [(m.span(), m.lastgroup, m.group()) for m in r._pattern(mask).finditer(text)]
    got = [(m.span(), m.lastgroup, m.group()) for m in r._matches(mask, text)]
    assert got == want


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # the international phone pattern takes up to 15 digits: it used to end inside the card
        # and leave its last 12 digits
        (
            "call +1 415 555 0123 4111 1111 1111 1111 now",
            "call [REDACTED:phone] [REDACTED:credit_card] now",
            {"phone": 1, "credit_card": 1},
        ),
        # a phone and a card with different separators are one rejected card candidate: the
        # card that starts inside it (and ends after it) used to be kept whole
        (
            "415-555-0123 4111 1111 1111 1111",
            "[REDACTED:phone] [REDACTED:credit_card]",
            {"phone": 1, "credit_card": 1},
        ),
        (
            "bob@example.com +44 20 7946 0958 4111111111111111",
            "[REDACTED:email] [REDACTED:phone] [REDACTED:credit_card]",
            {"email": 1, "phone": 1, "credit_card": 1},
        ),
    ],
)
def test_a_card_right_after_a_phone_number_is_redacted_whole(
    text: str, expected: str, counts: dict[str, int]
) -> None:
    out, got = redact_value(text)
    assert out == expected
    assert got == counts


AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        (
            "Authorization: Basic dXNlcjpwYXNzd29yZA==",  # user:password
            "Authorization: Basic [REDACTED:basic_auth]",
            "basic_auth",
        ),
        (
            "curl -H 'authorization: basic YWxhZGRpbjpvcGVuc2VzYW1l'",  # aladdin:opensesame
            "curl -H 'authorization: basic [REDACTED:basic_auth]'",
            "basic_auth",
        ),
        ("BASIC dTpw.", "BASIC [REDACTED:basic_auth].", "basic_auth"),  # u:p
        (
            f"aws_secret_access_key = {AWS_SECRET}",
            "aws_secret_access_key = [REDACTED:aws_secret_key]",
            "aws_secret_key",
        ),
        (
            f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n",
            "export AWS_SECRET_ACCESS_KEY=[REDACTED:aws_secret_key]\n",
            "aws_secret_key",
        ),
        (
            f'{{"aws_secret_access_key": "{AWS_SECRET}"}}',
            '{"aws_secret_access_key": "[REDACTED:aws_secret_key]"}',
            "aws_secret_key",
        ),
    ],
)
def test_basic_auth_and_aws_secret_key_exact(text: str, expected: str, kind: str) -> None:
    out, counts = redact_value(text)
    assert out == expected
    assert counts == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "the basic instructions cover basic concepts and Basic usage",
        "Basic dXNlcnBhc3N3b3Jk",  # base64 of `userpassword`: no `:`, not credentials
        "Basic bad!base64",
        "aws_secret_access_key = settings.AWS_SECRET; aws_secret_access_key=None",
        f"aws_secret_access_key={AWS_SECRET}EXTRA",  # 47 characters: not a secret key
    ],
)
def test_basic_auth_and_aws_secret_key_kept(text: str) -> None:
    out, counts = redact_value(text)
    assert out == text
    assert counts == {}


def test_log_event_name_is_scanned() -> None:
    req = log_batch("hello").request
    req.resource_logs[0].scope_logs[0].log_records[0].event_name = "signup jane@example.com"
    batch = LogBatch(req, raw=req.SerializeToString())
    counts = Counts()
    Redactor(on_redact=counts)(batch)
    assert only_record(batch).event_name == "signup [REDACTED:email]"
    assert counts.totals() == {"email": 1}
    assert batch.modified


def test_error_type_is_scanned_the_model_is_not() -> None:
    # a secret in error.type would become a metric label; the model name stays as it is
    batch = trace_batch(
        {"error.type": f"AuthError {OPENAI_KEY}", "gen_ai.request.model": "gpt-4o-2024-08-06"}
    )
    counts = Counts()
    Redactor(on_redact=counts)(batch)
    assert attrs_of(only_span(batch).attributes) == {
        "error.type": "AuthError [REDACTED:api_key]",
        "gen_ai.request.model": "gpt-4o-2024-08-06",
    }
    assert counts.totals() == {"api_key": 1}
