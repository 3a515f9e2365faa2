"""Many processes, one PostgreSQL: claim races, crashes, pauses, split API/workers."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from service.db import reading
from service.models import event_table, job_table
from tests.e2e import pg
from tests.e2e.server import Server
from tests.support.jobs import wait_status
from tests.support.receiver import Receiver
from tests.support.waiting import wait_for

# serial: they load every core for a while, or time rescues and cancels
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.serial,
    pytest.mark.timeout(300),
]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


# The default leases and monitor intervals: the tests' fast ones (a monitor tick every
# 50 ms, a rescue every 0.5 s, in each of 8 processes) cost more CPU than the jobs, and
# nothing here is cancelled or rescued.
PRODUCTION_PACE = {
    "FRAMEJOBS_LEASE_S": "30",
    "FRAMEJOBS_HEARTBEAT_S": "10",
    "FRAMEJOBS_PROGRESS_INTERVAL_S": "0.25",
    "FRAMEJOBS_RESCUE_INTERVAL_S": "5",
    "FRAMEJOBS_POLL_INTERVAL_S": "0.5",
}


def _side_effect(log_dir: Path, seconds: float = 0.0) -> dict:
    return {
        "pipeline": "side_effect",
        "params": {"log_dir": str(log_dir), "seconds": seconds},
        "frame": {"columns": {"a": [1, 2, 3]}},
    }


def _runs(log_dir: Path) -> Counter[str]:
    return Counter(p.name.split(".")[0] for p in log_dir.iterdir())


def _seed(api: Server, body: dict, n: int, pg_url: str) -> list[str]:
    with api.client() as client:
        first = client.post("/jobs", json=body).json()["id"]
    engine = pg.engine_for(pg_url)
    try:
        return [first, *pg.copy_job(engine, first, n - 1)]
    finally:
        engine.dispose()


def _wait_all(pg_url: str, n: int, timeout: float) -> None:
    engine = pg.engine_for(pg_url)
    try:
        try:
            wait_for(
                lambda: pg.status_counts(engine)["completed"] == n,
                timeout=timeout,
                interval=0.2,
                what=f"{n} jobs completed",
            )
        except AssertionError as exc:
            with reading(engine) as conn:
                errors = Counter(
                    conn.execute(
                        sa.select(job_table.c.error_type, job_table.c.error_message).where(
                            job_table.c.status == "failed"
                        )
                    ).all()
                )
            raise AssertionError(f"{exc}: {dict(pg.status_counts(engine))} {errors}") from None
    finally:
        engine.dispose()


def test_eight_workers_drain_5000_jobs_each_exactly_once(
    procs, pg_url: str, tmp_path: Path
) -> None:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    api = procs(FRAMEJOBS_WORKERS="0").start()
    ids = _seed(api, _side_effect(log_dir), 5000, pg_url)
    workers = [procs(**PRODUCTION_PACE).start_worker("--concurrency", "2") for _ in range(8)]
    _wait_all(pg_url, 5000, timeout=240)
    runs = _runs(log_dir)
    assert set(runs) == set(ids) and set(runs.values()) == {1}
    engine = pg.engine_for(pg_url)
    try:
        assert set(pg.events(engine, "completed").values()) == {1}
    finally:
        engine.dispose()
    assert len({p.name.split(".")[2] for p in log_dir.iterdir()}) == len(workers)  # all took part


def test_kill9_workers_at_random_moments(procs, pg_url: str, tmp_path: Path) -> None:
    """Lease-based rescue (the same-host shortcut is off, as if the machine were lost)."""
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    env = {
        "FRAMEJOBS_LEASE_S": "2",
        "FRAMEJOBS_HEARTBEAT_S": "0.5",
        "FRAMEJOBS_RESCUE_INTERVAL_S": "0.25",
        "FRAMEJOBS_RESCUE_DEAD_LOCAL": "false",
    }
    api = procs(FRAMEJOBS_WORKERS="0").start()
    ids = _seed(api, _side_effect(log_dir, seconds=0.4), 60, pg_url)
    workers = [procs(**env).start_worker("--concurrency", "2") for _ in range(2)]
    rng = random.Random(7)
    kills: list[datetime] = []
    engine = pg.engine_for(pg_url)
    try:
        for _ in range(10):
            wait_for(
                lambda: pg.status_counts(engine)["running"] > 0, timeout=30, what="a running job"
            )
            time.sleep(rng.uniform(0.0, 0.4))  # a random moment inside a job: the subject here
            victim = workers.pop(rng.randrange(len(workers)))
            victim.kill()
            kills.append(datetime.now(UTC))
            workers.append(procs(**env).start_worker("--concurrency", "2"))
        _wait_all(pg_url, 60, timeout=120)
        assert set(pg.events(engine, "completed").values()) == {1}
        rescues = _rescue_times(engine, ids)
    finally:
        engine.dispose()
    assert rescues, "no job was caught mid-run"
    delays = [(r - max(k for k in kills if k <= r)).total_seconds() for r in rescues]
    # lease + heartbeat + rescue tick, plus slack for a busy 2-core machine
    assert max(delays) <= 2 + 0.5 + 0.25 + 1.5, delays


def _rescue_times(engine: sa.Engine, ids: list[str]) -> list[datetime]:
    """When each lease-expired attempt went back to the queue (rescue sets run_after)."""
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(event_table.c.data).where(
                event_table.c.job_id.in_(ids), event_table.c.status == "queued"
            )
        ).scalars()
        return [
            datetime.fromisoformat(d["run_after"])
            for d in rows
            if (d["error"] or {}).get("type") == "LeaseExpired"
        ]


def test_paused_worker_cannot_overwrite_the_new_result(procs, pg_url: str, tmp_path: Path) -> None:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    env = {"FRAMEJOBS_LEASE_S": "2", "FRAMEJOBS_HEARTBEAT_S": "0.5"}
    api = procs(FRAMEJOBS_WORKERS="0").start()
    paused = procs(**env).start_worker("--concurrency", "1")
    with api.client() as client:
        job = client.post("/jobs", json=_side_effect(log_dir, seconds=3)).json()
        running = wait_status(client, job["id"], "running")
        paused.signal(signal.SIGSTOP)
        try:
            taker = procs(**env).start_worker("--concurrency", "1")
            done = wait_status(client, job["id"], "completed", timeout=30)
        finally:
            paused.signal(signal.SIGCONT)
        assert done["attempt"] == 2 and running["attempt"] == 1
        result_before = client.get(f"/jobs/{job['id']}/result").json()["rows"]
        # the woken worker tries to finish its stale attempt: it must be fenced off
        wait_for(
            lambda: "lease lost before the outcome was saved" in paused.log(),
            timeout=15,
            what="the paused worker's finish to be refused",
        )
        final = client.get(f"/jobs/{job['id']}").json()
        assert final["status"] == "completed" and final["attempt"] == 2
        assert final["finished_at"] == done["finished_at"]
        assert client.get(f"/jobs/{job['id']}/result").json()["rows"] == result_before
        assert result_before[0]["pid"] == taker.pid


def test_two_apis_three_workers_end_to_end(procs, pg_url: str, tmp_path: Path) -> None:
    hooks = {
        "FRAMEJOBS_WEBHOOK_SECRETS": SECRET,
        "FRAMEJOBS_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "FRAMEJOBS_WEBHOOK_RETRY_SCHEDULE": "0.1,0.1",
    }
    api1 = procs(FRAMEJOBS_WORKERS="0", **hooks).start()
    api2 = procs(FRAMEJOBS_WORKERS="0", **hooks).start()
    for _ in range(3):
        procs(**hooks).start_worker("--concurrency", "1")
    with Receiver() as receiver, api1.client() as c1, api2.client() as c2:
        body = {
            "pipeline": "sleepy",
            "params": {"seconds": 60},
            "frame": {"columns": {"a": [1]}},
            "webhook": {"url": receiver.url},
        }
        job = c1.post("/jobs", json=body).json()
        seen: list[dict] = []
        stream = threading.Thread(target=_watch, args=(api2.base_url, job["id"], seen))
        stream.start()
        wait_for(
            lambda: any(e["status"] == "running" for e in seen),
            timeout=15,
            what="running via API 2",
        )
        cancelled_at = time.monotonic()
        assert c2.post(f"/jobs/{job['id']}/cancel").status_code == 202
        stream.join(15)
        assert not stream.is_alive() and seen[-1]["status"] == "cancelled"
        assert time.monotonic() - cancelled_at < 2.0
        (got,) = receiver.wait_count(1)
        assert json.loads(got.body)["type"] == "job.cancelled"
        wait_for(
            lambda: c1.get(f"/jobs/{job['id']}").json()["webhook"]["state"] == "delivered",
            what="delivered",
        )
        assert len(receiver.received) == 1


def _watch(base_url: str, job_id: str, seen: list[dict]) -> None:
    with httpx.stream("GET", f"{base_url}/jobs/{job_id}/events", timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
