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
reaches the end of the log, and the next writer starts the log afresh only once it was
copied whole: one writer committing 256 KB rows grew it to 4.3 GB in 25 s (found in
review). So a log still longer than ``REWIND_FRAMES`` after a checkpoint is copied
again with this process's writes held, as SQLite's own checkpoint held them, and the
next commit rewinds it. Still PASSIVE: FULL or TRUNCATE would wait (up to the busy
timeout, holding every writer) for a reader of an older snapshot, such as a result
being streamed. Writers in other processes are not held; each process's checkpointer
holds its own.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.engine import Engine

from service.db import writer_turn
from service.logs import log_streak, worth_logging

log = logging.getLogger("framejobs.db")
# An idle checkpoint costs ~7 us, one after a few small commits ~0.6 ms (a sync of
# the database file); once a second bounds the log to a second of writes. Not more
# often: copying a 100 MB frame's log takes ~0.2 s of disk and CPU, and begun at once
# it ran beside the frame's job (bench.engine: its run 0.95-1.32x bare DuckDB, against
# 0.97-1.04x with the copy after it).
INTERVAL_S = 1.0
REWIND_FRAMES = 16_384  # 64 MiB of 4 KiB pages; SQLite's own point is 1,000


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
        """(busy, frames in the log, frames checkpointed), as SQLite reports them."""
        result = self._pragma("PASSIVE")
        _, frames, done = result
        if frames >= REWIND_FRAMES and done < frames:
            with writer_turn(self.engine):
                result = self._pragma("PASSIVE")
        return result

    def _pragma(self, mode: str) -> tuple[int, int, int]:
        raw = self.engine.raw_connection()
        try:
            busy, frames, done = raw.cursor().execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        finally:
            raw.close()
        return int(busy), int(frames), int(done)

    def _run(self) -> None:
        failures = behind = 0
        while not self._stop.wait(self.interval_s):
            try:
                _, frames, done = self.checkpoint()
                failures = 0
            except Exception:  # a failing checkpoint must not end the checkpoints
                failures += 1
                log_streak(log, "WAL checkpoint", failures)
                continue
            behind = behind + 1 if frames >= REWIND_FRAMES and done < frames else 0
            if behind and worth_logging(behind):
                log.warning(
                    "the SQLite log (%d pages) could not be copied whole: a reader of an "
                    "older snapshot or another process's writer kept it (%d times in a row)",
                    frames,
                    behind,
                )
