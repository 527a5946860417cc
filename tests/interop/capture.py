"""An OTLP/HTTP endpoint that records what a client sends, as sent (tests/interop)."""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers.otlp_sink import free_port
from tests.interop.clients import CLIENTS


class Capture:
    """An OTLP/HTTP endpoint that records each body as sent (chunked or not) and answers 200."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[tuple[dict[str, str], bytes]]] = {}
        self.port = free_port()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                capture.bodies.setdefault(self.path, []).append((dict(self.headers), body))
                ctype = self.headers.get("Content-Type", "")
                reply = b"{}" if ctype == "application/json" else b""
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(capture: Capture, client_name: str) -> dict[str, tuple[dict[str, str], bytes]]:
    """Run the client against `capture`: path -> (headers, body) of its one request each."""
    client = next(c for c in CLIENTS if c.name == client_name)
    capture.bodies.clear()
    argv, env = client.command(1796400000, "127.0.0.1:1", f"http://127.0.0.1:{capture.port}")
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    got = {}
    for path, sent in capture.bodies.items():
        assert len(sent) == 1, path
        got[path] = sent[0]
    return got
