"""Engines and transactions.

SQLite runs in WAL mode with a busy timeout. Write transactions start with
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can fail at
once with "database is locked" when another writer got in between, whatever the
busy timeout; taking the write lock up front makes writers queue instead.
Read-only work uses :func:`reading`, which begins a deferred transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from service.config import Settings
from service.errors import ServiceUnavailable

_READONLY = "framejobs_readonly"
_SINGLE = "single"
BUSY_TIMEOUT_MS = 30_000  # SQLite's busy timeout on every connection
_BUSY_TIMEOUT_S = BUSY_TIMEOUT_MS / 1000
# SQLite has one writer at a time, and its busy handler makes a waiting writer sleep
# (1, 2, 5 ... 100 ms) between tries, so under contention writers sleep while the lock
# is free: at 32 concurrent submits the p99 was ~1.3-2.4 s (bench/submit.py). Writers
# of one process therefore queue on a lock of their own, which wakes the next one at
# once; SQLite's busy timeout is left to arbitrate between processes.
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


def make_engine(settings: Settings, *, background_checkpoints: bool = False) -> Engine:
    """``background_checkpoints``: on SQLite, leave WAL checkpoints to a
    :class:`service.checkpoint.Checkpointer` that the caller runs (long-running
    processes), instead of the commits that happen to fill the log."""
    url = sa.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings.sqlite_synchronous, background_checkpoints)
    return sa.create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_timeout=10,
        # UTC sessions: timestamps near the calendar's ends exist in UTC but not in
        # every zone, and a session zone from the server's settings must not apply
        connect_args={"connect_timeout": 5, "options": "-c timezone=UTC"},
    )


def _sqlite_engine(url: sa.URL, synchronous: str, background_checkpoints: bool) -> Engine:
    # (a "file:" URI names its file itself: no folder to make for it)
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        path = Path(url.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The file holds every payload and, unless FRAMEJOBS_WEBHOOK_SECRETS is set, the
        # generated signing secret: under the usual umask SQLite made it readable by
        # every user of the host. SQLite gives its -wal and -shm files the same mode.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": _BUSY_TIMEOUT_S},
        # as many as the request threadpool (40) and the workers use at once: overflow
        # connections are opened and closed per checkout, each paying for its PRAGMAs
        pool_size=64,
        max_overflow=32,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # WAL + FULL syncs the log at each commit; NORMAL only at checkpoints, so a
        # power loss could take back commits already answered with a 202.
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if background_checkpoints:
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_READONLY, False)
        if mode == _SINGLE:
            return  # one statement: SQLite's implicit transaction is snapshot enough
        conn.exec_driver_sql("BEGIN" if mode else "BEGIN IMMEDIATE")

    _WRITE_LOCKS[engine] = threading.Lock()
    return engine


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction: commits on success, rolls back on error."""
    with writer_turn(engine), _unavailable_on_disconnect(), engine.begin() as conn:
        yield conn


@contextmanager
def writer_turn(engine: Engine, timeout_s: float = _BUSY_TIMEOUT_S) -> Iterator[None]:
    """On SQLite, wait for this process's other writers first (see _WRITE_LOCKS); then
    none of them writes until this returns."""
    lock = _WRITE_LOCKS.get(engine)
    if lock is None or not lock.acquire(timeout=timeout_s):
        yield  # PostgreSQL; or waited as long as SQLite would have: let SQLite decide
        return
    try:
        yield
    finally:
        lock.release()


@contextmanager
def reading(engine: Engine, *, single: bool = False) -> Iterator[Connection]:
    """One read-only transaction (deferred on SQLite, so readers never queue).

    ``single``: the caller runs one statement only, which is atomic by itself; skip
    the BEGIN/COMMIT round trips (the hot path of every poll)."""
    options = read_only_options(single=single)
    if single and engine.dialect.name == "postgresql":
        options["isolation_level"] = "AUTOCOMMIT"
    with (
        _unavailable_on_disconnect(),
        engine.connect().execution_options(**options) as conn,
        conn.begin(),
    ):
        yield conn


def read_only_options(*, single: bool) -> dict[str, Any]:
    """Execution options of a read-only connection (``single``: one statement)."""
    return {_READONLY: _SINGLE if single else True}


@contextmanager
def _unavailable_on_disconnect() -> Iterator[None]:
    """Connection trouble (server down or restarting, pool exhausted, SQLite locked for
    too long) is the service being unavailable for a moment: a 503, never a hang."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
        raise ServiceUnavailable(
            f"the database is not available ({type(exc).__name__}); try again shortly"
        ) from exc


# Every change, for the processes that serve the API (their event streams and
# long-polls follow every job); and what a worker acts on, for worker-only processes:
# each job's own changes (running, completed, progress) reached every worker process
# and cost each a wake-up of its listener.
CHANNEL = "framejobs"
WORK_CHANNEL = "framejobs_work"
# built once: building them per call cost 15-50 us of a ~140 us call (CPU, measured)
_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")
_NOTIFY_BOTH = sa.text("SELECT pg_notify(:channel, :payload), pg_notify(:work, :payload)")


def notify(conn: Connection, payload: str) -> None:
    """Tell other processes (PostgreSQL NOTIFY, sent at commit). SQLite has no such
    thing: its processes poll."""
    if conn.dialect.name != "postgresql":
        return
    if for_workers(payload):
        conn.execute(_NOTIFY_BOTH, {"channel": CHANNEL, "work": WORK_CHANNEL, "payload": payload})
    else:
        conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})


def for_workers(payload: str) -> bool:
    """``kind:job_id:status`` payloads a worker acts on: a job (re)queued, a cancel, a
    webhook delivery due (see service.pglisten.route)."""
    kind, _, rest = payload.partition(":")
    return kind in ("cancel", "deliveries") or (kind == "job" and rest.endswith(":queued"))
