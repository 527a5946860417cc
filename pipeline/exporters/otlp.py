"""OTLP senders: gRPC and HTTP/protobuf, forwarding the (enriched) request bytes.

Retryable per the OTLP spec: gRPC UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, ABORTED,
OUT_OF_RANGE, DATA_LOSS, RESOURCE_EXHAUSTED; HTTP 429, 502, 503, 504 (with Retry-After);
connection errors. Anything else is a permanent rejection.
"""

from __future__ import annotations

import email.utils
import gzip
import time
import urllib.parse
from typing import Any

import grpc
import httpx

from .. import _native
from .queue import PermanentError, RetryableError

_GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
_RETRYABLE_GRPC = frozenset(
    (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
)
_RETRYABLE_CODES = frozenset(c.value[0] for c in _RETRYABLE_GRPC)
_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}
_RETRYABLE_HTTP = frozenset((429, 502, 503, 504))


def redact_url(url: str) -> str:
    """The URL as it may be logged: a password in it (`user:pass@host`) becomes `***`."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class GrpcSender:
    """Unary Export calls with the serialized request. The transport is native
    (`native/src/grpc_client.rs`: hyper HTTP/2, the GIL released) when it is built and the
    channel is insecure, grpcio otherwise (`transport`: auto | native | grpcio)."""

    def __init__(
        self,
        signal: str,
        endpoint: str,
        headers: dict[str, str] | None = None,
        insecure: bool = True,
        timeout_s: float = 10.0,
        compression: str = "gzip",
        transport: str = "auto",
    ) -> None:
        target = endpoint.removeprefix("http://").removeprefix("https://")
        self._native: Any = None
        client = _native.native_transport(transport, _native.GrpcClient, insecure)
        if client is not None:
            self.transport = "native"
            self._native = client(
                target,
                _GRPC_METHODS[signal],
                list((headers or {}).items()),
                timeout_s,
                compression == "gzip",
            )
            return
        self.transport = "grpcio"
        if insecure:
            self._channel = grpc.insecure_channel(target)
        else:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
        self._call = self._channel.unary_unary(_GRPC_METHODS[signal])
        self._metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self._timeout = timeout_s
        self._compression = grpc.Compression.Gzip if compression == "gzip" else None

    def __call__(self, data: bytes) -> None:
        if self._native is not None:
            code, details = self._native.call(data)
            if code:
                msg = f"gRPC {_CODE_NAMES.get(code, str(code))}: {details}"
                if code in _RETRYABLE_CODES:
                    raise RetryableError(msg)
                raise PermanentError(msg)
            return
        try:
            self._call(
                data,
                timeout=self._timeout,
                metadata=self._metadata,
                compression=self._compression,
            )
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            msg = (
                f"gRPC {code.name if code else '?'}: {e.details() if hasattr(e, 'details') else e}"
            )
            if code in _RETRYABLE_GRPC:
                raise RetryableError(msg) from e
            raise PermanentError(msg) from e

    def close(self) -> None:
        if self._native is not None:
            self._native.close()
        else:
            self._channel.close()


class HttpSender:
    def __init__(
        self,
        signal: str,
        endpoint: str,
        headers: dict[str, str] | None = None,
        timeout_s: float = 10.0,
        compression: str = "gzip",
    ) -> None:
        base = endpoint.rstrip("/")
        self._url = base if base.endswith(f"/v1/{signal}") else f"{base}/v1/{signal}"
        self._shown_url = redact_url(self._url)  # for messages, which end up in logs
        self._headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self._gzip = compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._client = httpx.Client(timeout=timeout_s)

    def __call__(self, data: bytes) -> None:
        body = gzip.compress(data, compresslevel=1) if self._gzip else data
        try:
            r = self._client.post(self._url, content=body, headers=self._headers)
        except httpx.HTTPError as e:
            raise RetryableError(f"HTTP POST {self._shown_url}: {e}") from e
        if 200 <= r.status_code < 300:
            return
        msg = f"HTTP {r.status_code} from {self._shown_url}: {r.text[:200]}"
        if r.status_code in _RETRYABLE_HTTP:
            raise RetryableError(msg, parse_retry_after(r.headers.get("retry-after")))
        raise PermanentError(msg)

    def close(self) -> None:
        self._client.close()
