"""The event loop's own SQLite read connection (service/loopread.py): it reads what was
committed, gives way at once when SQLite is busy and recovers afterwards, and the API
falls back to the threadpool meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Connection, Engine

from service.api.app import create_app
from service.db import writing
from service.loopread import Reader
from service.submit import Services
from tests.conftest import fast_settings
from tests.support.waiting import wait_for

BODY = {"pipeline": "sql", "params": {"query": "select 1"}, "frame": {"columns": {"a": [1]}}}


@pytest.fixture
def engine(scratch_engine: Engine) -> Engine:
    return scratch_engine


def count(conn: Connection) -> int:
    return int(conn.execute(sa.text("SELECT count(*) FROM scratch")).scalar_one())


def insert(engine: Engine, n: int) -> None:
    with writing(engine) as conn:
        conn.exec_driver_sql("INSERT INTO scratch VALUES (?)", (n,))


def read(reader: Reader, query: Callable[[Connection], int]) -> int:
    return anyio.run(reader.read, query)


def test_reads_each_commit_of_other_connections_on_the_loop(engine: Engine) -> None:
    reader = Reader(engine)
    reader.open()
    try:
        assert read(reader, count) == 0
        insert(engine, 1)
        assert read(reader, count) == 1  # no snapshot is held between reads
        insert(engine, 2)
        assert read(reader, count) == 2
        assert reader._conn is not None
    finally:
        reader.close()


def test_busy_sqlite_goes_to_the_threadpool_then_the_loop_reopens(engine: Engine) -> None:
    """SQLite busy for real: the statement needs the write lock another connection
    holds (a stand-in for the rare busy read), so the loop's try fails after its short
    busy timeout and the same statement runs in a worker thread, which waits for the
    lock in SQLite's busy handler as any pooled connection does."""
    reader = Reader(engine)
    reader.open()
    holder = engine.raw_connection()
    holder.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
    answer: list[int] = []
    thread = threading.Thread(target=lambda: answer.append(read(reader, insert_and_count)))
    try:
        thread.start()
        # the loop gave its connection up at once
        wait_for(lambda: reader._conn is None or None, timeout=10, what="the loop to give way")
        assert thread.is_alive()  # the worker thread waits for the lock
    finally:
        holder.driver_connection.execute("COMMIT")  # type: ignore[union-attr]
        holder.close()
    thread.join(30)
    assert answer == [1]
    assert reader._conn is not None  # reopened by the worker thread
    assert read(reader, count) == 1
    reader.close()


def insert_and_count(conn: Connection) -> int:
    conn.exec_driver_sql("INSERT INTO scratch VALUES (1)")
    return count(conn)


def test_postgres_reads_always_go_to_the_threadpool() -> None:
    pg = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    reader = Reader(pg)
    reader.open()  # nothing to open: no connection is attempted
    assert not reader.on_loop and reader._conn is None


def services(client: TestClient) -> Services:
    found: Services = client.app.state.services  # type: ignore[attr-defined]
    return found


def test_the_api_polls_through_the_loop_connection(sqlite_url: str, tmp_path: Path) -> None:
    settings = fast_settings(sqlite_url, tmp_path / "data")
    with TestClient(create_app(settings, workers=0)) as client:
        job = client.post("/jobs", json=BODY).json()
        reader = services(client).reader
        assert reader is not None and reader._conn is not None
        reader.close()  # closed: the next read goes to the threadpool, which reopens it
        assert client.get(f"/jobs/{job['id']}").json() == job
        assert reader._conn is not None
        assert client.get(f"/jobs/{job['id']}").json() == job
        missing = client.get("/jobs/j_nosuchjob")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")


@pytest.mark.postgres
def test_postgres_api_reads_in_the_threadpool(tmp_path: Path, pg_url: str) -> None:
    settings = fast_settings(pg_url, tmp_path / "data")
    with TestClient(create_app(settings, workers=0)) as client:
        reader = services(client).reader
        assert reader is not None and not reader.on_loop and reader._conn is None
        job = client.post("/jobs", json=BODY).json()
        assert client.get(f"/jobs/{job['id']}").json() == job
