"""PostgreSQL goes away and comes back while jobs are in flight.

This test stops and starts the local PostgreSQL cluster itself, so it needs root and
``pg_ctlcluster`` (as in CI); elsewhere it skips (fails under CI=true).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e import pg
from tests.support import databases
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.serial,  # it restarts the server every other test uses
    pytest.mark.timeout(300),
    pytest.mark.usefixtures("controllable_pg"),
]


def _cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    if action == "stop":
        command += ["--mode", "fast"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@pytest.fixture
def controllable_pg(pg_template: None) -> None:
    if (
        shutil.which("pg_ctlcluster") is None
        or os.geteuid() != 0
        or not Path("/etc/postgresql").exists()
    ):
        message = "restarting PostgreSQL needs root and pg_ctlcluster"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_restart_postgres_with_500_jobs_in_flight(procs, pg_url: str, tmp_path: Path) -> None:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    api = procs(FRAMEJOBS_WORKERS="0").start()
    body = {
        "pipeline": "side_effect",
        "params": {"log_dir": str(log_dir), "seconds": 0.02},
        "frame": {"columns": {"a": [1, 2, 3]}},
    }
    with api.client() as client:
        first = client.post("/jobs", json=body).json()["id"]
    engine = pg.engine_for(pg_url)
    try:
        ids = [first, *pg.copy_job(engine, first, 499)]
    finally:
        engine.dispose()
    for _ in range(2):
        procs().start_worker("--concurrency", "2")
    wait_for(lambda: len(list(log_dir.iterdir())) >= 20, timeout=60, what="jobs under way")
    _cluster("stop")
    try:
        with api.client(timeout=httpx.Timeout(15)) as client:
            response = client.get(f"/jobs/{first}")
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"]
    finally:
        _cluster("start")
    databases.wait_until_available()
    engine = pg.engine_for(pg_url)
    try:
        wait_for(
            lambda: pg.status_counts(engine)["completed"] == 500,
            timeout=180,
            interval=0.5,
            what="all 500 jobs completed",
        )
        assert set(pg.events(engine, "completed").values()) == {1}
    finally:
        engine.dispose()
    with api.client() as client:
        assert client.get(f"/jobs/{ids[-1]}").json()["status"] == "completed"
