"""The embedded default destination: rotating OTLP-JSON-lines files.

One request per line, in the OTLP/JSON encoding the Collector's `otlpjsonfile` receiver reads,
under `<directory>/<signal>.jsonl`, rotated to `<signal>-<n>.jsonl` past `max_bytes`, keeping
`max_files` rotated files per signal (the oldest is deleted: counted and logged).

The sink is given protobuf bytes (as the other exporters, so the queue and the spool hold the
compact form) and writes their JSON span by span (log record, metric): a request's JSON is never
built whole. Done at once (`json_format.MessageToDict` of a 60 MB request), it took GBs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from ..receivers.decode import REQUEST_TYPES, _ids_b64_to_hex
from .queue import PermanentError, RetryableError

log = structlog.get_logger("pipeline.exporters")

# Request -> resource_X -> scope_X -> items: the repeated field holding the next level down.
_LEVELS = {
    "traces": ("resource_spans", "scope_spans", "spans"),
    "logs": ("resource_logs", "scope_logs", "log_records"),
    "metrics": ("resource_metrics", "scope_metrics", "metrics"),
}
_CHUNK = 1 << 16  # bytes gathered before a write


def _dumps(msg: Message) -> str:
    data = json_format.MessageToDict(msg, use_integers_for_enums=True)
    _ids_b64_to_hex(data)
    return json.dumps(data, separators=(",", ":"))


def json_chunks(msg: Message, levels: tuple[str, ...]) -> Iterator[str]:
    """The OTLP/JSON of `msg` (what `decode.to_json` makes) in pieces of one item each."""
    if not levels:
        yield _dumps(msg)
        return
    child = levels[0]
    shell = type(msg)()  # msg without its child list: its own fields, small
    for field, value in msg.ListFields():
        if field.name == child:
            continue
        if isinstance(value, Message):
            getattr(shell, field.name).CopyFrom(value)
        elif not isinstance(value, str | bytes | int | float):  # a repeated field
            getattr(shell, field.name).extend(value)
        else:
            setattr(shell, field.name, value)
    head = _dumps(shell)[:-1]  # without its closing brace
    items = getattr(msg, child)
    if not items:
        yield head + "}"
        return
    json_name = msg.DESCRIPTOR.fields_by_name[child].json_name
    yield head + ("," if head != "{" else "") + f'"{json_name}":['
    for i, item in enumerate(items):
        if i:
            yield ","
        yield from json_chunks(item, levels[1:])
    yield "]}"


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
        if data[:1] == b"{":  # a JSON line already (spooled by an earlier version)
            yield data.decode()
            return
        msg: Any = REQUEST_TYPES[self.signal]()
        try:
            msg.ParseFromString(data)
        except DecodeError as e:
            raise PermanentError(f"not an OTLP {self.signal} request: {e}") from e
        yield from json_chunks(msg, _LEVELS[self.signal])

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
                except BaseException:
                    f.flush()
                    f.truncate(start)  # no half line: the retry writes it whole
                    raise
        except OSError as e:
            raise RetryableError(f"writing {self.path}: {e}") from e

    def close(self) -> None:
        pass
