"""The embedded default destination: rotating OTLP-JSON-lines files.

One request per line, in the OTLP/JSON encoding the Collector's `otlpjsonfile` receiver reads,
under `<directory>/<signal>.jsonl`, rotated to `<signal>-<n>.jsonl` past `max_bytes`, keeping
`max_files` rotated files per signal.
"""

from __future__ import annotations

from pathlib import Path

from .queue import RetryableError


class FileSink:
    def __init__(self, directory: str, signal: str, max_bytes: int, max_files: int) -> None:
        self.directory = Path(directory)
        self.signal = signal
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.path = self.directory / f"{signal}.jsonl"

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def _rotate(self) -> None:
        for n in range(self.max_files - 1, 0, -1):
            src = self.directory / f"{self.signal}-{n}.jsonl"
            if src.exists():
                src.replace(self.directory / f"{self.signal}-{n + 1}.jsonl")
        self.path.replace(self.directory / f"{self.signal}-1.jsonl")
        extra = self.directory / f"{self.signal}-{self.max_files + 1}.jsonl"
        if extra.exists():
            extra.unlink()

    def __call__(self, line: bytes) -> None:
        """Append one JSON line (the payload is already OTLP/JSON)."""
        try:
            self._open()
            if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                self._rotate()
            with open(self.path, "ab") as f:
                f.write(line)
                f.write(b"\n")
        except OSError as e:
            raise RetryableError(f"writing {self.path}: {e}") from e

    def close(self) -> None:
        pass
