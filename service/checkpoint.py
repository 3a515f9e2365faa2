"""SQLite WAL checkpoints on a thread of their own.

SQLite checkpoints inside the commit that takes the log past 1,000 pages: that writer
copies the log into the database file and syncs it before its commit returns (0.25 s
after a 100 MB frame), while it still holds this process's writer turn, so every
submit, claim and save behind it waits too. The long-running processes (``serve``,
``worker``) turn that off (``wal_autocheckpoint=0``, see :mod:`service.db`) and
checkpoint here instead, PASSIVE: it never waits for a reader or a writer. Short-lived
commands keep SQLite's own checkpoints, and the last connection to close checkpoints
anyway.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.engine import Engine

from service.logs import log_streak

log = logging.getLogger("framejobs.db")
# An idle checkpoint costs ~7 us, one after a few small commits ~0.6 ms (a sync of
# the database file); once a second bounds the log to a second of writes. Not more
# often: copying a 100 MB frame's log takes ~0.2 s of disk and CPU, and begun at once
# it ran beside the frame's job (bench.engine: its run 0.95-1.32x bare DuckDB, against
# 0.97-1.04x with the copy after it).
INTERVAL_S = 1.0


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
        raw = self.engine.raw_connection()
        try:
            row = raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            raw.close()
        busy, frames, done = row
        return int(busy), int(frames), int(done)

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(self.interval_s):
            try:
                self.checkpoint()
                failures = 0
            except Exception:  # a failing checkpoint must not end the checkpoints
                failures += 1
                log_streak(log, "WAL checkpoint", failures)
