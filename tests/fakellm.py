"""A local fake OpenAI-compatible LLM server for tests: deterministic, in-process, loopback only.

    with FakeLLM(first_chunk_delay_s=0.2) as llm:
        client = openai.OpenAI(base_url=llm.base_url, api_key="test")

Endpoints: `POST /v1/chat/completions` (plain, and `stream: true` as SSE chunks, with a final
usage chunk when `stream_options.include_usage`), `POST /v1/embeddings` (float or base64), and
`GET /v1/models`.

Token counts are a pure function of the request, so a test can assert exact values:

- `prompt_tokens` = words in all message contents + 3 per message (`prompt_tokens_for`);
  for embeddings, the words of all inputs.
- the reply is the first `max_tokens` (or `max_completion_tokens`; default 8) words of `REPLY`,
  one word per streamed chunk; `completion_tokens` = reply words + reasoning tokens.
- `prompt_tokens_details.cached_tokens` = `cached_tokens` (clamped to prompt_tokens) and
  `completion_tokens_details.reasoning_tokens` = `reasoning_tokens`, server defaults, each
  overridable per request with the `x-fake-cached-tokens` / `x-fake-reasoning-tokens` headers.
- when the request offers `tools`, the reply is one call of the first tool with the arguments
  `TOOL_ARGUMENTS` (finish_reason `tool_calls`, no text); completion_tokens = 5 (+ reasoning).

Error modes, chosen by the model name containing `error-429` / `error-500`, or by the header
`x-fake-error: 429|500`: 429 carries `Retry-After` (`retry_after_s`, default 1) and an OpenAI
rate-limit error body; 500 an OpenAI server-error body.

Timing: `first_chunk_delay_s` (header `x-fake-first-chunk-delay`) is slept before the first
streamed chunk (the headers go out at once, as real servers do) or before a non-streamed
response; `chunk_delay_s` between later chunks.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = [
    *("The", "quick", "brown", "fox", "jumps", "over", "the", "lazy"),
    *("dog", "and", "runs", "far", "away", "into", "the", "hills"),
]
DEFAULT_MAX_WORDS = 8
TOOL_ARGUMENTS = '{"city": "Paris"}'
TOOL_CALL_TOKENS = 5
CREATED = 1_700_000_000


def prompt_tokens_for(messages: list[dict[str, Any]]) -> int:
    """The fake's prompt token count: words in the message contents + 3 per message."""
    words = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        words += len(str(content or "").split())
    return words + 3 * len(messages)


def embedding_tokens_for(inputs: str | list[Any]) -> int:
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    return sum(len(str(x).split()) if isinstance(x, str) else len(x) for x in items)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int = 0


@dataclass
class FakeLLM:
    first_chunk_delay_s: float = 0.0
    chunk_delay_s: float = 0.002
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    retry_after_s: int = 1
    embedding_dims: int = 8
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeLLM:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fakellm", kwargs={"poll_interval": 0.05}
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ends in /v1)."""
        return f"http://{self.host}:{self.port}/v1"

    def record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    # -- response bodies ---------------------------------------------------------------------

    def usage_for(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        prompt = prompt_tokens_for(body.get("messages") or [])
        cached = min(prompt, int(headers.get("x-fake-cached-tokens", self.cached_tokens)))
        reasoning = int(headers.get("x-fake-reasoning-tokens", self.reasoning_tokens))
        completion = TOOL_CALL_TOKENS if body.get("tools") else len(reply_words(body))
        completion += reasoning
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


def reply_words(body: dict[str, Any]) -> list[str]:
    n = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_WORDS
    return REPLY[: max(1, min(int(n), len(REPLY)))]


def _tool_call(body: dict[str, Any]) -> dict[str, Any]:
    tool = body["tools"][0]
    name = (tool.get("function") or {}).get("name") or tool.get("name") or "tool"
    return {
        "id": "call_fake_1",
        "type": "function",
        "function": {"name": name, "arguments": TOOL_ARGUMENTS},
    }


def _completion_id(n: int) -> str:
    return f"chatcmpl-fake{n:06d}"


def _make_handler(llm: FakeLLM) -> type[BaseHTTPRequestHandler]:
    counter = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fakellm/1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet

        # -- plumbing ------------------------------------------------------------------------

        def _headers(self) -> dict[str, str]:
            return {k.lower(): v for k, v in self.headers.items()}

        def _read_json(self) -> dict[str, Any]:
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                data = {}
            return data if isinstance(data, dict) else {}

        def _send_json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req_fake_{counter['n']}")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _error_mode(self, body: dict[str, Any], headers: dict[str, str]) -> int:
            forced = headers.get("x-fake-error", "")
            model = str(body.get("model", ""))
            if forced == "429" or "error-429" in model:
                return 429
            if forced == "500" or "error-500" in model:
                return 500
            return 0

        def _send_error(self, status: int) -> None:
            if status == 429:
                self._send_json(
                    429,
                    {
                        "error": {
                            "message": "Rate limit reached for requests (fake)",
                            "type": "requests",
                            "param": None,
                            "code": "rate_limit_exceeded",
                        }
                    },
                    {"Retry-After": str(llm.retry_after_s)},
                )
            else:
                self._send_json(
                    500,
                    {
                        "error": {
                            "message": "The server had an error (fake)",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    },
                )

        # -- routes --------------------------------------------------------------------------

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send_json(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": "fake-gpt", "object": "model", "owned_by": "fake"}],
                    },
                )
            else:
                self._send_json(404, {"error": {"message": "not found", "type": "invalid"}})

        def do_POST(self) -> None:
            headers = self._headers()
            body = self._read_json()
            rec = Recorded(path=self.path, headers=headers, body=body)
            llm.record(rec)
            with llm._lock:
                counter["n"] += 1
                n = counter["n"]
            status = self._error_mode(body, headers)
            if status:
                rec.status = status
                self._send_error(status)
                return
            rec.status = 200
            path = self.path.split("?", 1)[0].rstrip("/")
            if path.endswith("/chat/completions"):
                delay = float(headers.get("x-fake-first-chunk-delay", llm.first_chunk_delay_s))
                if body.get("stream"):
                    self._stream_chat(body, headers, n, delay)
                else:
                    if delay > 0:
                        time.sleep(delay)
                    self._send_json(200, self._chat(body, headers, n))
            elif path.endswith("/embeddings"):
                self._send_json(200, self._embeddings(body))
            else:
                rec.status = 404
                self._send_json(404, {"error": {"message": "not found", "type": "invalid"}})

        def _chat(self, body: dict[str, Any], headers: dict[str, str], n: int) -> dict[str, Any]:
            model = str(body.get("model", "fake-gpt"))
            if body.get("tools"):
                message: dict[str, Any] = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [_tool_call(body)],
                }
                finish = "tool_calls"
            else:
                message = {"role": "assistant", "content": " ".join(reply_words(body))}
                finish = "stop" if len(reply_words(body)) < len(REPLY) else "length"
            return {
                "id": _completion_id(n),
                "object": "chat.completion",
                "created": CREATED,
                "model": f"{model}-2024",
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                ],
                "usage": llm.usage_for(body, headers),
            }

        def _stream_chat(
            self, body: dict[str, Any], headers: dict[str, str], n: int, delay: float
        ) -> None:
            model = f"{body.get('model', 'fake-gpt')}-2024"
            cid = _completion_id(n)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("x-request-id", f"req_fake_{n}")
            self.end_headers()
            self.wfile.flush()

            def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                return {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }

            events: list[dict[str, Any]] = []
            if body.get("tools"):
                call = _tool_call(body)
                args = call["function"]["arguments"]
                half = len(args) // 2
                events.append(
                    chunk(
                        {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": call["function"]["name"], "arguments": ""},
                                }
                            ],
                        }
                    )
                )
                for part in (args[:half], args[half:]):
                    events.append(
                        chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                    )
                events.append(chunk({}, "tool_calls"))
            else:
                words = reply_words(body)
                for i, w in enumerate(words):
                    delta: dict[str, Any] = {"content": w if i == 0 else " " + w}
                    if i == 0:
                        delta["role"] = "assistant"
                    events.append(chunk(delta))
                events.append(chunk({}, "stop" if len(words) < len(REPLY) else "length"))
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if include_usage:
                for e in events:
                    e["usage"] = None
                events.append(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": CREATED,
                        "model": model,
                        "system_fingerprint": "fp_fake",
                        "choices": [],
                        "usage": llm.usage_for(body, headers),
                    }
                )
            try:
                if delay > 0:
                    time.sleep(delay)
                for i, e in enumerate(events):
                    if i and llm.chunk_delay_s > 0:
                        time.sleep(llm.chunk_delay_s)
                    self._write_chunk(b"data: " + json.dumps(e).encode() + b"\n\n")
                self._write_chunk(b"data: [DONE]\n\n")
                self._write_chunk(b"")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
            inputs = body.get("input", "")
            items = [inputs] if isinstance(inputs, str) else list(inputs)
            dims = int(body.get("dimensions") or llm.embedding_dims)
            b64 = body.get("encoding_format") == "base64"
            data = []
            for i, _ in enumerate(items):
                vec = [round((i + 1) * 0.01 * (d + 1), 4) for d in range(dims)]
                emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
                data.append({"object": "embedding", "index": i, "embedding": emb})
            tokens = embedding_tokens_for(inputs)
            return {
                "object": "list",
                "data": data,
                "model": str(body.get("model", "fake-embed")),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }

    return Handler
