"""One-statement reads for request handlers, done on the event loop when that is safe.

A job read by primary key from SQLite in WAL mode takes tens of microseconds, and WAL
readers do not wait for writers; handing it to a worker thread and back cost several
times that in CPU and was the largest single item of a poll (bench/poll.py: 1,037 ->
340 us of server CPU per GET /jobs/{id}). So on SQLite the loop keeps one connection
of its own, outside the pool (it never queues for a pooled one), with a short busy
timeout. Whenever it cannot answer at once (SQLite busy, the connection broken), the
read goes to the threadpool as before, which also opens the loop's connection again:
connecting can wait on a lock, and the loop must never wait. PostgreSQL reads are
network round trips and always go to the threadpool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from service.db import read_only_options, reading

T = TypeVar("T")
_BUSY_TIMEOUT_MS = 50


class Reader:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.on_loop = engine.dialect.name == "sqlite"
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # the loop's read vs a thread (re)opening or closing

    async def read(self, query: Callable[[Connection], T]) -> T:
        """``query`` runs one statement; what it raises (e.g. NotFound) passes through."""
        if self._conn is not None and self._lock.acquire(blocking=False):
            try:
                if self._conn is not None:
                    return self._on_loop(self._conn, query)
            except _Busy:
                pass
            finally:
                self._lock.release()
        return await anyio.to_thread.run_sync(self._in_thread, query)

    def open(self) -> bool:
        """Open the loop's connection (blocking: call it from a thread); False when
        SQLite is busy, and a later read in a thread tries again."""
        if not self.on_loop:
            return True
        with self._lock:
            if self._conn is None:
                try:
                    self._conn = self._connect()
                except sa.exc.OperationalError:
                    return False
        return True

    def _connect(self) -> Connection:
        conn = self.engine.connect().execution_options(**read_only_options(single=True))
        conn.detach()  # its own for good: closing it closes the file
        with conn.begin():
            conn.exec_driver_sql(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        return conn

    def close(self) -> None:
        with self._lock:
            self._discard()

    def _on_loop(self, conn: Connection, query: Callable[[Connection], T]) -> T:
        try:
            with conn.begin():
                return query(conn)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            self._discard()  # busy, or the connection broke: the threadpool decides
            raise _Busy from exc

    def _in_thread(self, query: Callable[[Connection], T]) -> T:
        with reading(self.engine, single=True) as conn:
            row = query(conn)
        if self._conn is None:
            self.open()
        return row

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Busy(Exception):
    pass
