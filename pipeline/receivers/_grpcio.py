"""The OTLP/gRPC receiver on grpcio (TLS, or no native helpers): its limits as far as grpcio
lets them be set.

- grpc core's options: streams per connection (`grpc.max_concurrent_streams`), open
  connections (`grpc.max_allowed_incoming_connections`), idle connections closed
  (`grpc.max_connection_idle_ms`), the message size (`grpc.max_receive_message_length`,
  which grpc core applies to a message both as received and once decompressed: one number).
- The handlers are stream-unary (a unary client does not notice): our code runs before the
  message is read, so the bearer token is checked first, and a watchdog cancels a call whose
  message has not arrived within the request timeout (a worker thread waits for it meanwhile).
- Calls beyond `max_calls` are answered UNAVAILABLE with a retry hint at once: the
  interceptor that counts them routes the refusal to a thread of its own, instead of grpcio's
  `maximum_concurrent_rpcs` (RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!", no hint) or
  a queue behind busy workers.

What grpcio cannot do: refuse a message before grpc core has read (and gunzipped) it into
memory, tell a client cancel from a decompressed message over the limit (both end the call
before we see the message; counted as "cancelled"), or count the connections and streams it
refuses itself.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from ._common import ByteBudget, bearer_ok

if TYPE_CHECKING:
    from .otlp_grpc import Answer, OtlpGrpcReceiver

_local = threading.local()  # the interceptor's word to the executor: this call is refused


class _Executor(futures.ThreadPoolExecutor):
    """The worker pool; a refused call (marked by `_Admission`, in the same thread just
    before grpcio submits it) runs on a small pool of its own, not behind busy workers."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers, thread_name_prefix="otlp-grpc")
        self.refusals = futures.ThreadPoolExecutor(2, thread_name_prefix="otlp-grpc-busy")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        if getattr(_local, "refused", False):
            _local.refused = False
            return self.refusals.submit(fn, *args, **kwargs)
        return super().submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.refusals.shutdown(wait, cancel_futures=cancel_futures)
        super().shutdown(wait, cancel_futures=cancel_futures)


class _Admission(grpc.ServerInterceptor):  # type: ignore[misc]
    """At most `limit` calls admitted (queued or running); more get the method's handler in
    `refused`."""

    def __init__(self, limit: int, refused: dict[str, grpc.RpcMethodHandler]) -> None:
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()
        self._refused = refused

    def release(self) -> None:
        with self._lock:
            self.active -= 1

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        with self._lock:
            if self.active >= self.limit and details.method in self._refused:
                _local.refused = True
                return self._refused[details.method]
            self.active += 1
        return handler


class _Watchdog:
    """Cancels calls whose message has not arrived by their deadline (one thread for all)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, grpc.ServicerContext, list[bool]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="otlp-grpc-watchdog", daemon=True)
        self._thread.start()

    def arm(self, context: grpc.ServicerContext, timeout_s: float) -> list[bool]:
        """[armed, fired]: set armed False once the message is in."""
        flags = [True, False]
        with self._cond:
            heapq.heappush(
                self._heap, (time.monotonic() + timeout_s, next(self._seq), context, flags)
            )
            self._cond.notify()
        return flags

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or not self._heap[0][3][0]):
                    _, _, context, flags = heapq.heappop(self._heap)
                    if flags[0]:
                        flags[1] = True
                        context.cancel()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()


class GrpcioServer:
    def __init__(
        self,
        receiver: OtlpGrpcReceiver,
        endpoint: str,
        auth_token: str | None,
        tls: tuple[bytes, bytes] | None,
        workers: int,
        *,
        max_message_bytes: int,
        max_inflight_bytes: int,
        max_streams_per_connection: int,
        max_connections: int,
        request_timeout_s: float,
        idle_timeout_s: float,
    ) -> None:
        self._rx = receiver
        self._auth = auth_token
        self._timeout_s = request_timeout_s
        self._budget = ByteBudget(max_inflight_bytes)
        self._watchdog = _Watchdog()
        # a thread for every call admitted: one waiting for its message (an unfinished stream,
        # until the watchdog) holds a thread, and must not hold up the calls behind it
        self._executor = _Executor(workers * 8)
        from .otlp_grpc import _PATHS, _SERVICES

        self._admission = _Admission(
            workers * 8,
            {
                path: grpc.stream_unary_rpc_method_handler(self._refused(signal))
                for path, signal in _PATHS.items()
            },
        )
        self._server = grpc.server(
            self._executor,
            interceptors=[self._admission],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_concurrent_streams", max_streams_per_connection),
                ("grpc.max_allowed_incoming_connections", max_connections),
                ("grpc.max_connection_idle_ms", int(idle_timeout_s * 1000)),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    name, {"Export": grpc.stream_unary_rpc_method_handler(self._export(signal))}
                )
                for signal, name in _SERVICES.items()
            ]
        )
        if tls is not None:
            creds = grpc.ssl_server_credentials([(tls[1], tls[0])])
            self.port = self._server.add_secure_port(endpoint, creds)
        else:
            self.port = self._server.add_insecure_port(endpoint)
        if self.port == 0:
            raise OSError(f"cannot bind OTLP/gRPC receiver to {endpoint}")

    def _refused(self, signal: str) -> Callable[[Iterator[bytes], grpc.ServicerContext], bytes]:
        def refused(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            self._abort(context, self._rx.busy(signal))  # the message is never read
            return b""

        return refused

    @staticmethod
    def _abort(context: grpc.ServicerContext, answer: Answer) -> None:
        from .otlp_grpc import _CODES

        code, message, _, trailers = answer
        if trailers:
            context.set_trailing_metadata(trailers)
        context.abort(_CODES[code], message)

    def _export(self, signal: str) -> Callable[[Iterator[bytes], grpc.ServicerContext], bytes]:
        from .otlp_grpc import _DEADLINE_EXCEEDED, _UNAUTHENTICATED

        refuse = self._rx.refuse

        def export(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            try:
                return handle(requests, context)
            finally:
                self._admission.release()

        def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            if self._auth:  # before the message is read
                authorization = dict(context.invocation_metadata()).get("authorization")
                if not bearer_ok(self._auth, str(authorization) if authorization else None):
                    text = "missing or invalid bearer token"
                    refuse(signal, "unauthenticated", text)
                    self._abort(context, (_UNAUTHENTICATED, text, b"", ()))
            flags = self._watchdog.arm(context, self._timeout_s)
            cancelled = False
            try:
                raw = next(requests, None)
            except grpc.RpcError:  # the call was cancelled (by whom: see below)
                raw, cancelled = None, True
            finally:
                flags[0] = False
            if flags[1]:  # the watchdog's
                text = f"request not received in full within {self._timeout_s:g}s"
                refuse(signal, "request_timeout", text)
                self._abort(context, (_DEADLINE_EXCEEDED, text, b"", ()))
            if raw is None:  # grpc core ended the call: a client cancel, or over the limit
                if cancelled:
                    refuse(signal, "cancelled", "call ended before its message arrived")
                else:
                    refuse(signal, "too_large", "over grpc.max_receive_message_length")
                return b""
            if not self._budget.try_reserve(len(raw)):
                self._abort(context, self._rx.busy(signal))
            try:
                code, message, body, trailers = self._rx.answer(signal, raw)
            finally:
                self._budget.release(len(raw))
            if code:
                self._abort(context, (code, message, body, trailers))
            return body

        return export

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_s: float) -> None:
        self._server.stop(grace_s).wait()
        self._watchdog.stop()
        self._executor.shutdown(wait=False)
