"""A program a test runs for real (the Collector, Jaeger, VictoriaLogs): started with its
output in a log file, waited on until ready, SIGTERM then SIGKILL on stop, and stopped at
exit if a test forgot to. With the free-port and polling helpers every such test uses."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (another process may take it before it is bound:
    `start_on_free_ports` retries for that)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy; return it, or the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM (a graceful shutdown flushes what the program holds), SIGKILL after
    ``timeout``; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


class ManagedProcess:
    """Subclasses say how to run the program (`args`) and when it is up (`ready`)."""

    name = "process"

    def __init__(
        self, log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.log_path = Path(log_path)
        self.env: dict[str, str] = dict(env or {})
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30) -> Self:
        assert self.proc is None, "already started"
        args = self.args()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {time.strftime('%X')} {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.cwd,
            )
        _live.add(self)
        proc = self.proc
        if not wait_until(lambda: proc.poll() is not None or self.ready(), timeout):
            self.stop()
            raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.logs()[-4000:]}")
        if proc.poll() is not None:
            rc = self.stop()
            raise RuntimeError(f"{self.name} exited {rc}:\n{self.logs()[-4000:]}")
        return self

    def stop(self, timeout: float = 20) -> int | None:
        """`terminate`; the exit code, None when it was not running."""
        if self.proc is None:
            return None
        rc = terminate(self.proc, timeout)
        self.proc = None
        _live.discard(self)
        return rc

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_on_free_ports(make: Callable[[], Any], attempts: int = 3) -> Any:
    """``make().start()``, again with fresh ports when a port taken from free_port() was
    grabbed by another process before the program bound it (a shared machine)."""
    for attempt in range(attempts):
        server = make()
        try:
            return server.start()
        except RuntimeError as e:
            if "address already in use" not in str(e) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


_live: set[ManagedProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for p in list(_live):
        p.stop(timeout=5)
