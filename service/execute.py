"""Run a pipeline on DuckDB: one database per process (plus a sandboxed one for the
``sql`` pipeline), one cursor per running job, wrapped in an :class:`ExecutionHandle`.

This module never touches the job database: it turns an input Parquet file into a
result Parquet file, or raises a :class:`~service.errors.JobError`.

The sandbox has ``lock_configuration`` on, after which no cursor can change a setting,
including the per-connection progress-bar options that ``query_progress()`` needs. So
the sandbox's job cursors are made and configured before it is locked, and lent out
from a pool; each goes back with its ``input`` view dropped.
"""

from __future__ import annotations

import decimal
import logging
import math
import numbers
import os
import queue
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from service.config import Settings
from service.decode import BATCH_ROWS, StoredFrame, parquet_writer, stored_schema
from service.errors import (
    Interrupted,
    InvalidFrame,
    JobCancelled,
    JobError,
    JobTimeout,
    PipelineError,
    first_line,
)
from service.exporting import result_reader
from service.frames import columns_info, storable_batch, storable_schema
from service.pipelines import Pipeline

IN_MEMORY_BYTES = 16 << 20  # decoded; see _arrow_input
IN_MEMORY_BATCH_ROWS = 1024
log = logging.getLogger("framejobs.execute")
Reason = Literal["cancel", "timeout", "shutdown"]
MAX_MESSAGE = 1000  # characters of a progress message kept
_PROGRESS_OPTIONS = ("SET enable_progress_bar=true", "SET enable_progress_bar_print=false")
_UTC = "SET GLOBAL TimeZone='UTC'"  # not settable in connect(): ICU loads after it
_SANDBOX_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    # With external access off, DuckDB still lets queries read the temp directory
    # (glob, read_blob), which holds the other jobs' spilled data in plain form. A
    # directory of the sandbox's own would still be shared by the sql jobs running
    # side by side, so the sandbox does not spill: past memory_limit a query fails.
    "temp_directory": "",
    # DuckDB derives its secret and extension folders from the user's home and shows
    # them in duckdb_settings() and in errors: the server's user and paths. The sandbox
    # reads neither folder, so it gets a home that says nothing.
    "home_directory": "/nonexistent",
}
# Set after connecting: given at connect, it also refuses the temp_directory setting.
_NO_FILES = "SET enable_external_access=false"


class Engines:
    """The process's DuckDB databases. Close them on shutdown (see DESIGN.md).

    An internal or fatal DuckDB error invalidates the database it happened in: every
    later query on it fails. :meth:`recover` replaces that database, so one bad job
    does not take the pipeline down for every job after it until a restart."""

    def __init__(self, settings: Settings, *, job_slots: int) -> None:
        self._common: dict[str, Any] = {
            "threads": settings.duckdb_threads,
            "memory_limit": settings.duckdb_memory_limit,
        }
        if settings.duckdb_temp_directory:
            self._common["temp_directory"] = str(settings.duckdb_temp_directory)
        self._slots = max(job_slots, 1)
        self._lock = threading.Lock()
        self._retired: list[tuple[duckdb.DuckDBPyConnection, _Pool | None]] = []
        self.open_db = self._database({})
        self.sandbox_db, self._sandbox_pool = self._sandbox()
        self._closed = False

    def _database(self, extra: dict[str, Any]) -> duckdb.DuckDBPyConnection:
        database = duckdb.connect(":memory:", config={**self._common, **extra})
        # TIMESTAMPTZ results carry this zone; the host's zone would leak into them.
        database.execute(_UTC)
        return database

    def _sandbox(self) -> tuple[duckdb.DuckDBPyConnection, _Pool]:
        database = self._database(_SANDBOX_CONFIG)
        database.execute(_NO_FILES)
        pool: _Pool = queue.Queue()
        for _ in range(self._slots):
            pool.put(_configured(database.cursor()))
        database.execute("SET lock_configuration=true")
        return database, pool

    def recover(self, sandboxed: bool) -> None:
        """Replace the database an internal error invalidated; its cursors still in
        use end with errors and are closed with the rest on shutdown."""
        with self._lock:
            if sandboxed:
                self._retired.append((self.sandbox_db, self._sandbox_pool))
                self.sandbox_db, self._sandbox_pool = self._sandbox()
            else:
                self._retired.append((self.open_db, None))
                self.open_db = self._database({})
        log.error("a DuckDB database was invalidated by an internal error and replaced")

    @contextmanager
    def job_cursor(self, sandboxed: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        if not sandboxed:
            cursor = _configured(self.open_db.cursor())
            try:
                yield cursor
            finally:
                cursor.close()
            return
        pool, database = self._sandbox_pool, self.sandbox_db
        cursor = pool.get()
        try:
            yield cursor
        finally:
            following = self._cursor_after(cursor, database)
            if following is not None:
                pool.put(following)  # back where it came from, even if that pool was retired

    def _cursor_after(
        self, cursor: duckdb.DuckDBPyConnection, database: duckdb.DuckDBPyConnection
    ) -> duckdb.DuckDBPyConnection | None:
        """The cursor the next job of the slot gets; None once the engines are closed.
        Never raises: it runs while the job's own error (an ``Interrupted``, say) is on
        its way out, and must not replace it."""
        if _reset_for_next_job(cursor):
            return cursor
        if self._closed:  # shutdown closed the database under a job that outlived it
            return None
        # The pipeline closed it (`with ctx.connection as con:` does); lent again, it
        # failed every later job of the slot. The locked sandbox cannot configure a
        # new cursor: this one shows no DuckDB progress.
        log.warning("a sandboxed pipeline closed its connection; it was replaced")
        try:
            return database.cursor()
        except duckdb.Error:  # the database went too (recovered, or closing meanwhile)
            return None

    @contextmanager
    def check_cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A sandbox cursor for submit-time checks (no progress needed)."""
        cursor = self.sandbox_db.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for database, pool in [*self._retired, (self.sandbox_db, self._sandbox_pool)]:
            while pool is not None and not pool.empty():
                pool.get_nowait().close()
            database.close()
        self.open_db.close()


_Pool = queue.Queue[duckdb.DuckDBPyConnection]


def _configured(cursor: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    for statement in _PROGRESS_OPTIONS:
        cursor.execute(statement)
    return cursor


def _reset_for_next_job(cursor: duckdb.DuckDBPyConnection) -> bool:
    """Drop the job's ``input`` and reseed; False when the cursor was closed under the job."""
    try:
        cursor.unregister("input")
    except duckdb.ConnectionException:
        return False
    except duckdb.Error:
        pass
    # A query's setseed() stays with the cursor: the next job's random() and
    # gen_random_uuid() would follow a sequence the earlier client chose.
    try:
        cursor.execute("SELECT setseed(?)", [secrets.randbelow(2**52) / 2**52]).fetchall()
    except duckdb.Error:
        pass
    return True


class ExecutionHandle:
    """One running job: its cursor, progress, and the means to stop it.

    ``progress()``, ``interrupt()`` and ``check_deadline()`` are called from the
    monitor thread while the job thread runs the pipeline.
    """

    def __init__(self, *, job_id: str, attempt: int, params: Any, timeout_s: float | None) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.params = params
        self.deadline = time.monotonic() + timeout_s if timeout_s else None
        self.timeout_s = timeout_s
        self.reason: Reason | None = None
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._reported: tuple[float | None, str | None] = (None, None)
        self._lock = threading.Lock()

    # -- the Context protocol, as seen by the pipeline ------------------------------
    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        assert self._connection is not None, "the handle is not running"
        return self._connection

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        # Checked here, in the pipeline's own call: a bad value found later, when the
        # monitor saves it, would fail the monitor instead of the pipeline.
        if message is not None and not isinstance(message, str):
            raise TypeError(f"a progress message is text, not {type(message).__name__}")
        if message is not None and len(message) > MAX_MESSAGE:
            # saved with the job and sent with every read and event of it
            message = message[: MAX_MESSAGE - 1] + "…"
        percent = _finite(done) if total is None else _share(_finite(done), _finite(total))
        with self._lock:
            self._reported = (max(0.0, min(100.0, percent)), message)
        self.check_cancelled()

    def check_cancelled(self) -> None:
        if self.reason is not None:
            raise self.stop_error()

    # -- the monitor's side -----------------------------------------------------------
    def attach(self, connection: duckdb.DuckDBPyConnection | None) -> None:
        # Under the lock: once detached, no interrupt can still reach the cursor, which
        # goes back to a pool for the next job (or is closed).
        with self._lock:
            self._connection = connection

    @property
    def message(self) -> str | None:
        """The pipeline's last progress message."""
        with self._lock:
            return self._reported[1]

    def snapshot(self) -> tuple[float | None, str | None]:
        """(percent, message): the pipeline's own report, else DuckDB's query progress."""
        with self._lock:
            percent, message = self._reported
            query = _query_progress(self._connection)
        if query >= 0 and (percent is None or percent < 100.0):
            percent = max(percent or 0.0, min(query, 100.0))
        return percent, message

    def interrupt(self, reason: Reason) -> None:
        if self.reason is None:
            self.reason = reason
        with self._lock:
            if self._connection is None:
                return
            try:
                self._connection.interrupt()
            except duckdb.Error:  # closed under us by an engine recovery: nothing runs
                log.debug("job %s: its cursor was already closed", self.job_id)

    def check_deadline(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.interrupt("timeout")
            return True
        return False

    def stop_error(self) -> JobError:
        if self.reason == "timeout":
            return JobTimeout(f"the job ran longer than its timeout of {self.timeout_s:g} s")
        if self.reason == "shutdown":
            return Interrupted("the worker shut down while the job ran; it will run again")
        return JobCancelled("the job was cancelled while running")


def _query_progress(connection: duckdb.DuckDBPyConnection | None) -> float:
    if connection is None:
        return -1.0
    try:
        return float(connection.query_progress())
    except duckdb.Error:
        return -1.0


def _finite(value: object) -> float:
    # Decimal is no numbers.Real, yet DuckDB gives one for any sum() over a DECIMAL
    if isinstance(value, bool) or not isinstance(value, numbers.Real | decimal.Decimal):
        raise TypeError(f"progress is a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"progress is a finite number, not {value}")
    return float(value)


def _share(done: float, total: float) -> float:
    return 100.0 * done / total if total else 100.0


def run_pipeline(
    engines: Engines,
    handle: ExecutionHandle,
    pipeline: Pipeline,
    *,
    input_path: Path,
    result_path: Path,
    max_result_bytes: int | None = None,
) -> StoredFrame:
    """Run ``pipeline`` over the input file; write and describe the result file."""
    with engines.job_cursor(pipeline.sandboxed) as cursor:
        handle.attach(cursor)
        try:
            handle.check_cancelled()
            relation = _input_relation(cursor, input_path, pipeline.sandboxed)
            result = pipeline(handle, relation)
            return _write_result(handle, result, result_path, max_result_bytes)
        except duckdb.InterruptException as exc:
            if handle.reason is None:  # not ours: the pipeline interrupted itself
                raise PipelineError(f"the query was interrupted: {first_line(exc)}") from exc
            raise handle.stop_error() from exc
        except JobError as exc:
            _raise_job_error(handle, exc, input_path, result_path)
        except (duckdb.InternalException, duckdb.FatalException) as exc:
            engines.recover(pipeline.sandboxed)
            raise PipelineError(_scrubbed(first_line(exc), input_path, result_path)) from exc
        except duckdb.Error as exc:
            if handle.reason is not None:
                raise handle.stop_error() from exc
            raise PipelineError(_scrubbed(first_line(exc), input_path, result_path)) from exc
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: no use in a job thread
            if handle.reason is not None:
                raise handle.stop_error() from exc
            # The client sees one line; the pipeline's author needs the traceback.
            log.warning("job %s: pipeline %r raised", handle.job_id, pipeline.name, exc_info=exc)
            message = type(exc).__name__ + (f": {first_line(exc)}" if str(exc) else "")
            raise PipelineError(_scrubbed(message, input_path, result_path)) from exc
        finally:
            handle.attach(None)


def _raise_job_error(
    handle: ExecutionHandle, exc: JobError, input_path: Path, result_path: Path
) -> NoReturn:
    """End the job as a job error raised while the pipeline ran says, or as it should."""
    # A pipeline that wraps the interrupt in an error of its own (say a
    # TransientError) still ended because it was stopped: say why.
    if handle.reason is not None:
        raise handle.stop_error() from exc
    message = _scrubbed(first_line(exc), input_path, result_path)
    if not isinstance(exc, PipelineError):
        # Stops are the service's to raise: a made-up Interrupted would be re-queued
        # with its attempt given back, and run again at once, forever.
        raise PipelineError(f"{type(exc).__name__}: {message}") from exc
    exc.detail = message  # shown to clients, as any other pipeline error
    raise exc


def _input_relation(
    cursor: duckdb.DuckDBPyConnection, path: Path, sandboxed: bool
) -> duckdb.DuckDBPyRelation:
    if sandboxed:
        # The sandbox cannot open files; it scans what Arrow reads for it.
        cursor.register("input", _arrow_input(path))
        return cursor.table("input")
    # A TEMP view belongs to this cursor; create_view() would make one view in the
    # shared database, so concurrent jobs would read (and race on) each other's input.
    literal = str(path).replace("'", "''")
    cursor.execute(f"CREATE OR REPLACE TEMP VIEW input AS SELECT * FROM read_parquet('{literal}')")
    return cursor.table("input")


def _arrow_input(path: Path) -> pa.Table | pads.Dataset:
    """An input that decodes to at most ``IN_MEMORY_BYTES`` as a table in memory: DuckDB
    scans one ~1.2 ms faster than a dataset (a 10-row frame: 1.8 against 3.0 ms to
    register, count and unregister), a quarter of a trivial job's run. A larger input
    stays a dataset, scanned batch by batch and only in the columns the query reads.

    Decoded, not as the footer tells: its byte counts are of encoded pages, and a 140 KB
    file of one repeated text decoded to an 800 MB table; nor by rows alone: 60,000 rows
    of 8 KB values are 458 MiB. So it is read in small batches, given up past the limit,
    and at most one small batch is decoded beyond it. Buffered, not pre-buffered: by
    default the whole row group is read before its first batch (a 458 MiB input took
    637 MiB of RSS only to be given up)."""
    with pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False) as file:
        if file.metadata.num_rows <= BATCH_ROWS:
            batches: list[pa.RecordBatch] = []
            size = 0
            for batch in file.iter_batches(batch_size=IN_MEMORY_BATCH_ROWS, use_threads=False):
                size += batch.nbytes
                if size > IN_MEMORY_BYTES:
                    break
                batches.append(batch)
            else:
                return pa.Table.from_batches(batches, schema=file.schema_arrow)
    return pads.dataset(str(path), format="parquet")


def _write_result(
    handle: ExecutionHandle, result: Any, path: Path, max_bytes: int | None
) -> StoredFrame:
    reader = result_reader(result)
    rows = 0
    try:
        schema = storable_schema(reader.schema)  # e.g. INTERVAL has no Parquet type
        with parquet_writer(path, schema) as writer:
            for batch in reader:
                handle.check_cancelled()
                writer.write_batch(storable_batch(batch, row_offset=rows))
                rows += batch.num_rows
                _check_result_size(path, max_bytes)
    except InvalidFrame as exc:  # the checks are the frames', but this is the result
        raise PipelineError(f"the result's {exc.detail}") from exc
    stored = stored_schema(schema, path)
    return StoredFrame(path, rows, path.stat().st_size, columns_info(stored))


def _check_result_size(path: Path, max_bytes: int | None) -> None:
    # One short query (select ... from range(1e12)) writes tens of MB a second until
    # the disk is full, which fails every other job and write meanwhile.
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise PipelineError(
            f"the result is larger than the limit of {max_bytes} bytes (FRAMEJOBS_MAX_RESULT_BYTES)"
        )


def _scrubbed(message: str, *paths: Path) -> str:
    """Job errors are shown to clients: no paths of this machine in them. The longest
    path first (the job folder may lie under the working directory, and either may be
    under home, or home under them), and only whole names: /srv/a is not in /srv/ab."""
    places = {str(p.parent): "<job folder>" for p in paths}
    for place, shown in ((_working_directory(), "."), (str(Path.home()), "~")):
        if place and place != os.sep:  # "/" is in every path: never replaced
            places.setdefault(place, shown)
    for place in sorted(places, key=len, reverse=True):
        message = re.sub(re.escape(place) + r"(?![\w.-])", places[place], message)
    return message


def _working_directory() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # removed under the running process: nothing of it to hide
        return None
