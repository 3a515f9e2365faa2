"""A job's life: run, progress, cancel, timeout, retry, rescue, fencing."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import RowMapping

from service import claim, finish
from service.api.app import create_app
from service.config import Settings
from service.db import make_engine, reading, writing
from service.decode import StoredFrame
from service.execute import Engines, ExecutionHandle
from service.models import job_table
from service.notify import Hub
from service.pipelines import load_registry
from service.store import get_job, utcnow
from service.worker import Worker, _Running
from tests.conftest import fast_settings
from tests.support.jobs import submit, wait_status
from tests.support.waiting import wait_for

LONG_QUERY = (
    "select count(*) from range(2000000000) a, range(100) b, input where a.range % 7 = b.range"
)


def test_cancel_running_query_within_a_second_and_slot_is_free(client: TestClient) -> None:
    job = submit(client, "sql", params={"query": LONG_QUERY})
    wait_status(client, job["id"], "running")
    started = time.monotonic()
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    done = wait_status(client, job["id"], timeout=5)
    assert time.monotonic() - started < 1.0
    assert done["status"] == "cancelled" and done["error"]["type"] == "JobCancelled"
    # both slots are free again: two quick jobs run at once
    quick = [
        submit(client, "sql", params={"query": "select sum(a) as s from input"}) for _ in range(2)
    ]
    for q in quick:
        assert wait_status(client, q["id"], timeout=10)["status"] == "completed"
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 409


def test_cancel_queued_job_is_immediate(api_only: TestClient) -> None:
    job = submit(api_only, "billing_rollup", {"columns": {"userId": [1], "amount": [1.0]}})
    body = api_only.post(f"/jobs/{job['id']}/cancel").json()
    assert body["status"] == "cancelled" and body["finished_at"]


def test_timeout_fails_the_job(client: TestClient) -> None:
    job = submit(client, "sql", params={"query": LONG_QUERY}, timeout_s=0.5)
    started = time.monotonic()
    done = wait_status(client, job["id"], timeout=10)
    assert done["status"] == "failed" and done["error"]["type"] == "JobTimeout", done
    assert time.monotonic() - started < 3.0
    assert done["attempt"] == 1  # timeouts are not retried


def test_python_pipeline_cancel_and_progress(client: TestClient) -> None:
    job = submit(client, "sleepy", params={"seconds": 30})

    def progressed():
        body = client.get(f"/jobs/{job['id']}").json()
        p = body["progress"]
        return body if p["percent"] and p["message"] == "sleeping" else None

    wait_for(progressed, timeout=10, what="progress")
    client.post(f"/jobs/{job['id']}/cancel")
    assert wait_status(client, job["id"], timeout=3)["status"] == "cancelled"


def test_transient_errors_are_retried_with_backoff(client: TestClient, tmp_path: Path) -> None:
    job = submit(client, "flaky", params={"failures": 2, "marker_dir": str(tmp_path)})
    done = wait_status(client, job["id"], timeout=20)
    assert done["status"] == "completed", done
    assert done["attempt"] == 3
    assert (tmp_path / f"{job['id']}.attempts").read_text() == "3"


def test_retries_stop_at_max_attempts(client: TestClient, tmp_path: Path) -> None:
    job = submit(
        client, "flaky", params={"failures": 9, "marker_dir": str(tmp_path)}, max_attempts=2
    )
    done = wait_status(client, job["id"], timeout=20)
    assert done["status"] == "failed" and done["attempt"] == 2
    assert done["error"] == {"type": "TransientError", "message": "flaky failure 2"}


def test_pipeline_and_sql_errors_are_not_retried(client: TestClient) -> None:
    boom = submit(client, "boom")
    bad = submit(client, "sql", params={"query": "select cast('x' as integer) from input"})
    for job, kind in ((boom, "PipelineError"), (bad, "PipelineError")):
        done = wait_status(client, job["id"])
        assert done["status"] == "failed" and done["attempt"] == 1, done
        assert done["error"]["type"] == kind and done["error"]["message"]


def _insert_running(
    settings: Settings, client: TestClient, *, worker: str, lease_s: float, max_attempts: int = 3
) -> str:
    """A job that a (fictional) worker claimed, as if that worker then died."""
    job = submit(
        client,
        "billing_rollup",
        {"columns": {"userId": [1], "amount": [1.0]}},
        max_attempts=max_attempts,
    )
    engine = make_engine(settings)
    try:
        with writing(engine) as conn:
            rows = claim.claim(conn, worker=worker, now=utcnow(), lease_s=lease_s)
        assert [r["id"] for r in rows] == [job["id"]]
    finally:
        engine.dispose()
    return job["id"]


def test_expired_lease_is_rescued_and_completed(settings: Settings) -> None:
    with TestClient(create_app(settings, workers=0)) as api:
        job_id = _insert_running(settings, api, worker="elsewhere:1:x", lease_s=0.5)
    with TestClient(create_app(settings)) as client:
        done = wait_status(client, job_id, timeout=10)
        assert done["status"] == "completed" and done["attempt"] == 2


def test_dead_local_process_is_rescued_without_waiting_for_lease(settings: Settings) -> None:
    with TestClient(create_app(settings, workers=0)) as api:
        # pid 999999999 does not exist on this host: its jobs are orphans now
        job_id = _insert_running(settings, api, worker=f"{claim.HOST}:999999999:dead", lease_s=3600)
    with TestClient(create_app(settings)) as client:
        assert wait_status(client, job_id, timeout=5)["status"] == "completed"


def test_rescue_fails_job_without_attempts_left(settings: Settings) -> None:
    with TestClient(create_app(settings, workers=0)) as api:
        job_id = _insert_running(settings, api, worker="elsewhere:1:x", lease_s=0.1, max_attempts=1)
        engine = make_engine(settings)
        try:
            time.sleep(0.2)  # let the 0.1 s lease run out (wall clock is the subject here)
            with writing(engine) as conn:
                rescued = claim.rescue(conn, now=utcnow())
            assert rescued.ended == [job_id]
        finally:
            engine.dispose()
        body = api.get(f"/jobs/{job_id}").json()
        assert body["status"] == "failed" and body["error"]["type"] == "LeaseExpired"


def test_finish_is_fenced_by_attempt(settings: Settings, tmp_path: Path) -> None:
    with TestClient(create_app(settings, workers=0)) as api:
        job_id = _insert_running(settings, api, worker="w1", lease_s=0.1)
        engine = make_engine(settings)
        try:
            with writing(engine) as conn:
                claim.rescue(conn, now=utcnow() + timedelta(seconds=1))
                retaken = claim.claim(
                    conn, worker="w2", now=utcnow() + timedelta(seconds=1), lease_s=30
                )
            assert retaken[0]["attempt"] == 2
            result = tmp_path / "r.parquet"
            pq.write_table(pa.table({"x": [1]}), result)
            frame = StoredFrame(result, 1, result.stat().st_size, [])
            with writing(engine) as conn:
                stale = finish.complete(
                    conn, finish.Attempt(job_id, "w1", 1), frame, now=utcnow(), chunk_bytes=1024
                )
                assert stale is None  # the old owner changes nothing
                fresh = finish.fail(conn, finish.Attempt(job_id, "w2", 2), "X", "y", now=utcnow())
                assert fresh is not None
            with reading(engine) as conn:
                row = get_job(conn, job_id)
            assert row is not None and row["status"] == "failed" and row["result_rows"] is None
        finally:
            engine.dispose()


@pytest.mark.parametrize("outcome", ["complete", "fail", "requeue"])
def test_an_accepted_cancel_wins_over_the_runs_outcome(
    settings: Settings, tmp_path: Path, outcome: str
) -> None:
    """The cancel (202) lands after the run ended but before its outcome is saved."""
    result = tmp_path / "r.parquet"
    pq.write_table(pa.table({"x": [1]}), result)
    saves = {
        "complete": lambda conn, a: finish.complete(
            conn, a, StoredFrame(result, 1, result.stat().st_size, []), now=utcnow(), chunk_bytes=64
        ),
        "fail": lambda conn, a: finish.fail(conn, a, "PipelineError", "broke", now=utcnow()),
        "requeue": lambda conn, a: finish.requeue(
            conn, a, now=utcnow(), delay_s=5, error_type="TransientError", message="again"
        ),
    }
    with TestClient(create_app(settings, workers=0)) as api:
        job_id = _insert_running(settings, api, worker="w1", lease_s=30)
        accepted = api.post(f"/jobs/{job_id}/cancel")
        assert accepted.status_code == 202 and accepted.json()["cancel_requested"] is True
        engine = make_engine(settings)
        try:
            with writing(engine) as conn:
                row = saves[outcome](conn, finish.Attempt(job_id, "w1", 1))
        finally:
            engine.dispose()
        assert row is not None and row["status"] == "cancelled"
        body = api.get(f"/jobs/{job_id}").json()
        assert body["status"] == "cancelled" and body["result"] is None
        assert api.get(f"/jobs/{job_id}/result").status_code == 409


def test_claim_and_monitor_threads_survive_unexpected_errors(settings: Settings) -> None:
    """An error of a kind nobody planned for (injected here) must not end either
    thread: claims go on, and so do timeouts, which only the monitor enforces."""
    app = create_app(settings)
    with TestClient(app) as client:
        worker = app.state.runtime.worker
        claim_once, beats = threading.Event(), threading.Event()
        original_claim = worker._claim

        def claim(limit: int) -> list:
            if not claim_once.is_set():
                claim_once.set()
                raise RuntimeError("injected claim failure")
            return original_claim(limit)

        def heartbeat(running: list) -> None:
            beats.set()
            raise RuntimeError("injected heartbeat failure")

        worker._claim, worker._heartbeat = claim, heartbeat
        quick = submit(client, "billing_rollup", {"columns": {"userId": [1], "amount": [1.0]}})
        assert wait_status(client, quick["id"])["status"] == "completed"
        assert claim_once.is_set()
        slow = submit(client, "sql", params={"query": LONG_QUERY}, timeout_s=1)
        wait_status(client, slow["id"], "running")
        assert beats.wait(10)
        done = wait_status(client, slow["id"], timeout=10)
        assert done["status"] == "failed" and done["error"]["type"] == "JobTimeout", done


def test_a_failing_progress_write_does_not_stop_heartbeats(settings: Settings) -> None:
    """The monitor's duties fail on their own: heartbeats keep every lease alive."""
    app = create_app(settings)
    with TestClient(app) as client:
        worker = app.state.runtime.worker
        renewed = threading.Semaphore(0)
        original_heartbeat = worker._heartbeat

        def tick(running: list) -> None:
            raise RuntimeError("injected progress failure")

        def heartbeat(running: list) -> None:
            original_heartbeat(running)
            if running:
                renewed.release()

        worker._tick, worker._heartbeat = tick, heartbeat
        job = submit(client, "sleepy", params={"seconds": 60})
        wait_status(client, job["id"], "running")
        assert all(renewed.acquire(timeout=10) for _ in range(2))
        client.post(f"/jobs/{job['id']}/cancel")
        assert wait_status(client, job["id"])["status"] == "cancelled"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"message": 123}, "TypeError: a progress message is text, not int"),
        ({"done": "half"}, "TypeError: progress is a number, not str"),
        ({"done": "nan", "as_float": True}, "ValueError: progress is a finite number, not nan"),
    ],
)
def test_bad_progress_values_fail_the_pipeline_that_sent_them(
    client: TestClient, args: dict, error: str
) -> None:
    job = submit(client, "bad_progress", params=args)
    done = wait_status(client, job["id"])
    assert done["status"] == "failed" and done["error"]["message"] == error, done


def test_a_long_progress_message_is_cut(client: TestClient) -> None:
    """The message is saved with the job and sent with every read and event: a
    pipeline's 1 MB of text went out whole on each."""
    job = submit(client, "bad_progress", params={"message": "x" * 1_000_000})
    done = wait_status(client, job["id"])
    assert done["status"] == "completed", done
    assert done["progress"]["message"] == "x" * 999 + "…"


def test_a_timeout_the_pipeline_wraps_is_still_a_timeout(client: TestClient) -> None:
    """Stopped by its timeout, the job says so and is not retried, whatever error
    the pipeline turned the interrupt into."""
    job = submit(client, "wrapper", params={"query": LONG_QUERY}, timeout_s=1)
    done = wait_status(client, job["id"], timeout=20)
    assert done["status"] == "failed" and done["error"]["type"] == "JobTimeout", done
    assert done["attempt"] == 1


@pytest.mark.parametrize(
    ("kind", "error"), [("exit", "SystemExit: 3"), ("keyboard", "KeyboardInterrupt")]
)
def test_base_exceptions_in_a_pipeline_fail_it_by_name(
    client: TestClient, kind: str, error: str
) -> None:
    job = submit(client, "wrapper", params={"raise": kind})
    done = wait_status(client, job["id"])
    assert done["status"] == "failed" and done["error"] == {
        "type": "PipelineError",
        "message": error,
    }


def test_claims_never_overlap(settings: Settings) -> None:
    """16 threads claim from 200 queued jobs at once; each job is claimed once."""
    import threading

    with TestClient(create_app(settings, workers=0)) as api:
        ids = {
            submit(api, "billing_rollup", {"columns": {"userId": [1], "amount": [1.0]}})["id"]
            for _ in range(200)
        }
    engine = make_engine(settings)
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def claimer(n: int) -> None:
        barrier.wait()
        while True:
            with writing(engine) as conn:
                rows = claim.claim(conn, worker=f"w{n}", now=utcnow(), lease_s=30, limit=3)
            if not rows:
                return
            assert len(rows) <= 3  # never more than asked for (PostgreSQL sub-select trap)
            with lock:
                claimed.extend(r["id"] for r in rows)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    engine.dispose()
    assert sorted(claimed) == sorted(ids)


def test_concurrent_jobs_each_see_their_own_input(client: TestClient) -> None:
    jobs = {
        n: submit(
            client,
            "billing_rollup",
            {"columns": {"userId": [n] * 50_000, "amount": [1.0] * 50_000}},
        )
        for n in range(8)
    }
    for n, job in jobs.items():
        assert wait_status(client, job["id"])["status"] == "completed"
        rows = client.get(f"/jobs/{job['id']}/result").json()["rows"]
        assert rows == [{"user_id": n, "total": 50_000.0, "n": 50_000}]


def test_worker_leaves_jobs_of_pipelines_it_lacks(settings: Settings) -> None:
    without_tests = settings.model_copy(update={"pipelines": []})
    with (
        TestClient(create_app(settings, workers=0)) as api,
        TestClient(create_app(without_tests)) as other,
    ):
        job = submit(api, "sleepy", params={"seconds": 0.01})
        known = submit(api, "billing_rollup", {"columns": {"userId": [1], "amount": [1.0]}})
        assert wait_status(other, known["id"])["status"] == "completed"
        assert api.get(f"/jobs/{job['id']}").json()["status"] == "queued"


def test_local_input_copy_is_used_then_removed(settings: Settings) -> None:
    inputs = settings.spool_dir / "inputs"
    with TestClient(create_app(settings, workers=0)) as api:
        queued = submit(api, "billing_rollup", {"columns": {"userId": [5], "amount": [2.0]}})
    assert not inputs.exists() or not any(inputs.iterdir())  # API only: nothing kept
    with TestClient(create_app(settings)) as client:
        job = submit(
            client,
            "sql",
            {"columns": {"a": [1, 2]}},
            params={"query": "select sum(a)::bigint s from input"},
        )
        for job_id in (queued["id"], job["id"]):
            assert wait_status(client, job_id)["status"] == "completed"
        assert client.get(f"/jobs/{job['id']}/result").json()["rows"] == [{"s": 3}]
        assert client.get(f"/jobs/{queued['id']}/result").json()["rows"][0]["total"] == 2.0
        wait_for(
            lambda: not inputs.exists() or not any(inputs.iterdir()),
            timeout=5,
            what="local copies removed",
        )


def test_a_stale_local_copy_is_not_trusted(settings: Settings) -> None:
    with TestClient(create_app(settings, workers=0)) as api:
        job = submit(api, "billing_rollup", {"columns": {"userId": [5], "amount": [2.0]}})
    folder = settings.spool_dir / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job['id']}.parquet").write_bytes(b"not the input")  # wrong size: ignored
    with TestClient(create_app(settings)) as client:
        assert wait_status(client, job["id"])["status"] == "completed"
        assert client.get(f"/jobs/{job['id']}/result").json()["rows"][0]["total"] == 2.0


def test_rescue_ends_a_job_whose_cancel_was_accepted_cancelled(settings: Settings) -> None:
    """The client was answered 202 "cancelling": a dead worker must not turn that into
    a retry (another attempt) or a failure."""
    with TestClient(create_app(settings, workers=0)) as api:
        job_id = _insert_running(settings, api, worker="elsewhere:1:x", lease_s=0.1)
        assert api.post(f"/jobs/{job_id}/cancel").status_code == 202
        engine = make_engine(settings)
        try:
            with writing(engine) as conn:
                rescued = claim.rescue(conn, now=utcnow() + timedelta(seconds=1))
        finally:
            engine.dispose()
        assert rescued.ended == [job_id] and rescued.requeued == []
        body = api.get(f"/jobs/{job_id}").json()
        assert body["status"] == "cancelled" and body["error"]["type"] == "JobCancelled"
        assert body["attempt"] == 1


@pytest.mark.postgres
def test_rescue_skips_a_row_locked_by_a_save_in_flight(pg_url: str, tmp_path: Path) -> None:
    """A worker paused in its final save holds its job's row: rescue must pass it by,
    not wait (waiting stalled every other worker's housekeeping)."""
    settings = fast_settings(pg_url, tmp_path / "data")
    with TestClient(create_app(settings, workers=0)) as api:
        locked = _insert_running(settings, api, worker="elsewhere:1:x", lease_s=0.1)
        free = _insert_running(settings, api, worker="elsewhere:2:y", lease_s=0.1)
    engine = make_engine(settings)
    try:
        with engine.connect() as saving:
            saving.execute(job_table.update().where(job_table.c.id == locked).values(version=0))
            done: list[claim.Rescued] = []

            def rescue() -> None:
                with writing(engine) as conn:
                    done.append(claim.rescue(conn, now=utcnow() + timedelta(seconds=1)))

            rescuer = threading.Thread(target=rescue, daemon=True)
            rescuer.start()
            rescuer.join(10)
            alive = rescuer.is_alive()
            saving.rollback()
        rescuer.join(10)
        assert not alive, "rescue waited for the locked row"
        assert done[0].requeued == [free]
    finally:
        engine.dispose()


def test_heartbeats_go_on_while_housekeeping_is_stuck(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune of many rows (or any slow housekeeping) must not hold up lease renewals:
    the job's lease would run out while its worker is healthy."""
    stuck, release = threading.Event(), threading.Event()

    def slow_housekeeping(worker: object) -> None:
        stuck.set()
        release.wait(30)

    monkeypatch.setattr("service.worker.Worker._housekeeping", slow_housekeeping)
    try:
        with TestClient(create_app(settings)) as client:
            job = submit(client, "sleepy", params={"seconds": 60})
            wait_status(client, job["id"], "running")
            assert stuck.wait(10)
            first = _lease(settings, job["id"])
            wait_for(
                lambda: _lease(settings, job["id"]) > first + timedelta(seconds=1),
                timeout=settings.lease_s * 2,
                what="a renewed lease",
            )
            release.set()
            assert client.post(f"/jobs/{job['id']}/cancel").status_code == 202
            assert wait_status(client, job["id"])["status"] == "cancelled"
    finally:
        release.set()


def _job_row(settings: Settings, job_id: str) -> RowMapping | None:
    """The job's row as stored, read through an engine of the test's own."""
    engine = make_engine(settings)
    try:
        with reading(engine) as conn:
            return get_job(conn, job_id)
    finally:
        engine.dispose()


def _lease(settings: Settings, job_id: str) -> datetime:
    row = _job_row(settings, job_id)
    assert row is not None
    return row["lease_expires_at"]  # type: ignore[no-any-return]


def test_a_claim_that_outlasts_stop_gives_its_job_back(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claimer waits for a writer of another process; stop() stops waiting for it
    and shuts the slots down; the claim then commits. Its job must go back to the
    queue with its attempt refunded, not stay `running` under a stopped worker."""
    settings = fast_settings(sqlite_url, tmp_path / "data", rescue_interval_s=3600)
    monkeypatch.setattr(Worker, "join_s", 0.2)
    with TestClient(create_app(settings, workers=0)) as api:
        due = utcnow() + timedelta(seconds=1)
        job = submit(api, "sleepy", params={"seconds": 0.01}, run_after=due.isoformat())
    with _one_slot_worker(settings) as worker:
        other = sqlite3.connect(settings.sqlite_file, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process writing: the next claim waits
            wait_for(lambda: utcnow() > due, what="the job to be due")
            worker.stop(grace_s=0.1)
            other.execute("COMMIT")
            row = wait_for(lambda: _queued_again(settings, job["id"]), what="the job given back")
        finally:
            other.close()
    assert row["attempt"] == 0 and row["worker_id"] is None


def test_stop_names_the_jobs_its_interrupt_did_not_reach(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pipeline in Python that checks for no stop holds the process until it returns;
    the operator waiting for the exit must learn which job, and why."""
    settings = fast_settings(sqlite_url, tmp_path / "data", rescue_interval_s=3600)
    monkeypatch.setattr(Worker, "join_s", 0.2)
    with TestClient(create_app(settings, workers=0)) as api:
        job = submit(api, "deaf", params={"seconds": 2})
    with _one_slot_worker(settings) as worker:
        wait_for(lambda: _status(settings, job["id"]) == "running", what="the job to start")
        worker.stop(grace_s=0.1)
        assert f"job {job['id']} (pipeline 'deaf') did not stop" in caplog.text
        # it still ends as the shutdown made it, once its Python returns
        row = wait_for(lambda: _queued_again(settings, job["id"]), what="the job given back")
        assert row["attempt"] == 0


@contextmanager
def _one_slot_worker(settings: Settings) -> Iterator[Worker]:
    """A started worker of one slot outside any app, for tests that stop it themselves."""
    engine, engines = make_engine(settings), Engines(settings, job_slots=1)
    worker = Worker(
        engine=engine,
        settings=settings,
        registry=load_registry(settings),
        engines=engines,
        hub=Hub(),
        concurrency=1,
    )
    worker.start()
    try:
        yield worker
    finally:
        engines.close()
        engine.dispose()


def test_params_refused_when_the_job_runs_say_which_field(sqlite_url: str, tmp_path: Path) -> None:
    """Params are validated again by the worker (a deploy may have changed the model);
    the job body has no errors list, and its message said only 'invalid params'."""
    settings = fast_settings(sqlite_url, tmp_path / "data")
    with TestClient(create_app(settings, workers=0)) as api:
        job = submit(api, "echo_params", {"columns": {"a": [1]}}, params={"maxRows": 1})
    engine = make_engine(settings)
    try:
        with writing(engine) as conn:  # as stored by a release whose model took text
            conn.execute(
                job_table.update()
                .where(job_table.c.id == job["id"])
                .values(params={"maxRows": "many"})
            )
    finally:
        engine.dispose()
    with TestClient(create_app(settings, workers=1)) as client:
        done = wait_status(client, job["id"])
    assert done["status"] == "failed" and done["error"]["type"] == "InvalidInput", done
    assert done["error"]["message"] == (
        "invalid params for pipeline 'echo_params': maxRows: "
        "Input should be a valid integer, unable to parse string as an integer"
    )


def _status(settings: Settings, job_id: str) -> str | None:
    row = _job_row(settings, job_id)
    return None if row is None else str(row["status"])


def _queued_again(settings: Settings, job_id: str) -> RowMapping | None:
    row = _job_row(settings, job_id)
    return row if row is not None and row["status"] == "queued" and row["error_type"] else None


def test_a_job_the_machine_cannot_prepare_goes_back_to_the_queue(settings: Settings) -> None:
    """A spool folder that cannot be written (full disk, removed, read-only): the job
    must not sit `running` until its lease runs out and then lose an attempt. Once it
    can, the worker makes the folder again, and the owner's alone as at start-up."""
    previous = os.umask(0o022)
    try:
        with TestClient(create_app(settings)) as client:
            shutil.rmtree(settings.spool_dir)
            settings.spool_dir.write_text("a file where the spool folder should be")
            job = submit(client, "sleepy", params={"seconds": 0.01}, max_attempts=1)
            queued = wait_for(
                lambda: _queued_again(settings, job["id"]), timeout=10, what="the job given back"
            )
            assert queued["attempt"] == 0
            assert "could not prepare the job" in queued["error_message"]
            settings.spool_dir.unlink()
            assert wait_status(client, job["id"])["status"] == "completed"
    finally:
        os.umask(previous)
    assert stat.S_IMODE(settings.spool_dir.stat().st_mode) == 0o700


def test_an_input_the_spool_cannot_keep_still_gets_its_202(settings: Settings) -> None:
    """Keeping an upload on local disk for this process's workers is a shortcut taken
    after the commit: failing it answered 5xx for a job that was accepted (and runs),
    so a client would submit it again."""
    with TestClient(create_app(settings)) as client:
        settings.spool_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(settings.spool_dir / "inputs", ignore_errors=True)
        (settings.spool_dir / "inputs").write_text("a file where the folder should be")
        response = client.post(
            "/jobs",
            data={"spec": json.dumps({"pipeline": "billing_rollup"})},
            files={"frame": ("f.csv", b"userId,amount\n1,2.5\n", "text/csv")},
        )
        assert response.status_code == 202, response.text
        assert wait_status(client, response.json()["id"])["status"] == "completed"


def test_a_result_that_fills_the_disk_fails_the_job_at_once(small_disk: Path) -> None:
    """The partial result stayed in the job's folder while the failure was saved, so
    SQLite (on the same disk) could not save it: the job hung a lease per attempt
    and ended `LeaseExpired`, never saying the disk was full."""
    url = f"sqlite:///{small_disk / 'framejobs.db'}"
    settings = fast_settings(url, small_disk / "data", lease_s=30.0)
    query = "select range as i, md5(range::varchar) || md5((range + 1)::varchar) as s"
    with TestClient(create_app(settings, migrate=True)) as client:
        started = time.monotonic()
        job = submit(client, "sql", params={"query": f"{query} from range(2000000)"})
        done = wait_status(client, job["id"], timeout=20)
        assert time.monotonic() - started < 20
    assert done["status"] == "failed" and done["attempt"] == 1, done
    assert "No space left" in done["error"]["message"]


def test_a_result_past_the_limit_fails_the_job_and_the_next_one_runs(tmp_path: Path) -> None:
    """Nothing bounded a result: a one-line query over range() wrote tens of MB a
    second into the data folder until the disk was full."""
    url = f"sqlite:///{tmp_path / 'framejobs.db'}"
    settings = fast_settings(url, tmp_path / "data", max_result_bytes=1_000_000)
    query = "select md5(range::varchar) || md5((range + 1)::varchar) as s from range(1000000000000)"
    with TestClient(create_app(settings, migrate=True)) as client:
        job = submit(client, "sql", params={"query": query})
        done = wait_status(client, job["id"], timeout=20)
        assert done["status"] == "failed" and done["attempt"] == 1, done
        assert done["error"]["type"] == "PipelineError"
        assert "larger than the limit of 1000000 bytes" in done["error"]["message"]
        after = submit(client, "sql", params={"query": "select count(*) as n from input"})
        assert wait_status(client, after["id"])["status"] == "completed"


def test_a_job_that_ends_during_a_heartbeat_is_not_called_lost(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat renews the leases of the jobs running when it looked; one that
    was saved meanwhile holds no lease any more. Seen in a drain: "lease lost;
    stopping it" for a job that had just completed."""
    settings = fast_settings(sqlite_url, tmp_path / "data")
    with TestClient(create_app(settings, workers=0)) as api:
        job = submit(api, "billing_rollup", {"columns": {"userId": [1], "amount": [1.0]}})
    with TestClient(create_app(settings, workers=1)) as client:
        assert wait_status(client, job["id"])["status"] == "completed"
        worker = client.app.state.runtime.worker
        handle = ExecutionHandle(job_id=job["id"], attempt=1, params=None, timeout_s=None)
        ended = _Running(handle, finish.Attempt(job["id"], worker.id, 1), "billing_rollup")
        worker._heartbeat([ended])  # as snapshot just before the job's save
    assert "lease lost" not in caplog.text and handle.reason is None
