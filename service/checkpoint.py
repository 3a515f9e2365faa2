"""SQLite WAL checkpoints on a thread of their own.

SQLite checkpoints inside the commit that takes the log past 1,000 pages: that writer
copies the log into the database file and syncs it before its commit returns (0.25 s
after a 100 MB frame), while it still holds this process's writer turn, so every
submit, claim and save behind it waits too. The long-running processes (``serve``,
``worker``) turn that off (``wal_autocheckpoint=0``, see :mod:`service.db`) and
checkpoint here instead, PASSIVE: it never waits for a reader or a writer. Short-lived
commands keep SQLite's own checkpoints, and the last connection to close checkpoints
anyway.

A passive checkpoint runs beside the writers, so under back-to-back commits it never
copies the whole log, and SQLite starts a log afresh only once it was: one writer
committing 256 KB rows grew it to 4.3 GB in 25 s (found in review). So once the log is
past ``REWIND_FRAMES``, the checkpointer holds this process's writers, as SQLite's own
checkpoint held them, and TRUNCATEs: copies the log whole and empties it, waiting at
most ``READERS_WAIT_MS`` for readers of older snapshots (a result being streamed)
before it gives up until the next round; its busy handler would otherwise keep every
writer waiting for the whole busy timeout. Writers in other processes wait too: the
TRUNCATE takes SQLite's write lock (two processes writing back to back, 938 MiB each:
the log at most 226 MiB, measured in review).
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.engine import Engine

from service.db import BUSY_TIMEOUT_MS, writer_turn
from service.logs import log_streak, worth_logging

log = logging.getLogger("framejobs.db")
# An idle checkpoint costs ~7 us, one after a few small commits ~0.6 ms (a sync of
# the database file); once a second bounds the log to a second of writes. Not more
# often: copying a 100 MB frame's log takes ~0.2 s of disk and CPU, and begun at once
# it ran beside the frame's job (bench.engine: its run 0.95-1.32x bare DuckDB, against
# 0.97-1.04x with the copy after it).
INTERVAL_S = 1.0
REWIND_FRAMES = 16_384  # 64 MiB of 4 KiB pages; SQLite's own point is 1,000
READERS_WAIT_MS = 100
WRITERS_WAIT_S = 1.0  # a writer holds its turn for milliseconds; this is no stall


class Checkpointer:
    def __init__(self, engine: Engine, interval_s: float = INTERVAL_S) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fj-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def checkpoint(self) -> tuple[int, int, int]:
        """(busy, frames in the log, frames checkpointed), as SQLite reports them; after
        a rewind, of the TRUNCATE (0, 0, 0 when it emptied the log)."""
        result = self._pragma("PASSIVE")
        # Even when it reports all copied: it counts to its own snapshot, and the
        # writers went on meanwhile (found in review).
        if result[1] >= REWIND_FRAMES:
            with writer_turn(self.engine, timeout_s=WRITERS_WAIT_S):
                result = self._pragma("TRUNCATE", busy_ms=READERS_WAIT_MS)
        return result

    def _pragma(self, mode: str, busy_ms: int | None = None) -> tuple[int, int, int]:
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            if busy_ms is not None:
                cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            try:
                busy, frames, done = cursor.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            finally:
                if busy_ms is not None:
                    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        finally:
            raw.close()
        return int(busy), int(frames), int(done)

    def _run(self) -> None:
        failures = refused = 0
        while not self._stop.wait(self.interval_s):
            try:
                busy, frames, _ = self.checkpoint()
                failures = 0
            except Exception:  # a failing checkpoint must not end the checkpoints
                failures += 1
                log_streak(log, "WAL checkpoint", failures)
                continue
            refused = refused + 1 if busy and frames >= REWIND_FRAMES else 0
            if refused and worth_logging(refused):
                log.warning(
                    "the SQLite log (%d pages) could not be emptied: a reader of an older "
                    "snapshot or another process's writer kept it (%d times in a row)",
                    frames,
                    refused,
                )
