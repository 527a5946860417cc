"""OTLP/JSON as SDKs really write it, read by pipeline/receivers/decode.py.

What the Node.js exporter (exporter-trace-otlp-http / exporter-logs-otlp-http 0.223) sends,
captured below from the real SDK: 64-bit ints (`intValue`) as JSON numbers, timestamps as
decimal strings, enums (`kind`, `status.code`, `severityNumber`) as numbers, lower-case hex
IDs, `flags` 257, a whole-number double as `intValue`, and always a chunked body. Other
senders write the protobuf JSON mapping (ints as strings, the Collector's pdata) or enum names,
and hand-made senders upper-case hex IDs. Each variant must decode to the same request.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.model import TraceBatch
from pipeline.processors.normalize import normalize
from pipeline.processors.ttft import ttft
from pipeline.receivers.decode import decode
from tests.interop.capture import Capture, send

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
PARENT_ID = "eee19b7ec3c1b173"

# The protobuf JSON mapping's form (what the Collector writes): ints as strings, enum numbers.
CANONICAL_TRACES: dict[str, Any] = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "quirks"},
                    "spans": [
                        {
                            "traceId": TRACE_ID,
                            "spanId": SPAN_ID,
                            "parentSpanId": PARENT_ID,
                            "name": "chat gpt-4o",
                            "kind": 3,
                            "startTimeUnixNano": "1796400001000000000",
                            "endTimeUnixNano": "1796400002600000000",
                            "attributes": [
                                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                                {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "800"}},
                                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "150"}},
                            ],
                            "events": [
                                {
                                    "name": "gen_ai.choice.chunk",
                                    "timeUnixNano": "1796400001320000000",
                                }
                            ],
                            "status": {"code": 2, "message": "failed"},
                            "flags": 257,
                        }
                    ],
                }
            ],
        }
    ]
}
CANONICAL_LOGS: dict[str, Any] = {
    "resourceLogs": [
        {
            "scopeLogs": [
                {
                    "logRecords": [
                        {
                            "timeUnixNano": "1796400005100000000",
                            "severityNumber": 13,
                            "severityText": "WARN",
                            "body": {"stringValue": "hello"},
                            "traceId": TRACE_ID,
                            "spanId": SPAN_ID,
                            "flags": 1,
                        }
                    ]
                }
            ]
        }
    ]
}


def _span(d: dict[str, Any]) -> dict[str, Any]:
    span: dict[str, Any] = d["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    return span


def _record(d: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = d["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    return rec


def _attr(d: dict[str, Any], key: str) -> dict[str, Any]:
    value: dict[str, Any] = next(a for a in _span(d)["attributes"] if a["key"] == key)["value"]
    return value


def _ints_as_numbers(d: dict[str, Any]) -> None:  # Node.js
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
        v = _attr(d, key)
        v["intValue"] = int(v["intValue"])


def _times_as_numbers(d: dict[str, Any]) -> None:
    s = _span(d)
    for k in ("startTimeUnixNano", "endTimeUnixNano"):
        s[k] = int(s[k])
    s["events"][0]["timeUnixNano"] = int(s["events"][0]["timeUnixNano"])


def _enum_names(d: dict[str, Any]) -> None:
    s = _span(d)
    s["kind"] = "SPAN_KIND_CLIENT"
    s["status"]["code"] = "STATUS_CODE_ERROR"


def _upper_hex(d: dict[str, Any]) -> None:
    s = _span(d)
    for k in ("traceId", "spanId", "parentSpanId"):
        s[k] = s[k].upper()


def _no_parent(d: dict[str, Any]) -> None:  # a root span: Node sends no key, others ""
    _span(d)["parentSpanId"] = ""


QUIRKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "ints-as-numbers": _ints_as_numbers,
    "times-as-numbers": _times_as_numbers,
    "enum-names": _enum_names,
    "upper-case-hex-ids": _upper_hex,
}


def _traces(d: dict[str, Any]) -> Any:
    return decode("traces", json.dumps(d).encode(), "application/json")


@pytest.mark.parametrize("quirk", list(QUIRKS))
def test_trace_quirk_decodes_to_the_canonical_request(quirk: str) -> None:
    body = copy.deepcopy(CANONICAL_TRACES)
    QUIRKS[quirk](body)
    assert body != CANONICAL_TRACES  # the variant differs on the wire
    got = _traces(body)
    assert got == _traces(CANONICAL_TRACES)
    span = got.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_ID) and span.span_id == bytes.fromhex(SPAN_ID)
    assert span.kind == 3 and span.status.code == 2 and span.flags == 257
    assert span.start_time_unix_nano == 1796400001000000000
    [call] = normalize(TraceBatch(request=got)).calls
    assert (call.input_tokens, call.output_tokens, call.error_type) == (800, 150, "_OTHER")


def test_all_quirks_at_once() -> None:
    body = copy.deepcopy(CANONICAL_TRACES)
    for apply in QUIRKS.values():
        apply(body)
    assert _traces(body) == _traces(CANONICAL_TRACES)


def test_root_span_with_empty_parent_id() -> None:
    body = copy.deepcopy(CANONICAL_TRACES)
    _no_parent(body)
    span = _traces(body).resource_spans[0].scope_spans[0].spans[0]
    assert span.parent_span_id == b""
    del _span(body)["parentSpanId"]
    assert _traces(body).resource_spans[0].scope_spans[0].spans[0].parent_span_id == b""


def test_int64_beyond_double_precision_is_exact_as_string_and_number() -> None:
    big = 2**53 + 1  # a JSON reader going through a double would give 2**53
    for v in (str(big), big):
        body = copy.deepcopy(CANONICAL_TRACES)
        _attr(body, "gen_ai.usage.input_tokens")["intValue"] = v
        span = _traces(body).resource_spans[0].scope_spans[0].spans[0]
        got = next(a for a in span.attributes if a.key == "gen_ai.usage.input_tokens")
        assert got.value.int_value == big


def test_whole_number_double_sent_as_int_is_still_a_ttft() -> None:
    """JS has one number type: a TTFT of exactly 1 s goes out as `{"intValue": 1}`."""
    body = copy.deepcopy(CANONICAL_TRACES)
    _span(body)["events"] = []
    _span(body)["attributes"].append(
        {"key": "gen_ai.response.time_to_first_chunk", "value": {"intValue": 1}}
    )
    batch = ttft(normalize(TraceBatch(request=_traces(body))))
    [call] = batch.calls
    assert call.ttft_s == 1.0 and isinstance(call.ttft_s, float) and call.streaming


@pytest.mark.parametrize(
    "variant",
    [
        {"severityNumber": "SEVERITY_NUMBER_WARN"},
        {"timeUnixNano": 1796400005100000000},
        {"traceId": TRACE_ID.upper(), "spanId": SPAN_ID.upper()},
    ],
    ids=["enum-name", "time-as-number", "upper-case-hex-ids"],
)
def test_log_quirk_decodes_to_the_canonical_request(variant: dict[str, Any]) -> None:
    body = copy.deepcopy(CANONICAL_LOGS)
    _record(body).update(variant)
    got = decode("logs", json.dumps(body).encode(), "application/json")
    assert got == decode("logs", json.dumps(CANONICAL_LOGS).encode(), "application/json")
    rec = got.resource_logs[0].scope_logs[0].log_records[0]
    assert rec.severity_number == 13 and rec.trace_id == bytes.fromhex(TRACE_ID)


# -- the real Node.js exporters' bodies --------------------------------------------------------


def _without_ids(msg: Any) -> Any:
    """The request without its random IDs and its resource (the service names differ)."""
    m = copy.deepcopy(msg)
    for group in (*getattr(m, "resource_spans", ()), *getattr(m, "resource_logs", ())):
        group.ClearField("resource")
    for item in _items(m):
        item.trace_id = b""
        item.span_id = b""
        if hasattr(item, "parent_span_id"):
            item.parent_span_id = b""
    return m


def _items(msg: Any) -> list[Any]:
    if isinstance(msg, ExportTraceServiceRequest):
        return [s for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert isinstance(msg, ExportLogsServiceRequest)
    return [r for rl in msg.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def test_node_json_exporter_body_decodes_as_its_protobuf_twin(capture: Capture) -> None:
    json_sent = send(capture, "node-http-json")
    proto_sent = send(capture, "node-http-proto")
    for path, signal in (("/v1/traces", "traces"), ("/v1/logs", "logs")):
        headers, body = json_sent[path]
        assert headers["Content-Type"] == "application/json"
        assert headers.get("Transfer-Encoding") == "chunked"  # hence issue 15's 411
        raw = json.loads(body)
        # The quirks this SDK version has (if one changes, QUIRKS above must cover the new form)
        if signal == "traces":
            spans = raw["resourceSpans"][0]["scopeSpans"][0]["spans"]
            values = [a["value"] for s in spans for a in s["attributes"]]
            assert any(type(v.get("intValue")) is int for v in values)  # a number, not "1200"
            assert all(type(s["kind"]) is int for s in spans)
            assert all(type(s["status"]["code"]) is int for s in spans)
            assert all(type(s["startTimeUnixNano"]) is str for s in spans)
            ids = [s["traceId"] for s in spans] + [s["spanId"] for s in spans]
            assert all(i == i.lower() and len(i) in (16, 32) for i in ids)
        else:
            [rec] = raw["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
            assert type(rec["severityNumber"]) is int and type(rec["timeUnixNano"]) is str
        from_json = decode(signal, body, "application/json")
        from_proto = decode(signal, proto_sent[path][1], "application/x-protobuf")
        # the same SDK, the same scenario: equal but for the random IDs and service names
        assert _without_ids(from_json) == _without_ids(from_proto)
        for item in _items(from_json):
            assert len(item.trace_id) == 16 and len(item.span_id) == 8
