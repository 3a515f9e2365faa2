"""The DuckDB engines: they run in UTC whatever the host's zone (a TIMESTAMPTZ result
carries the session's zone, see docs/formats.md), and each job's `input` is its own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.config import Settings
from service.errors import (
    Interrupted,
    InvalidInput,
    JobCancelled,
    JobError,
    JobTimeout,
    LeaseExpired,
    PipelineError,
    TransientError,
)
from service.execute import Engines, ExecutionHandle, _input_relation, run_pipeline
from service.pipelines import Context, Pipeline, load_registry

SCRIPT = """
import pyarrow as pa
from service.config import Settings
from service.execute import Engines

engines = Engines(Settings(database_url="sqlite:///unused.db"), job_slots=1)
try:
    for sandboxed in (False, True):
        with engines.job_cursor(sandboxed) as cursor:
            stamps = pa.table({"t": pa.array([0], pa.timestamp("us", tz="UTC"))})
            cursor.register("stamps", stamps)
            kind = cursor.sql("select t from stamps").to_arrow_table().schema.field(0).type
            cursor.unregister("stamps")
            zone = cursor.sql("select current_setting('TimeZone')").fetchall()[0][0]
            print(zone, kind.tz)
finally:
    engines.close()
"""


def test_engines_run_in_utc_on_a_host_in_another_zone() -> None:
    env = {**os.environ, "TZ": "Europe/Berlin"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["UTC", "UTC", "UTC", "UTC"]


def test_each_job_cursor_sees_its_own_input(tmp_path: Path) -> None:
    """Two jobs running at once on the open database: `input` is each one's own frame
    (a view shared by the database would show one job the other's rows)."""
    paths = []
    for value in (1, 2):
        paths.append(tmp_path / f"{value}.parquet")
        pq.write_table(pa.table({"a": [value]}), paths[-1])
    engines = Engines(Settings(database_url="sqlite:///unused.db"), job_slots=2)
    try:
        with engines.job_cursor(False) as first, engines.job_cursor(False) as second:
            relations = [
                _input_relation(first, paths[0], sandboxed=False),
                _input_relation(second, paths[1], sandboxed=False),
            ]
            assert first.sql("select a from input").fetchall() == [(1,)]
            assert second.sql("select a from input").fetchall() == [(2,)]
            assert [r.fetchall() for r in relations] == [[(1,)], [(2,)]]
    finally:
        engines.close()


def test_job_errors_name_no_path_of_the_server(tmp_path: Path) -> None:
    """DuckDB's messages carry file paths; job errors are shown to clients."""
    job_dir = tmp_path / "spool" / "fj-job"
    job_dir.mkdir(parents=True)
    pq.write_table(pa.table({"a": [1]}), job_dir / "input.parquet")

    def leaky(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
        return ctx.connection.sql(f"select * from read_csv('{job_dir / 'missing.csv'}')")

    with pytest.raises(PipelineError) as caught:
        _run_once(tmp_path, Pipeline("leaky", leaky), job_dir)
    assert "<job folder>/missing.csv" in caught.value.detail
    assert str(tmp_path) not in caught.value.detail


def test_a_database_invalidated_by_an_internal_error_is_replaced(tmp_path: Path) -> None:
    """Text that is not UTF-8 (refused at submit since, but any internal DuckDB error
    does the same) invalidates the database; the next job must still run."""
    offsets = pa.py_buffer(b"\x00\x00\x00\x00\x03\x00\x00\x00")
    bad = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(b"v\xffv")])
    pq.write_table(pa.table({"s": bad}), tmp_path / "bad.parquet")
    pq.write_table(pa.table({"s": ["ok"]}), tmp_path / "good.parquet")
    settings = Settings(data_dir=tmp_path)
    sql = load_registry(settings).get("sql")
    engines = Engines(settings, job_slots=2)

    def run(name: str, query: str) -> None:
        handle = ExecutionHandle(
            job_id="j", attempt=1, params=sql.parse_params({"query": query}), timeout_s=None
        )
        run_pipeline(
            engines,
            handle,
            sql,
            input_path=tmp_path / name,
            result_path=tmp_path / "result.parquet",
        )

    try:
        with pytest.raises(PipelineError, match="INTERNAL"):
            run("bad.parquet", "select upper(s) as u from input")
        for _ in range(3):  # every pooled cursor of the new database works
            run("good.parquet", "select upper(s) as u from input")
        assert pq.read_table(tmp_path / "result.parquet").to_pylist() == [{"u": "OK"}]
    finally:
        engines.close()


def test_a_temp_directory_is_used_and_the_sandbox_still_reads_no_files(tmp_path: Path) -> None:
    """DuckDB refuses temp_directory when external access is off at connect time; the
    sandbox turns it off right after, so the setting works and files stay closed."""
    spill = tmp_path / "spill"
    engines = Engines(Settings(data_dir=tmp_path, duckdb_temp_directory=spill), job_slots=1)
    try:
        with engines.job_cursor(False) as cursor:
            ((setting,),) = cursor.sql("select current_setting('temp_directory')").fetchall()
            assert setting == str(spill)
        with engines.job_cursor(True) as cursor, pytest.raises(duckdb.PermissionException):
            cursor.sql("select * from read_csv('/etc/passwd')").fetchall()
        with engines.job_cursor(True) as cursor, pytest.raises(duckdb.Error):
            cursor.execute("set enable_external_access = true")
    finally:
        engines.close()


def test_the_sandbox_cannot_read_the_spill_files_of_other_jobs(tmp_path: Path) -> None:
    """DuckDB keeps the temp directory readable with external access off; spill files
    hold other jobs' rows in plain form, so the sandbox must have no such folder."""
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / "duckdb_temp_storage-0.tmp").write_bytes(b"another job's rows")
    engines = Engines(Settings(data_dir=tmp_path, duckdb_temp_directory=spill), job_slots=1)
    try:
        for read in ("glob('{}/*')", "read_blob('{}/*')", "read_text('{}/*')"):
            with engines.job_cursor(True) as cursor, pytest.raises(duckdb.PermissionException):
                cursor.sql("select * from " + read.format(spill)).fetchall()
        with engines.job_cursor(True) as cursor:
            settings = dict(cursor.sql("select name, value from duckdb_settings()").fetchall())
        assert settings["temp_directory"] == ""
        assert str(spill) not in settings["allowed_directories"]
    finally:
        engines.close()


def test_a_seed_one_sql_job_sets_does_not_reach_the_next(tmp_path: Path) -> None:
    """Sandbox cursors are pooled: a client's setseed() made the next job's random()
    and gen_random_uuid() values the client could compute in advance."""
    pq.write_table(pa.table({"a": [1]}), tmp_path / "in.parquet")
    engines = Engines(Settings(data_dir=tmp_path), job_slots=1)
    chosen = duckdb.connect()
    try:
        chosen.execute("select setseed(0.42)").fetchall()
        foreseen = chosen.sql("select random()").fetchall()
        for query in ("select setseed(0.42) from input", "select random() from input"):
            with engines.job_cursor(True) as cursor:
                _input_relation(cursor, tmp_path / "in.parquet", sandboxed=True)
                drawn = cursor.sql(query).fetchall()
        assert drawn != foreseen
    finally:
        chosen.close()
        engines.close()


def test_the_sandbox_shows_no_home_folder_of_the_server(tmp_path: Path) -> None:
    """duckdb_settings() and the errors of duckdb_extensions() or duckdb_secrets()
    named the server user's home (/root/.duckdb/...), in results and 422s alike."""
    engines = Engines(Settings(data_dir=tmp_path), job_slots=1)
    home = str(Path.home())
    try:
        with engines.job_cursor(True) as cursor:
            shown = str(cursor.sql("select name, value from duckdb_settings()").fetchall())
            errors = []
            for query in ("select * from duckdb_extensions()", "select * from duckdb_secrets()"):
                with pytest.raises(duckdb.Error) as caught:
                    cursor.sql(query).fetchall()
                errors.append(str(caught.value))
        assert home not in shown
        assert all(home not in error for error in errors), errors
    finally:
        engines.close()


class _SlowToInterrupt:
    """A cursor whose interrupt() takes its time, to hold a canceller mid-call."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []

    def interrupt(self) -> None:
        self.entered.set()
        self.release.wait(10)
        self.calls.append("interrupted")


def test_a_sandbox_cursor_its_pipeline_closed_is_not_lent_again(tmp_path: Path) -> None:
    """`with ctx.connection as con:` closes the job's cursor; back in the pool, it failed
    every later sandboxed job (each `sql` query) with "Connection already closed"."""
    engines = Engines(Settings(data_dir=tmp_path), job_slots=1)
    try:
        with engines.job_cursor(True) as cursor:
            cursor.close()
        for _ in range(2):
            with engines.job_cursor(True) as cursor:
                assert cursor.sql("select 1").fetchall() == [(1,)]
    finally:
        engines.close()


def test_a_cursor_is_detached_only_after_an_interrupt_in_flight_is_done() -> None:
    """A cancel that read the cursor must finish with it before the job detaches it:
    the cursor then goes back to a pool and the next job must not be interrupted."""
    handle = ExecutionHandle(job_id="j", attempt=1, params=None, timeout_s=None)
    cursor = _SlowToInterrupt()
    handle.attach(cursor)  # type: ignore[arg-type]
    cancel = threading.Thread(target=handle.interrupt, args=("cancel",))
    cancel.start()
    assert cursor.entered.wait(10)
    detach = threading.Thread(target=lambda: (handle.attach(None), cursor.calls.append("detached")))
    detach.start()
    detach.join(0.5)  # without the lock it is done at once; with it, it waits for the cancel
    cursor.release.set()
    for thread in (cancel, detach):
        thread.join(10)
    assert cursor.calls == ["interrupted", "detached"]


def test_interrupting_a_closed_cursor_is_not_an_error() -> None:
    """An engine recovery can close a running job's cursor; a cancel then must not fail
    (it was a 500 on the API and ended the LISTEN thread)."""
    database = duckdb.connect()
    cursor = database.cursor()
    handle = ExecutionHandle(job_id="j", attempt=1, params=None, timeout_s=None)
    handle.attach(cursor)
    cursor.close()
    handle.interrupt("cancel")
    assert handle.reason == "cancel"
    assert handle.snapshot() == (None, None)
    database.close()


def test_an_interrupt_the_service_did_not_send_is_a_pipeline_error(tmp_path: Path) -> None:
    """Only the service's own stops end a job cancelled, failed by timeout or requeued."""
    pq.write_table(pa.table({"a": [1]}), tmp_path / "input.parquet")

    def self_interrupting(ctx: Context, frame: duckdb.DuckDBPyRelation) -> None:
        raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")

    with pytest.raises(PipelineError, match="interrupted"):
        _run_once(tmp_path, Pipeline("self_interrupting", self_interrupting), tmp_path)


@pytest.mark.parametrize("stop", [Interrupted, JobCancelled, JobTimeout, LeaseExpired])
def test_a_stop_error_the_service_did_not_send_is_a_pipeline_error(
    tmp_path: Path, stop: type[JobError]
) -> None:
    """A pipeline raising Interrupted itself had its attempt given back and ran again
    at once, forever; the other stops would end it as though the service had."""
    pq.write_table(pa.table({"a": [1]}), tmp_path / "input.parquet")

    def stopping(ctx: Context, frame: duckdb.DuckDBPyRelation) -> None:
        raise stop("made up")

    with pytest.raises(PipelineError) as caught:
        _run_once(tmp_path, Pipeline("stopping", stopping), tmp_path)
    assert type(caught.value) is PipelineError
    assert caught.value.detail == f"{stop.__name__}: made up"


def test_a_pipeline_error_of_its_own_is_one_line_without_paths(tmp_path: Path) -> None:
    """A TransientError wrapping a DuckDB error names the input file: shown as is, that
    leaked the server's paths, and a traceback-like text its every line."""
    pq.write_table(pa.table({"a": [1]}), tmp_path / "input.parquet")

    def wrapping(ctx: Context, frame: duckdb.DuckDBPyRelation) -> None:
        raise TransientError(f"upstream: {tmp_path / 'input.parquet'} failed\nat line 2")

    with pytest.raises(TransientError) as caught:
        _run_once(tmp_path, Pipeline("wrapping", wrapping), tmp_path)
    assert caught.value.detail == "upstream: <job folder>/input.parquet failed"


def test_a_pipeline_error_shows_no_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path a trusted pipeline opens comes back absolute in DuckDB's error:
    the server's working directory, shown to every client who reads the job. Here home
    lies under it: the longer path goes first, or the user's name would show."""
    workdir = tmp_path / "srv" / "framejobs"
    (workdir / "alice").mkdir(parents=True)
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HOME", str(workdir / "alice"))

    def reads_files(ctx: Context, frame: duckdb.DuckDBPyRelation) -> None:
        raise PipelineError(f"cannot open {workdir}/lookup.csv, {workdir}/alice/key, {workdir}x")

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    pq.write_table(pa.table({"a": [1]}), jobs / "input.parquet")
    with pytest.raises(PipelineError) as caught:
        _run_once(tmp_path, Pipeline("reads", reads_files), jobs)
    assert caught.value.detail == f"cannot open ./lookup.csv, ~/key, {workdir}x"


def test_a_removed_working_directory_leaves_job_errors_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.getcwd() raises once the folder is gone: raised while the job's own error was
    handled, it made every failing job a local failure, re-queued for ever."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()

    def fails(ctx: Context, frame: duckdb.DuckDBPyRelation) -> None:
        raise PipelineError("bad input")

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    pq.write_table(pa.table({"a": [1]}), jobs / "input.parquet")
    with pytest.raises(PipelineError, match="bad input"):
        _run_once(tmp_path, Pipeline("fails", fails), jobs)


def test_a_job_that_outlives_the_engines_keeps_its_own_error(tmp_path: Path) -> None:
    """At shutdown the engines close under a job whose Python did not stop: putting its
    cursor back then raised, and that error replaced the job's Interrupted (the job
    failed for good instead of going back to the queue)."""
    engines = Engines(Settings(data_dir=tmp_path), job_slots=1)
    with pytest.raises(Interrupted), engines.job_cursor(sandboxed=True):
        engines.close()
        raise Interrupted("the worker is stopping")


def test_a_result_that_cannot_be_stored_is_the_pipelines_error(tmp_path: Path) -> None:
    """It read 'InvalidFrame: column ...', as though the client's frame were wrong."""
    pq.write_table(pa.table({"a": [1]}), tmp_path / "input.parquet")
    union = pa.UnionArray.from_sparse(pa.array([0], pa.int8()), [pa.array([1]), pa.array(["a"])])

    def unstorable(ctx: Context, frame: duckdb.DuckDBPyRelation) -> pa.Table:
        return pa.table({"u": union})

    with pytest.raises(PipelineError) as caught:
        _run_once(tmp_path, Pipeline("unstorable", unstorable), tmp_path)
    assert caught.value.detail.startswith("the result's column 'u': sparse_union")


def test_progress_takes_decimals_as_the_numbers_they_are() -> None:
    """sum() over a DECIMAL column comes back from DuckDB as a Decimal: reported as
    progress, it failed the job with 'progress is a number, not Decimal'."""
    handle = ExecutionHandle(job_id="j", attempt=1, params=None, timeout_s=None)
    handle.progress(Decimal("1"), Decimal("4"), "a quarter")
    assert handle.snapshot() == (25.0, "a quarter")
    handle.progress(Fraction(1, 2), 1)
    assert handle.snapshot()[0] == 50.0
    with pytest.raises(ValueError, match="finite"):
        handle.progress(Decimal("NaN"))


def _run_once(data_dir: Path, pipeline: Pipeline, job_dir: Path) -> None:
    """Run ``pipeline`` over ``job_dir/input.parquet`` on engines of its own."""
    engines = Engines(Settings(data_dir=data_dir), job_slots=1)
    try:
        handle = ExecutionHandle(job_id="j", attempt=1, params=None, timeout_s=None)
        run_pipeline(
            engines,
            handle,
            pipeline,
            input_path=job_dir / "input.parquet",
            result_path=job_dir / "result.parquet",
        )
    finally:
        engines.close()


@pytest.mark.parametrize(
    "rows", [3, 3_000, 70_002], ids=["in memory", "in memory, several batches", "scanned"]
)
def test_a_sandboxed_input_reads_alike_in_memory_or_scanned(tmp_path: Path, rows: int) -> None:
    """A small input is handed to the sandbox as a table, one of more than 64 Ki rows
    as a dataset scanned batch by batch (so it never sits whole in memory): the same
    rows either way."""
    import pyarrow.dataset as pads

    from service.execute import _arrow_input

    frame = pa.table(
        {
            "a": pa.array([i if i % 3 else None for i in range(rows)], pa.int64()),
            "b": pa.array(["x", "é", None] * (rows // 3), pa.string()),
        }
    )
    pq.write_table(frame, tmp_path / "in.parquet", row_group_size=64 * 1024)
    expected = pads.Dataset if rows > 64 * 1024 else pa.Table
    assert isinstance(_arrow_input(tmp_path / "in.parquet"), expected)
    engines = Engines(Settings(data_dir=tmp_path), job_slots=1)
    try:
        with engines.job_cursor(True) as cursor:
            relation = _input_relation(cursor, tmp_path / "in.parquet", sandboxed=True)
            assert relation.to_arrow_table().equals(frame)
    finally:
        engines.close()


def test_a_small_file_that_decodes_large_is_scanned_not_read_whole(tmp_path: Path) -> None:
    """The footer's byte counts are of encoded pages: a repeated text stored with a
    dictionary takes a few KB on disk, and its footer said 122 KB for what decoded to
    an 800 MB table (4 M rows), read whole by every job of it. Found in review."""
    import pyarrow.dataset as pads

    from service.decode import parquet_writer
    from service.execute import _arrow_input

    rows = 200_000
    frame = pa.table({"s": pa.array(["x" * 200]).take(pa.array([0] * rows))})
    path = tmp_path / "in.parquet"
    with parquet_writer(path, frame.schema) as writer:  # as the service stores inputs
        writer.write_table(frame, row_group_size=64 * 1024)
    meta = pq.ParquetFile(path).metadata
    encoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    assert encoded < frame.nbytes // 100  # what a size check on the footer would see
    assert isinstance(_arrow_input(path), pads.Dataset)


@pytest.mark.parametrize("values", ["distinct", "one repeated"])
def test_few_rows_that_decode_large_are_scanned_not_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, values: str
) -> None:
    """Rows do not bound a table: 60,000 rows of 8 KB values took 458 MiB read whole,
    for a query that read none of them (a dataset scan reads only the columns the query
    does). Found in review; here at a limit of 1 MiB, with 2 MiB of values."""
    import pyarrow.dataset as pads

    from service import execute
    from service.decode import parquet_writer

    monkeypatch.setattr(execute, "IN_MEMORY_BYTES", 1 << 20)
    texts = (
        [f"{i:08d}" * 128 for i in range(2_000)] if values == "distinct" else ["x" * 1024] * 2_000
    )
    frame = pa.table({"a": pa.array(range(2_000), pa.int64()), "s": pa.array(texts)})
    path = tmp_path / "in.parquet"
    with parquet_writer(path, frame.schema) as writer:
        writer.write_table(frame)
    assert isinstance(execute._arrow_input(path), pads.Dataset)
    monkeypatch.setattr(execute, "IN_MEMORY_BYTES", 4 << 20)
    assert execute._arrow_input(path).equals(frame)


PROBE_POOL = """
import sys
from pathlib import Path
import pyarrow as pa
from service import execute
execute.IN_MEMORY_BYTES = 1 << 20
kind = type(execute._arrow_input(Path(sys.argv[1]))).__name__
print(kind, pa.default_memory_pool().max_memory())
"""


def test_giving_an_input_up_reads_no_more_of_it_than_the_limit(tmp_path: Path) -> None:
    """By default pyarrow reads a whole row group before its first batch: a 458 MiB
    input of 60,000 rows took 637 MiB of RSS only to be found too large. Found in
    review; here 48 MiB in one row group against a limit of 1 MiB, in a process of its
    own, whose Arrow memory pool has seen nothing else."""
    from service.decode import parquet_writer

    frame = pa.table({"s": pa.array([os.urandom(384).hex() for _ in range(64_000)])})
    path = tmp_path / "in.parquet"
    with parquet_writer(path, frame.schema) as writer:
        writer.write_table(frame, row_group_size=64 * 1024)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    done = subprocess.run(
        [sys.executable, "-c", PROBE_POOL, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    kind, peak = done.stdout.split()
    assert kind.endswith("Dataset")
    assert int(peak) < 16 << 20, f"{int(peak) >> 20} MiB in Arrow's pool"


def test_the_sql_check_keeps_no_query_text_alive() -> None:
    """Checks of the sql pipeline's query are remembered by digest: 1,024 remembered
    queries of up to 100,000 characters kept 0.8 GB alive in each process."""
    import gc
    import tracemalloc

    from service.pipelines import sql

    sql._SINGLE_SELECTS.clear()
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(200):
            sql.single_select(f"select {i} -- " + "\U0001f600" * 99_980)
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(sql._SINGLE_SELECTS) == 200 and retained < 4 << 20, f"{retained / 1e6:.0f} MB"
    sql.single_select("select 1")  # a known query is not parsed again, an unknown one is
    with pytest.raises(InvalidInput, match="exactly one statement"):
        sql.single_select("select 1; select 2")
