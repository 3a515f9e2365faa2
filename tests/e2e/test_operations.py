"""Operating the processes: starts that fail say why in one line and touch no job;
a second signal ends the grace period; migrations race safely; spool files of dead
processes are swept. Real `framejobs` processes on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from service import spool
from service.config import Settings
from service.db import make_engine
from tests.e2e.server import FAST_ENV, Server
from tests.support.jobs import submit, wait_status
from tests.support.waiting import wait_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def run_cli(data: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **FAST_ENV, **env}
    full.update(FRAMEJOBS_DATA_DIR=str(data), FRAMEJOBS_DATABASE_URL=url)
    command = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(command, env=full, capture_output=True, text=True, timeout=60)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    return lines[0]


def queued_job(server_factory: Callable[..., Server]) -> tuple[Server, str]:
    api = server_factory(FRAMEJOBS_WORKERS="0").start()
    with api.client() as client:
        job_id = submit(client, "billing_rollup", {"columns": {"userId": [1], "amount": [1.0]}})[
            "id"
        ]
    return api, job_id


def test_bad_settings_are_one_line_each_and_never_show_a_secret(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fj.db'}"
    for command in ("worker", "migrate", "webhook-secret"):
        result = run_cli(
            tmp_path,
            url,
            command,
            FRAMEJOBS_WEBHOOK_SECRETS=f"{SECRET},whsec_abc",
            FRAMEJOBS_LEASE_S="inf",
        )
        assert result.returncode == 2, result.stderr
        assert SECRET not in result.stderr + result.stdout
        errors = result.stderr.splitlines()
        assert any(e.startswith("error: FRAMEJOBS_LEASE_S:") for e in errors), errors
        assert any(e.startswith("error: FRAMEJOBS_WEBHOOK_SECRETS:") for e in errors), errors


def test_a_bad_option_is_named_as_the_option_not_as_its_variable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fj.db'}"
    for command in ("worker", "serve"):
        result = run_cli(tmp_path, url, command, "--grace", "-1")
        assert result.returncode == 2, result.stderr
        assert one_line_error(result).startswith("error: --grace:"), result.stderr
        assert "FRAMEJOBS_SHUTDOWN_GRACE_S" not in result.stderr


def test_a_port_in_use_stops_serve_before_it_claims_anything(
    server_factory: Callable[..., Server],
) -> None:
    api, job_id = queued_job(server_factory)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_cli(api.data_dir, api.database_url, "serve", "--port", str(port))
        assert time.monotonic() - started < 15
    assert result.returncode == 1 and "cannot listen" in one_line_error(result)
    with api.client() as client:
        job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["started_at"] is None and job["error"] is None, job


def test_a_failed_start_claims_nothing(server_factory: Callable[..., Server]) -> None:
    api, job_id = queued_job(server_factory)
    result = run_cli(api.data_dir, api.database_url, "worker", FRAMEJOBS_PIPELINES="no_such_module")
    assert result.returncode == 1
    assert "No module named 'no_such_module'" in one_line_error(result)
    with api.client() as client:
        assert client.get(f"/jobs/{job_id}").json()["started_at"] is None


def test_a_read_only_database_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "fj.db"
    assert run_cli(tmp_path, f"sqlite:///{path}", "migrate").returncode == 0
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    result = run_cli(tmp_path, read_only, "worker")
    assert result.returncode == 1 and "readonly" in one_line_error(result)
    assert not (tmp_path / "file:").exists()  # no stray folder for a URI


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_second_signal_ends_the_grace_period(
    server_factory: Callable[..., Server], sig: signal.Signals
) -> None:
    """SIGHUP too: closing the terminal of a foreground process sends it."""
    api = server_factory(FRAMEJOBS_WORKERS="0").start()
    worker = server_factory(FRAMEJOBS_SHUTDOWN_GRACE_S="120", FRAMEJOBS_LOG_LEVEL="info")
    worker.start_worker("--concurrency", "1")
    with api.client() as client:
        wait_for(lambda: "worker running" in worker.log(), timeout=30, what="the worker")
        job = submit(client, "sleepy", params={"seconds": 300})
        wait_status(client, job["id"], "running")
        worker.signal(sig)
        wait_for(lambda: "stopping" in worker.log(), timeout=10, what="the worker to stop")
        started = time.monotonic()
        worker.signal(sig)
        assert worker.process is not None and worker.process.wait(30) == 0
        assert time.monotonic() - started < 15
        back = client.get(f"/jobs/{job['id']}").json()
    assert back["status"] == "queued" and back["error"]["type"] == "Interrupted", back


def test_spool_files_of_dead_processes_are_swept(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "from service import spool; print(spool.owned('x'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    left = folder / (dead.removesuffix("x") + "job-01abc-q1w2")
    left.mkdir()
    (left / "input.parquet").write_bytes(b"PAR1")
    (folder / (dead.removesuffix("x") + "9f.input.parquet")).write_bytes(b"PAR1")
    mine = folder / spool.owned("job-01def-e3r4")
    mine.mkdir()
    unrelated = folder / "inputs"
    unrelated.mkdir()
    assert spool.sweep(folder) == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted([mine.name, "inputs"])


def test_concurrent_migrations_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    engine = make_engine(Settings(database_url=pg_url))
    try:
        with engine.begin() as conn:  # the fixture's database is migrated: start empty
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    finally:
        engine.dispose()
    env = {**os.environ, **FAST_ENV, "FRAMEJOBS_DATABASE_URL": pg_url}
    env["FRAMEJOBS_DATA_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "service.cli", "migrate"]
    running = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in running]
    assert [p.returncode for p in running] == [0, 0, 0], outputs


def test_shutdown_ends_event_streams_and_long_polls_cleanly(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(FRAMEJOBS_WORKERS="1", FRAMEJOBS_SHUTDOWN_GRACE_S="1").start()
    ended: dict[str, float] = {}

    def follow(kind: str, job_id: str) -> None:
        with server.client(timeout=60) as client:
            if kind == "events":
                with client.stream("GET", f"/jobs/{job_id}/events") as response:
                    for _ in response.iter_lines():
                        pass
            else:
                client.get(f"/jobs/{job_id}", params={"wait": 60})
        ended[kind] = time.monotonic()

    with server.client() as client:
        running = submit(client, "sleepy", params={"seconds": 300})
        wait_status(client, running["id"], "running")
        # Watched: a job that does not change (due in 2999), so the long-poll waits
        # until the shutdown answers it; the running job's progress would answer it.
        job = submit(client, "sleepy", run_after="2999-01-01T00:00:00Z")
    threads = [threading.Thread(target=follow, args=(k, job["id"])) for k in ("events", "poll")]
    for thread in threads:
        thread.start()
    # Inside the app, not only connected: a connection whose request uvicorn has not
    # read yet is idle to it, and shutdown resets it (the test failed so once).
    wait_for(lambda: _watchers(server) >= 2, timeout=10, what="both requests to be open")
    stopped = time.monotonic()
    assert server.terminate(timeout=20) == 0, server.log()
    for thread in threads:
        thread.join(10)
    assert all(ended[k] - stopped < 3 for k in ("events", "poll")), ended
    assert "Exception in ASGI application" not in server.log()
    assert '"level": "error"' not in server.log(), server.log()


def _watchers(server: Server) -> int:
    """Open event streams and long-polls, as the server's metrics count them."""
    with server.client() as client:
        text = client.get("/metrics").text
    (line,) = [x for x in text.splitlines() if x.startswith("framejobs_watchers ")]
    return int(float(line.split()[1]))


def test_a_schema_from_a_newer_version_is_named_not_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fj.db'}"
    assert run_cli(tmp_path, url, "migrate").returncode == 0
    engine = make_engine(Settings(database_url=url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    finally:
        engine.dispose()
    for command in ("migrate", "worker"):
        result = run_cli(tmp_path, url, command)
        assert result.returncode == 1
        assert "'9999_future', which this version of framejobs does not know" in (
            one_line_error(result)
        )


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_signal_during_start_up_stops_the_process_once_started(
    server_factory: Callable[..., Server], command: str
) -> None:
    """Its workers may run jobs before the stop handlers are in place: the signal was
    fatal then (jobs left `running`); now it is kept and the process stops cleanly."""
    server_factory(FRAMEJOBS_WORKERS="0").start()  # migrates the database
    pipelines = "tests.support.pipelines,tests.support.signal_at_import"
    process = server_factory(FRAMEJOBS_PIPELINES=pipelines, FRAMEJOBS_LOG_LEVEL="info")
    if command == "serve":
        process._spawn("serve", "--port", str(process.port))
    else:
        process.start_worker()
    assert process.process is not None
    assert process.process.wait(60) == 0, process.log()


def test_downloads_copy_nothing_to_disk(server_factory: Callable[..., Server]) -> None:
    """Every format but Parquet used to copy the whole result into the spool first (a
    JSON page of 1,000 rows too), and a client that left mid-stream left that copy
    until garbage collection."""
    server = server_factory().start()
    spool = server.data_dir / "spool"
    query = "select range as i, md5(range::varchar) as s from range(2000000)"
    with server.client() as client:
        job = submit(client, "sql", params={"query": query})
        assert wait_status(client, job["id"], timeout=60)["status"] == "completed"
        for fmt in ("csv", "ndjson", "arrow", "json"):
            with client.stream("GET", f"/jobs/{job['id']}/result?format={fmt}") as response:
                assert response.status_code == 200
                next(response.iter_bytes())  # a first chunk; the rest is still to come
                # (what a download wrote was named <job id>-….result.parquet)
                assert not list(spool.glob("*.result.parquet")), fmt


def _spawn_worker(
    data: Path, url: str, *, shell_prefix: str = "", **env: str
) -> subprocess.Popen[bytes]:
    full = {**os.environ, **FAST_ENV, **env}
    full.update(FRAMEJOBS_DATA_DIR=str(data), FRAMEJOBS_DATABASE_URL=url)
    command = f'{shell_prefix} exec "{sys.executable}" -m service.cli worker'
    with (data / "worker.log").open("ab") as log:
        return subprocess.Popen(["sh", "-c", command], env=full, stdout=log, stderr=log)


def test_a_second_signal_while_starting_gives_the_start_up(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """The first signal during start-up is kept for later; a second one must still end
    a start that hangs (Ctrl-C twice)."""
    api = server_factory(FRAMEJOBS_WORKERS="0").start()  # migrates the database
    marker = tmp_path / "importing"
    pipelines = "tests.support.pipelines,tests.support.slow_import"
    worker = _spawn_worker(
        api.data_dir,
        api.database_url,
        FRAMEJOBS_PIPELINES=pipelines,
        FRAMEJOBS_TEST_MARKER=str(marker),
    )
    try:
        wait_for(marker.exists, timeout=30, what="the slow import")
        worker.send_signal(signal.SIGTERM)
        log = api.data_dir / "worker.log"
        wait_for(lambda: "SIGTERM while starting" in log.read_text(), what="the first one kept")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == -signal.SIGTERM
    finally:
        worker.kill()
        worker.wait(10)


def test_a_worker_started_ignoring_sighup_keeps_ignoring_it(
    server_factory: Callable[..., Server],
) -> None:
    """`nohup framejobs worker &` must survive the terminal it was started from."""
    api = server_factory(FRAMEJOBS_WORKERS="0").start()
    worker = _spawn_worker(
        api.data_dir, api.database_url, shell_prefix='trap "" HUP;', FRAMEJOBS_LOG_LEVEL="info"
    )
    try:
        log = api.data_dir / "worker.log"
        wait_for(lambda: "worker running" in log.read_text(), timeout=30, what="the worker")
        worker.send_signal(signal.SIGHUP)
        with api.client() as client:
            job = submit(client, "billing_rollup", {"columns": {"userId": [1], "amount": [1.0]}})
            assert wait_status(client, job["id"])["status"] == "completed"
        assert worker.poll() is None
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.kill()
        worker.wait(10)
