"""A real HTTP webhook receiver on 127.0.0.1 that records what it gets and answers
from a script (status codes, delays, redirects)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    """Answers to give, in order; when they run out, ``default`` is given."""

    answers: list[tuple[int, float, dict[str, str]]] = field(default_factory=list)
    default: int = 200
    body: bytes = b"ok"
    # this many next answers promise 1,000 bytes and send one every 0.2 s
    trickle: int = 0


class Receiver:
    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.received: list[Received] = []
        self.script = Script()
        self._lock = threading.Lock()
        self.arrived = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://{host}:{self.port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(
        self, *statuses: int, delay: float = 0.0, headers: dict[str, str] | None = None
    ) -> None:
        with self._lock:
            self.script.answers.extend((s, delay, headers or {}) for s in statuses)

    def wait_count(self, n: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver got {len(self.received)} of {n} requests")
                self.arrived.wait(left)
            return list(self.received)

    def _next(self) -> tuple[int, float, dict[str, str]]:
        with self._lock:
            if self.script.answers:
                return self.script.answers.pop(0)
            return self.script.default, 0.0, {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # headers then body are two small writes: without this the body waits ~40 ms
            # for the sender's delayed ACK
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                status, delay, headers = receiver._next()
                with receiver._lock:
                    trickle = receiver.script.trickle > 0
                    receiver.script.trickle -= trickle
                if delay:
                    time.sleep(delay)  # the receiver is slow on purpose (timeout tests)
                with receiver.arrived:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                    receiver.arrived.notify_all()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if trickle:
                    self._trickle()
                    return
                self.send_header("content-length", str(len(receiver.script.body)))
                self.end_headers()
                self.wfile.write(receiver.script.body)

            def _trickle(self) -> None:
                """A receiver that is never done answering, yet never idle long
                enough for a read timeout."""
                self.send_header("content-length", "1000")
                self.end_headers()
                try:
                    for _ in range(1000):
                        self.wfile.write(b".")
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass  # the sender gave up and closed the connection

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
