"""A stored payload read in place: a seekable file over its chunks in the database.

Parquet readers need the footer first and then only the row groups they decode, so a
result can be encoded (or one JSON page of it read) without copying the whole file out
of the database to disk first. Each chunk is read by a single statement of its own; no
transaction stays open while a client reads slowly.
"""

from __future__ import annotations

import bisect
import io
from collections import OrderedDict

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.db import reading
from service.errors import NotFound
from service.models import payload_table
from service.store import read_chunk

P = payload_table.c
_SIZES = (
    sa.select(P.seq, sa.func.length(P.data))
    .where(P.job_id == sa.bindparam("job_id"), P.kind == sa.bindparam("kind"))
    .order_by(P.seq)
)
_KEPT_CHUNKS = 2  # the footer's chunk and the one being scanned


class PayloadFile(io.RawIOBase):
    """Read-only and seekable. A chunk that has gone (the job was deleted meanwhile)
    raises NotFound, never a silently shorter file."""

    def __init__(self, engine: Engine, job_id: str, kind: str) -> None:
        super().__init__()
        self._engine, self._job_id, self._kind = engine, job_id, kind
        with reading(engine, single=True) as conn:
            sizes = conn.execute(_SIZES, {"job_id": job_id, "kind": kind}).all()
        if not sizes:
            raise NotFound(f"job {job_id} has no stored {kind}")
        self._seqs = [seq for seq, _ in sizes]
        self._starts = [0]
        for _, size in sizes:
            self._starts.append(self._starts[-1] + int(size))
        self._position = 0
        self._chunks: OrderedDict[int, bytes] = OrderedDict()

    @property
    def size(self) -> int:
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._position < self.size:
            index = bisect.bisect_right(self._starts, self._position) - 1
            chunk = self._chunk(index)
            start = self._position - self._starts[index]
            piece = chunk[start : start + len(view) - done]
            view[done : done + len(piece)] = piece
            done += len(piece)
            self._position += len(piece)
        return done

    def _chunk(self, index: int) -> bytes:
        if index in self._chunks:
            self._chunks.move_to_end(index)
            return self._chunks[index]
        data, _ = read_chunk(self._engine, self._job_id, self._kind, self._seqs[index])
        self._chunks[index] = data
        if len(self._chunks) > _KEPT_CHUNKS:
            self._chunks.popitem(last=False)
        return self._chunks[index]
