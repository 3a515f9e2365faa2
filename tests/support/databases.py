"""Test databases: a SQLite file per test, or a PostgreSQL database per test cloned
from a template migrated once per session (CREATE DATABASE ... TEMPLATE).

Clones are made ahead and dropped behind, on a thread of their own (:class:`Clones`):
a CREATE DATABASE costs the server 0.1-0.35 s of writing and syncing, which each
PostgreSQL test otherwise waited for in its set-up."""

from __future__ import annotations

import os
import queue
import threading
import uuid

import psycopg
import pytest
import sqlalchemy as sa

PG_ADMIN = os.environ.get("FRAMEJOBS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
# one template per test session: parallel runs (other checkouts, CI) never share it
TEMPLATE = f"fj_template_{os.getpid()}"


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def require_pg() -> None:
    if pg_available():
        return
    message = (
        "PostgreSQL is not reachable at FRAMEJOBS_TEST_PG "
        f"({PG_ADMIN}); start it (see README) to run the PostgreSQL half"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def wait_until_available(timeout: float = 60.0) -> None:
    from tests.support.waiting import wait_for

    wait_for(pg_available, timeout=timeout, interval=0.2, what="PostgreSQL to accept connections")


def sqlalchemy_url(dbname: str) -> str:
    url = sa.make_url(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://", 1))
    return url.set(database=dbname).render_as_string(hide_password=False)


def admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN, autocommit=True)


def create_template() -> None:
    from service.config import Settings
    from service.db import make_engine
    from service.revisions import upgrade

    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    engine = make_engine(Settings(database_url=sqlalchemy_url(TEMPLATE)))
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def drop_template() -> None:
    drop_database(TEMPLATE)


def clone_database() -> str:
    name = f"fj_test_{uuid.uuid4().hex[:12]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    return name


def drop_database(name: str) -> None:
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Clones:
    """Fresh clones of the template, ``ahead`` of the tests that take them; databases
    given back are dropped meanwhile. A test never gets a database twice: one that
    is not ready when asked for is cloned there and then."""

    def __init__(self, ahead: int = 2) -> None:
        self._ready: queue.Queue[str] = queue.Queue(maxsize=ahead)
        self._spent: queue.Queue[str] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-clones", daemon=True)
        self._thread.start()

    def take(self) -> str:
        try:
            name = self._ready.get_nowait()
        except queue.Empty:
            name = clone_database()
        self._wake.set()
        return name

    def give_back(self, name: str) -> None:
        self._spent.put(name)
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(60)
        for pending in (self._spent, self._ready):
            while not pending.empty():
                drop_database(pending.get_nowait())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the work: a wake-up during it is not lost
            try:
                self._drop_spent()
                if not self._ready.full():
                    self._ready.put_nowait(clone_database())
                    continue
            except psycopg.Error:  # a test restarts the server: try again shortly
                self._stop.wait(0.2)
                continue
            self._wake.wait(1.0)

    def _drop_spent(self) -> None:
        while not self._spent.empty():
            name = self._spent.get_nowait()
            try:
                drop_database(name)
            except psycopg.Error:
                self._spent.put(name)
                raise
