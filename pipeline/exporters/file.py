"""The embedded default destination: rotating OTLP-JSON-lines files.

One request per line, in the OTLP/JSON encoding the Collector's `otlpjsonfile` receiver reads,
under `<directory>/<signal>.jsonl`, rotated to `<signal>-<n>.jsonl` past `max_bytes`, keeping
`max_files` rotated files per signal (the oldest is deleted: counted and logged).

The sink is given protobuf bytes (as the other exporters, so the queue and the spool hold the
compact form) and writes their JSON in pieces cut between items (spans, log records, metrics):
a request's JSON is never built whole. The encoder (otlp_json) renders it from the bytes
natively when the native helpers are built, else from the parsed request in Python; either
writes what `decode.to_json` would, byte for byte, at a fraction of json_format's cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import structlog
from google.protobuf.message import DecodeError

from .. import _native
from ..receivers.decode import REQUEST_TYPES
from .otlp_json import JsonEncoder
from .queue import PermanentError, RetryableError

log = structlog.get_logger("pipeline.exporters")

_CHUNK = 1 << 16  # bytes gathered before a write
_ENCODERS = {signal: JsonEncoder(t.DESCRIPTOR) for signal, t in REQUEST_TYPES.items()}
_NATIVE = (
    {signal: _native.JsonEncoder(e.schema) for signal, e in _ENCODERS.items()}
    if _native.JsonEncoder is not None
    else {}
)


class FileSink:
    def __init__(
        self,
        directory: str,
        signal: str,
        max_bytes: int,
        max_files: int,
        on_deleted: Callable[[int], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.signal = signal
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.path = self.directory / f"{signal}.jsonl"
        self._on_deleted = on_deleted  # bytes of a rotated file deleted to keep max_files

    def _rotate(self) -> None:
        extra = self.directory / f"{self.signal}-{self.max_files}.jsonl"
        if extra.exists():  # the oldest goes: what it held is lost on purpose, so say so
            size = extra.stat().st_size
            extra.unlink()
            log.warning(
                "file sink deleted its oldest rotated file (file.max_files)",
                file=str(extra),
                bytes=size,
            )
            if self._on_deleted is not None:
                self._on_deleted(size)
        for n in range(self.max_files - 1, 0, -1):
            src = self.directory / f"{self.signal}-{n}.jsonl"
            if src.exists():
                src.replace(self.directory / f"{self.signal}-{n + 1}.jsonl")
        self.path.replace(self.directory / f"{self.signal}-1.jsonl")

    def _chunks(self, data: bytes) -> Iterator[str]:
        msg: Any = REQUEST_TYPES[self.signal]()
        try:
            msg.ParseFromString(data)
        except DecodeError as e:
            raise PermanentError(f"not an OTLP {self.signal} request: {e}") from e
        yield from _ENCODERS[self.signal].chunks(msg)

    def _write_python(self, f: IO[bytes], data: bytes) -> None:
        buf: list[str] = []
        size = 0
        for chunk in self._chunks(data):
            buf.append(chunk)
            size += len(chunk)
            if size >= _CHUNK:
                f.write("".join(buf).encode())
                buf, size = [], 0
        buf.append("\n")
        f.write("".join(buf).encode())

    def _write(self, f: IO[bytes], data: bytes) -> None:
        if data[:1] == b"{":  # a JSON line already (spooled by an earlier version)
            f.write(data + b"\n")
            return
        native = _NATIVE.get(self.signal)
        if native is not None:
            start = f.tell()
            try:
                native.write(data, f.write, _CHUNK, b"\n")
                return
            except ValueError:  # what the walk does not render (or not a request): Python's
                f.flush()
                f.truncate(start)
                f.seek(start)
        self._write_python(f, data)

    def __call__(self, data: bytes) -> None:
        """Append the request (protobuf) as one OTLP/JSON line."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # the JSON's size is known once written: rotate by the protobuf's, a lower bound
            if self.path.exists() and self.path.stat().st_size + len(data) > self.max_bytes:
                self._rotate()
            with open(self.path, "ab") as f:
                start = f.tell()
                try:
                    self._write(f, data)
                except BaseException:
                    f.flush()
                    f.truncate(start)  # no half line: the retry writes it whole
                    raise
        except OSError as e:
            raise RetryableError(f"writing {self.path}: {e}") from e

    def close(self) -> None:
        pass
