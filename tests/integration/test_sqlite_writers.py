"""SQLite write transactions of one process queue on a lock of their own rather than
in SQLite's sleeping busy handler (service/db.py)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service import checkpoint, db
from service.checkpoint import Checkpointer
from service.config import Settings
from service.db import make_engine, reading, writing
from service.runtime import Runtime
from tests.support.waiting import wait_for


@pytest.fixture
def engine(scratch_engine: Engine) -> Engine:
    return scratch_engine


def test_a_write_transaction_holds_the_process_writer_lock(engine: Engine) -> None:
    lock = db._WRITE_LOCKS[engine]
    with writing(engine):
        assert lock.locked()
    assert not lock.locked()


def test_a_failed_write_transaction_rolls_back_and_releases_the_lock(engine: Engine) -> None:
    with pytest.raises(RuntimeError), writing(engine) as conn:
        conn.exec_driver_sql("INSERT INTO scratch VALUES (1)")
        raise RuntimeError("boom")
    assert not db._WRITE_LOCKS[engine].locked()
    with reading(engine) as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM scratch")).scalar() == 0


def test_concurrent_writers_all_commit(engine: Engine) -> None:
    errors: list[BaseException] = []

    def write_many(base: int) -> None:
        try:
            for n in range(25):
                with writing(engine) as conn:
                    conn.exec_driver_sql("INSERT INTO scratch VALUES (?)", (base + n,))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write_many, args=(i * 100,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    with reading(engine) as conn:
        assert conn.execute(sa.text("SELECT count(DISTINCT n) FROM scratch")).scalar() == 400


def test_other_databases_get_no_process_lock() -> None:
    engine = make_engine(Settings(database_url="postgresql+psycopg://u@127.0.0.1:1/none"))
    try:
        assert engine not in db._WRITE_LOCKS
    finally:
        engine.dispose()


@pytest.mark.parametrize(("setting", "level"), [(None, 2), ("normal", 1), ("FULL", 2)])
def test_synchronous_level_follows_the_setting(
    sqlite_url: str, setting: str | None, level: int
) -> None:
    """FULL (2) by default: a commit answered with a 202 survives a power loss."""
    values = {} if setting is None else {"sqlite_synchronous": setting}
    engine = make_engine(Settings(database_url=sqlite_url, **values))  # type: ignore[arg-type]
    try:
        with reading(engine) as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == level
    finally:
        engine.dispose()


def test_the_database_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """They hold every payload and the generated webhook signing secret; under the
    usual umask (022) SQLite made them readable by every user of the host."""
    previous = os.umask(0o022)
    try:
        engine = make_engine(Settings(database_url=f"sqlite:///{tmp_path / 'fj.db'}"))
        with writing(engine) as conn:
            conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        files = sorted(tmp_path.glob("fj.db*"))
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
        engine.dispose()
    finally:
        os.umask(previous)
    assert "fj.db-wal" in modes and set(modes.values()) == {0o600}, modes


def test_the_spool_folder_is_its_owners_only(tmp_path: Path) -> None:
    """Uploaded inputs and results wait there as Parquet files."""
    previous = os.umask(0o022)
    try:
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'fj.db'}", data_dir=tmp_path)
        runtime = Runtime.start(settings, workers=0, migrate=True)
        runtime.stop()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(settings.spool_dir.stat().st_mode) == 0o700


BLOB = 8 << 20  # past SQLite's own checkpoint point: 1,000 pages of 4 KiB


def _write_blob(engine: Engine) -> None:
    with writing(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS blobs (b BLOB)")
        conn.exec_driver_sql("INSERT INTO blobs VALUES (?)", (os.urandom(BLOB),))


def test_background_checkpoints_leave_the_log_out_of_the_commit(tmp_path: Path) -> None:
    """A commit that fills the log no longer copies it into the database file itself
    (holding the writer turn meanwhile): the checkpointer does, apart."""
    path = tmp_path / "fj.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"), background_checkpoints=True)
    try:
        _write_blob(engine)
        assert path.stat().st_size < BLOB  # still only in the log
        busy, frames, done = Checkpointer(engine).checkpoint()
        assert busy == 0 and frames == done > BLOB // 4096
        assert path.stat().st_size > BLOB
    finally:
        engine.dispose()


def test_commands_keep_sqlites_own_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "fj.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
    try:
        _write_blob(engine)
        assert path.stat().st_size > BLOB
    finally:
        engine.dispose()


def test_a_running_service_checkpoints_on_its_own(tmp_path: Path) -> None:
    path = tmp_path / "fj.db"
    settings = Settings(database_url=f"sqlite:///{path}", data_dir=tmp_path)
    runtime = Runtime.start(settings, workers=0, migrate=True)
    try:
        _write_blob(runtime.services.engine)
        wait_for(lambda: path.stat().st_size > BLOB, timeout=10, what="a checkpoint")
    finally:
        runtime.stop()


ROWS, ROW = 3_000, 64 << 10  # 188 MiB in all


@pytest.mark.parametrize("readers", ["none", "in transactions"])
def test_the_log_is_emptied_under_back_to_back_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readers: str
) -> None:
    """A passive checkpoint beside a writer that never pauses never copies the whole
    log, so the log is never started afresh and grows with every commit; past
    REWIND_FRAMES the checkpointer empties it with this process's writers held, and
    readers whose transactions span a commit do not keep it from doing so."""
    monkeypatch.setattr(checkpoint, "REWIND_FRAMES", 256)  # 1 MiB
    path = tmp_path / "fj.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"), background_checkpoints=True)
    with writing(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE rows (b BLOB)")

    def write() -> None:
        row = os.urandom(ROW)
        for _ in range(ROWS):
            with writing(engine) as conn:
                conn.exec_driver_sql("INSERT INTO rows VALUES (?)", (row,))

    def read() -> None:
        while writer.is_alive():
            with reading(engine) as conn:
                conn.exec_driver_sql("SELECT count(*) FROM rows WHERE rowid < 10").all()
                time.sleep(0.005)  # a transaction that other commits happen during

    writer = threading.Thread(target=write)
    threads = [writer] + [threading.Thread(target=read) for _ in range(2 * (readers != "none"))]
    checkpointer = Checkpointer(engine, interval_s=0.1)  # the service's own thread
    checkpointer.start()
    for thread in threads:
        thread.start()
    largest = 0
    try:
        while writer.is_alive():
            largest = max(largest, Path(f"{path}-wal").stat().st_size)
            writer.join(0.01)
    finally:
        for thread in threads:
            thread.join()
        checkpointer.stop()
        engine.dispose()
    assert largest < ROWS * ROW // 2  # without the rewind: nearly all of it


def test_a_reader_of_an_older_snapshot_holds_the_writers_only_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Emptying the log waits for readers of older snapshots (a result being
    streamed) while it holds every writer of the process: at most READERS_WAIT_MS,
    not the 30 s busy timeout; the next round empties it once the reader is done."""
    monkeypatch.setattr(checkpoint, "REWIND_FRAMES", 16)
    path = tmp_path / "fj.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"), background_checkpoints=True)
    try:
        with writing(engine) as conn:
            conn.exec_driver_sql("CREATE TABLE rows (b BLOB)")
        results: list[tuple[int, int, int]] = []
        with reading(engine) as held:
            held.exec_driver_sql("SELECT count(*) FROM rows").all()  # its snapshot
            with writing(engine) as conn:
                conn.exec_driver_sql("INSERT INTO rows VALUES (?)", (os.urandom(ROW),))
            rewind = threading.Thread(
                target=lambda: results.append(Checkpointer(engine).checkpoint())
            )
            rewind.start()
            rewind.join(10)  # a deadline, not a measure: without the bound it is 30 s
            assert results and results[0][0] == 1  # it gave up, and let the writers go
        assert Checkpointer(engine).checkpoint() == (0, 0, 0)
    finally:
        engine.dispose()
