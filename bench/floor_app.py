"""The floor of a durable submit: routes that do only what any durable submit must.

``POST /floor`` takes the same body as ``POST /jobs``, turns the frame's columns into
an Arrow table, encodes it as Parquet and commits a job row and the payload in one
SQLite transaction (WAL, ``synchronous=FULL``, as the service) before it answers 202.
It validates nothing, keeps no events, idempotency keys or webhooks, and runs SQLite
on the event loop itself, with no SQLAlchemy and no threadpool: nothing a real service
could do with less. ``POST /floor-group`` is the same with group commit: the requests
that arrive while a transaction is pending commit together, in one transaction.

They show how far below the bare parse (``POST /bare``) durability alone puts a
submit, so the service is measured against both, in the same process.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import FastAPI, Request
from starlette.responses import Response

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS floor_job (id TEXT PRIMARY KEY, pipeline TEXT, params TEXT)",
    "CREATE TABLE IF NOT EXISTS floor_payload (job_id TEXT PRIMARY KEY, data BLOB)",
)
_JOB = "INSERT INTO floor_job VALUES (?, ?, ?)"
_PAYLOAD = "INSERT INTO floor_payload VALUES (?, ?)"

Row = tuple[str, str, str]


@dataclass
class _Group:
    """Requests waiting for the next group commit."""

    db: sqlite3.Connection
    waiting: list[tuple[Row, bytes, asyncio.Future[None]]] = field(default_factory=list)

    def add(self, row: Row, payload: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not self.waiting:
            loop.call_soon(self.commit)
        self.waiting.append((row, payload, done))
        return done

    def commit(self) -> None:
        batch, self.waiting = self.waiting, []
        try:
            _transaction(self.db, [b[0] for b in batch], [(b[0][0], b[1]) for b in batch])
        except sqlite3.Error as exc:
            for _, _, done in batch:
                done.set_exception(exc)
            return
        for _, _, done in batch:
            done.set_result(None)


def add_floor_routes(app: FastAPI, data_dir: Path) -> None:
    db = _open(data_dir / "floor.db")
    group = _Group(db)

    @app.post("/floor", include_in_schema=False)
    async def floor(request: Request) -> Response:
        row, payload = _encode(json.loads(await request.body()))
        _transaction(db, [row], [(row[0], payload)])
        return _accepted(row[0])

    @app.post("/floor-group", include_in_schema=False)
    async def floor_group(request: Request) -> Response:
        row, payload = _encode(json.loads(await request.body()))
        await group.add(row, payload)
        return _accepted(row[0])


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    for statement in _SCHEMA:
        db.execute(statement)
    return db


def _encode(body: dict[str, Any]) -> tuple[Row, bytes]:
    table = pa.table(body["frame"]["columns"])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    row = (uuid.uuid4().hex, str(body["pipeline"]), json.dumps(body.get("params")))
    return row, sink.getvalue().to_pybytes()


def _transaction(
    db: sqlite3.Connection, jobs: list[Row], payloads: list[tuple[str, bytes]]
) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(_JOB, jobs)
        db.executemany(_PAYLOAD, payloads)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _accepted(job_id: str) -> Response:
    body = json.dumps({"id": job_id, "status": "queued"})
    return Response(body, status_code=202, media_type="application/json")
