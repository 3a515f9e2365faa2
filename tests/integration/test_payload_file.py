"""A stored payload read in place: seekable, chunk by chunk, never silently short."""

from __future__ import annotations

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.config import Settings
from service.db import make_engine, writing
from service.decode import StoredFrame
from service.errors import NotFound
from service.payload_file import PayloadFile
from service.store import delete_payload, write_payload

CHUNK = 1024


def _store(database_url: str, data: bytes):  # type: ignore[no-untyped-def]
    engine = make_engine(Settings(database_url=database_url))
    with writing(engine) as conn:
        write_payload(conn, "j1", "result", StoredFrame(None, 0, len(data), [], data=data), CHUNK)
    return engine


@pytest.mark.parametrize("size", [1, CHUNK, 3 * CHUNK + 7])
def test_reads_seeks_and_tells_like_a_file(database_url: str, size: int) -> None:
    data = os.urandom(size)
    engine = _store(database_url, data)
    try:
        stored = PayloadFile(engine, "j1", "result")
        assert stored.size == size and stored.read() == data
        for offset in sorted({o for o in (0, 1, CHUNK - 1, CHUNK, size - 1, size) if o <= size}):
            stored.seek(offset)
            assert stored.read(CHUNK + 3) == data[offset : offset + CHUNK + 3]
            assert stored.tell() == min(size, offset + CHUNK + 3)
        assert stored.seek(-1, io.SEEK_END) == size - 1 and stored.read() == data[-1:]
        assert stored.read() == b""
    finally:
        engine.dispose()


def test_a_parquet_reader_needs_no_copy(database_url: str) -> None:
    table = pa.table({"i": list(range(5000)), "s": [str(i) * 3 for i in range(5000)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=1000)
    engine = _store(database_url, sink.getvalue().to_pybytes())
    try:
        parquet = pq.ParquetFile(PayloadFile(engine, "j1", "result"))
        assert parquet.metadata.num_row_groups == 5
        assert parquet.read_row_group(3).equals(table.slice(3000, 1000))
        assert parquet.read().equals(table)
    finally:
        engine.dispose()


def test_a_payload_gone_while_read_is_not_found(database_url: str) -> None:
    engine = _store(database_url, os.urandom(3 * CHUNK))
    try:
        with pytest.raises(NotFound):
            PayloadFile(engine, "j1", "input")
        stored = PayloadFile(engine, "j1", "result")
        assert len(stored.read(CHUNK)) == CHUNK
        with writing(engine) as conn:
            delete_payload(conn, "j1", "result")
        with pytest.raises(NotFound, match="deleted while its result was being read"):
            stored.read(CHUNK)
    finally:
        engine.dispose()
