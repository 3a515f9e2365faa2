"""A hard time limit for one webhook attempt.

httpx's timeouts bound each connect, read and write, not the whole attempt: a receiver
that sends a byte every few seconds keeps an attempt (and a dispatcher slot) busy for
as long as it likes, and outlives the delivery's claim, so another dispatcher sends the
event again. The watchdog learns the attempt's socket from httpcore's ``trace``
extension and shuts it down when the time is up, which ends any blocked read or write
with an error at once. The sender's connections are not kept alive for this reason:
each attempt connects, so the trace always sees the socket.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace callback: keep the socket of the connection just made."""
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._socket = sock
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            _shut(self._socket)


def _shut(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the attempt ended by itself
