"""The optional native helpers: the `native/` crate, installed as `llm-pipeline-native`.

Each helper has a pure-Python twin that stays the reference (the tests hold the two equal), so
the sidecar works without them, only slower: `scripts/setup.sh` builds them when cargo is
there (CI requires it). `LLM_PIPELINE_NATIVE=0` turns them off, to measure or compare the
Python path. Their types: native/llm_pipeline_native.pyi (on mypy's path).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from .fields import FIELDS

if TYPE_CHECKING:
    from llm_pipeline_native import CallReader as _CallReader
    from llm_pipeline_native import DimensionReader as _DimensionReader
    from llm_pipeline_native import GrpcClient as _GrpcClient
    from llm_pipeline_native import GrpcServer as _GrpcServer
    from llm_pipeline_native import HeavyHitters as _HeavyHitters
    from llm_pipeline_native import HintScanner as _HintScanner
    from llm_pipeline_native import JsonEncoder as _JsonEncoder

CallReader: type[_CallReader] | None = None
DimensionReader: type[_DimensionReader] | None = None
GrpcClient: type[_GrpcClient] | None = None
GrpcServer: type[_GrpcServer] | None = None
HeavyHitters: type[_HeavyHitters] | None = None
HintScanner: type[_HintScanner] | None = None
JsonEncoder: type[_JsonEncoder] | None = None
item_ranges: Callable[[bytes], list[tuple[int, int, int, int, int]]] | None = None
invalid_spans: Callable[[bytes], list[int]] | None = None
span_parents: Callable[[bytes], dict[bytes, bytes | None]] | None = None
trace_targets: (
    Callable[[bytes, list[tuple[int, int]]], list[tuple[int, int, int, int, int, int, int, int]]]
    | None
) = None
patch: Callable[[bytes, list[tuple[int, int, bytes, bool]]], bytes] | None = None
label_calls: (
    Callable[
        [list[Any], list[tuple[tuple[str, ...], bytes] | None], list[dict[str, str]], str],
        tuple[list[int], list[int]],
    ]
    | None
) = None

# What `CallReader.read` returns per span, in order (normalize applies the rules to them): the
# span's head, what the reader found beside the attributes (the exception event's type of a
# failed span, the LLM marker, the keys enrich must not write, the chunk event times, where the
# span lies in the bytes), then the canonical fields, None where absent.
CALL_FIELDS = (
    "service_name",
    "scope",
    "convention",
    "trace_id",
    "span_id",
    "parent_span_id",
    "kind",
    "start_ns",
    "end_ns",
    "status_code",
    "exception_type",
    "marked",
    "present",
    "chunk_ns",
    "wire_span",
    *FIELDS,
    "response_id",
)
# Why the native reader is off though the helpers are built (None: it is not): tests report it.
call_reader_off: str | None = None

if (
    os.environ.get("LLM_PIPELINE_NATIVE", "1") != "0"
    and importlib.util.find_spec("llm_pipeline_native") is not None
):
    import llm_pipeline_native as _lib

    HintScanner, item_ranges = _lib.HintScanner, _lib.item_ranges
    invalid_spans, span_parents = _lib.invalid_spans, _lib.span_parents
    GrpcServer, GrpcClient = _lib.GrpcServer, _lib.GrpcClient
    trace_targets, patch = _lib.trace_targets, _lib.patch
    # A build from other sources returns other fields: read through upb rather than misread.
    if getattr(_lib, "CALL_FIELDS", None) == CALL_FIELDS:
        CallReader = _lib.CallReader
    else:
        call_reader_off = (
            "the built llm_pipeline_native returns other call fields than this pipeline reads"
            " (rebuild it: pip install ./native)"
        )
        structlog.get_logger("pipeline.native").warning(
            "native call reader off: " + call_reader_off,
            built=getattr(_lib, "CALL_FIELDS", None),
        )
    # absent from a module built before them: the Python twins do the work
    JsonEncoder = getattr(_lib, "JsonEncoder", None)
    DimensionReader = getattr(_lib, "DimensionReader", None)
    label_calls = getattr(_lib, "label_calls", None)
    HeavyHitters = getattr(_lib, "HeavyHitters", None)


_T = TypeVar("_T")


def native_transport(requested: str, helper: _T | None, plain: bool) -> _T | None:
    """The native helper a gRPC transport (`grpc_transport`: auto | native | grpcio) runs on,
    or None for grpcio: "native" insists (a ValueError when the helper is not built or TLS is
    on), "auto" takes it when it is built and the connection is plain, "grpcio" never does."""
    if requested == "native" and (helper is None or not plain):
        raise ValueError("the native gRPC transport is not built, or TLS is on")
    return helper if requested != "grpcio" and plain else None
