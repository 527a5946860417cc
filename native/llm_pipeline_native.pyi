"""Type stubs of the native helpers (src/lib.rs)."""

from collections.abc import Callable, Mapping
from typing import Any

def item_ranges(data: bytes) -> list[tuple[int, int, int, int, int]]: ...
def invalid_spans(data: bytes) -> list[int]: ...
def span_parents(data: bytes) -> dict[bytes, bytes | None]: ...
def trace_targets(
    data: bytes, hits: list[tuple[int, int]]
) -> list[tuple[int, int, int, int, int, int, int, int]]: ...
def patch(data: bytes, edits: list[tuple[int, int, bytes, bool]]) -> bytes: ...
def label_calls(
    calls: list[Any],
    results: list[tuple[tuple[str, ...], bytes] | None],
    labels: list[dict[str, str]],
    other: str,
) -> tuple[list[int], list[int]]: ...

CALL_FIELDS: tuple[str, ...]  # what CallReader.read returns per span, in order

class SpanIndex:
    def resolve(
        self, wanted: list[tuple[bytes, bytes]]
    ) -> list[tuple[tuple[str, ...], bytes] | None]: ...
    def attribute(
        self, wanted: list[tuple[bytes, bytes]], weights: list[float], labelled: int
    ) -> tuple[list[tuple[tuple[str, ...], bytes] | None], list[dict[str, float]]]: ...
    def attribute_calls(
        self, calls: list[Any], floor: float, labelled: int
    ) -> tuple[list[tuple[tuple[str, ...], bytes] | None], list[dict[str, float]]]: ...
    def present(self, among: Any) -> list[tuple[bytes, bool]]: ...
    def nodes(
        self, among: Any
    ) -> list[
        tuple[
            bytes,
            bytes,
            bytes,
            str | None,
            str | None,
            tuple[int, int] | None,
            tuple[int, int, int],
        ]
    ]: ...

class DimensionReader:
    def __init__(self, slots: list[list[tuple[str, str]]], agents: bool = False) -> None: ...
    def index(self, data: bytes) -> SpanIndex: ...

class HeavyHitters:
    k: int
    capacity: int
    folds: int
    def __init__(self, k: int = 100, capacity: int | None = None) -> None: ...
    def add(self, value: str, weight: float) -> str: ...
    def label_all(
        self, weights: Mapping[str, float], checked: Mapping[str, str], check: Callable[[str], str]
    ) -> dict[str, str]: ...
    def top(self, n: int | None = None) -> list[tuple[str, float]]: ...
    @property
    def kept(self) -> set[str]: ...
    @property
    def counts(self) -> dict[str, list[float]]: ...

class CallReader:
    def __init__(
        self,
        table: list[tuple[str, str, int, str, tuple[Any, ...]]],
        markers: list[tuple[str, list[str]]],
        presentable: list[str],
        chunk_events: list[str],
    ) -> None: ...
    def read(
        self, data: bytes, scopes: list[tuple[str, str]]
    ) -> list[tuple[int, int, tuple[Any, ...] | None]]: ...
    def sizes(self) -> tuple[int, int]: ...

class HintScanner:
    def __init__(self, raw: list[bytes], folded: list[bytes], fold: bytes) -> None: ...
    def hits(self, data: bytes) -> list[tuple[int, int]]: ...

class JsonEncoder:
    def __init__(
        self, schema: list[list[tuple[int, str, int, bool, bool, int, int, bool]]]
    ) -> None: ...
    def encode(self, data: bytes) -> bytes: ...
    def write(
        self, data: bytes, write: Callable[[bytes], object], chunk: int, end: bytes
    ) -> int: ...

class GrpcServer:
    def __init__(
        self,
        endpoint: str,
        handler: Callable[
            [str, bytes | None, tuple[str, int, str] | None],
            tuple[int, str, bytes, tuple[tuple[str, str | bytes], ...]],
        ],
        paths: list[str],
        *,
        max_message_bytes: int,
        max_decompressed_bytes: int,
        max_inflight_bytes: int,
        max_concurrent_calls: int = 64,
        max_streams_per_connection: int = 32,
        max_connections: int = 1024,
        request_timeout_s: float = 30.0,
        idle_timeout_s: float = 120.0,
        auth_token: str | None = None,
    ) -> None: ...
    @property
    def port(self) -> int: ...
    @property
    def connections(self) -> int: ...
    def start(self) -> None: ...
    def stop(self, grace_s: float) -> None: ...

class GrpcClient:
    def __init__(
        self,
        target: str,
        path: str,
        headers: list[tuple[str, str]],
        timeout_s: float,
        gzip: bool,
    ) -> None: ...
    def call(self, data: bytes) -> tuple[int, str]: ...
    def close(self) -> None: ...
