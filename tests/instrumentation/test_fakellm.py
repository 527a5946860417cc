"""The fake LLM server answers as documented (the instrumentation tests rely on its numbers)."""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any

import httpx
import pytest

from tests.fakellm import REPLY, TOOL_ARGUMENTS, FakeLLM, prompt_tokens_for

MESSAGES = [{"role": "user", "content": "one two three"}]


@pytest.fixture(scope="module")
def llm() -> Any:
    with FakeLLM(first_chunk_delay_s=0.0, cached_tokens=2, reasoning_tokens=1) as server:
        yield server


def post(llm: FakeLLM, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{llm.base_url}{path}", json=body, headers=headers, timeout=10)


def test_prompt_tokens_rule() -> None:
    assert prompt_tokens_for(MESSAGES) == 3 + 3
    assert prompt_tokens_for([{"role": "user", "content": [{"type": "text", "text": "a b"}]}]) == 5


def test_chat_usage(llm: FakeLLM) -> None:
    r = post(llm, "/chat/completions", {"model": "m", "messages": MESSAGES, "max_tokens": 4})
    body = r.json()
    assert r.status_code == 200
    assert body["model"] == "m-2024"
    assert body["choices"][0]["message"]["content"] == " ".join(REPLY[:4])
    assert body["usage"]["prompt_tokens"] == 6
    assert body["usage"]["completion_tokens"] == 4 + 1
    assert body["usage"]["total_tokens"] == 11
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 2
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 1


def test_headers_override_cached_and_reasoning(llm: FakeLLM) -> None:
    r = post(
        llm,
        "/chat/completions",
        {"model": "m", "messages": MESSAGES},
        **{"x-fake-cached-tokens": "99", "x-fake-reasoning-tokens": "0"},
    )
    usage = r.json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 6  # clamped to the prompt
    assert usage["completion_tokens"] == 8


def sse(r: httpx.Response) -> list[Any]:
    out = []
    for line in r.text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_stream_with_usage_and_first_chunk_delay(llm: FakeLLM) -> None:
    t = time.monotonic()
    with httpx.stream(
        "POST",
        f"{llm.base_url}/chat/completions",
        json={
            "model": "m",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers={"x-fake-first-chunk-delay": "1.5"},
        timeout=10,
    ) as r:
        headers_after = time.monotonic() - t
        r.read()
    total = time.monotonic() - t
    events = sse(r)
    # headers at once, the delay is before the first chunk (margins for a loaded machine)
    assert total >= 1.5 and headers_after < 1.0
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk, _ = events
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == " ".join(REPLY[:8])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 8 + 1


def test_stream_without_usage(llm: FakeLLM) -> None:
    with httpx.stream(
        "POST",
        f"{llm.base_url}/chat/completions",
        json={"model": "m", "messages": MESSAGES, "stream": True},
        timeout=10,
    ) as r:
        r.read()
    assert not any("usage" in e for e in sse(r) if isinstance(e, dict))


def test_tool_call(llm: FakeLLM) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = post(llm, "/chat/completions", {"model": "m", "messages": MESSAGES, "tools": tools})
    choice = body.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "f",
        "arguments": TOOL_ARGUMENTS,
    }


@pytest.mark.parametrize(("how", "status"), [("model", 429), ("header", 429), ("model", 500)])
def test_errors(llm: FakeLLM, how: str, status: int) -> None:
    if how == "model":
        r = post(llm, "/chat/completions", {"model": f"x-error-{status}", "messages": MESSAGES})
    else:
        r = post(llm, "/chat/completions", {"model": "m"}, **{"x-fake-error": str(status)})
    assert r.status_code == status
    assert "error" in r.json()
    assert (r.headers.get("retry-after") == "1") is (status == 429)


def test_embeddings_float_and_base64(llm: FakeLLM) -> None:
    plain = post(llm, "/embeddings", {"model": "e", "input": ["a b", "c"]}).json()
    assert plain["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert len(plain["data"]) == 2 and len(plain["data"][0]["embedding"]) == 8
    b64 = post(llm, "/embeddings", {"model": "e", "input": "a", "encoding_format": "base64"})
    vec = struct.unpack("<8f", base64.b64decode(b64.json()["data"][0]["embedding"]))
    assert vec == pytest.approx(plain["data"][0]["embedding"], rel=1e-6)


def test_requests_are_recorded(llm: FakeLLM) -> None:
    n = len(llm.requests)
    post(llm, "/chat/completions", {"model": "recorded", "messages": MESSAGES})
    assert llm.requests[n].body["model"] == "recorded" and llm.requests[n].status == 200
