"""Payloads in chunks: written in the caller's transaction, read back chunk by chunk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.config import Settings
from service.db import make_engine, writing
from service.decode import StoredFrame
from service.errors import NotFound
from service.models import payload_table
from service.store import delete_payload, payload_chunks, payload_to_file, write_payload

CHUNK = 1024


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 7])
def test_chunks_read_back_whole_and_in_order(database_url: str, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    engine = make_engine(Settings(database_url=database_url))
    try:
        with writing(engine) as conn:
            frame = StoredFrame(None, 0, size, [], data=data)
            assert write_payload(conn, "j1", "input", frame, CHUNK) == size
            write_payload(conn, "j2", "input", StoredFrame(None, 0, 5, [], data=b"other"), CHUNK)
            stored = conn.execute(
                sa.select(sa.func.count()).where(payload_table.c.job_id == "j1")
            ).scalar_one()
        assert stored == -(-size // CHUNK)
        chunks = list(payload_chunks(engine, "j1", "input"))
        assert [len(c) for c in chunks] == [len(data[i : i + CHUNK]) for i in range(0, size, CHUNK)]
        assert b"".join(chunks) == data
        assert payload_to_file(engine, "j1", "input", tmp_path / "copy").read_bytes() == data
        for job_id, kind in (("j1", "result"), ("nope", "input")):
            with pytest.raises(NotFound):
                list(payload_chunks(engine, job_id, kind))
    finally:
        engine.dispose()


def test_a_payload_deleted_between_chunks_is_not_found_not_short(
    database_url: str, tmp_path: Path
) -> None:
    """A job deleted while its result is read: NotFound, never a silently cut file."""
    engine = make_engine(Settings(database_url=database_url))
    try:
        with writing(engine) as conn:
            frame = StoredFrame(None, 0, 3 * CHUNK, [], data=os.urandom(3 * CHUNK))
            write_payload(conn, "j1", "result", frame, CHUNK)
        chunks = payload_chunks(engine, "j1", "result")
        assert len(next(chunks)) == CHUNK
        with writing(engine) as conn:
            delete_payload(conn, "j1", "result")
        with pytest.raises(NotFound, match="deleted while its result was being read"):
            next(chunks)
    finally:
        engine.dispose()
