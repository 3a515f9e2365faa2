"""The real server process: formats against DuckDB, crashes, shutdown, load."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tests.e2e.server import Server
from tests.support.jobs import wait_status
from tests.support.waiting import wait_for

QUERY = (
    "select user_id, sum(amount) as total, count(*) as n "
    "from input group by user_id order by user_id"
)


def _frame(rows: int = 2000) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([i % 37 for i in range(rows)], pa.int64()),
            "amount": pa.array([(i * 7919 % 1000) / 8 for i in range(rows)], pa.float64()),
        }
    )


def _expected(table: pa.Table) -> pa.Table:
    con = duckdb.connect()
    con.register("input", table)
    expected = con.sql(QUERY).to_arrow_table()
    con.close()
    return expected


def _uploads(table: pa.Table) -> dict[str, tuple[str, bytes, str]]:
    csv, parquet = io.BytesIO(), io.BytesIO()
    pcsv.write_csv(table, csv)
    pq.write_table(table, parquet)
    return {
        "csv": ("f.csv", csv.getvalue(), "text/csv"),
        "parquet": ("f.parquet", parquet.getvalue(), "application/vnd.apache.parquet"),
    }


def test_formats_match_duckdb(server_factory: Callable[..., Server]) -> None:
    server = server_factory().start()
    table = _frame()
    expected = _expected(table)
    spec = {"pipeline": "sql", "params": {"query": QUERY}}
    with server.client() as client:
        ids = [
            client.post("/jobs", json={**spec, "frame": {"columns": table.to_pydict()}}).json()[
                "id"
            ]
        ]
        for upload in _uploads(table).values():
            response = client.post(
                "/jobs", data={"spec": json.dumps(spec)}, files={"frame": upload}
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        for job_id in ids:
            assert wait_status(client, job_id)["status"] == "completed"
            _check_all_formats(client, f"/jobs/{job_id}/result", expected)


def _check_all_formats(client, url: str, expected: pa.Table) -> None:
    rows = expected.to_pylist()
    assert client.get(url, params={"limit": 10_000}).json()["rows"] == rows
    assert [
        json.loads(x) for x in client.get(url, params={"format": "ndjson"}).text.splitlines()
    ] == rows
    parquet = pq.read_table(io.BytesIO(client.get(url, params={"format": "parquet"}).content))
    assert parquet.equals(expected)
    arrow = pa.ipc.open_stream(client.get(url, params={"format": "arrow"}).content).read_all()
    assert arrow.equals(expected)
    csv = pcsv.read_csv(io.BytesIO(client.get(url, params={"format": "csv"}).content))
    assert csv.equals(expected)


def _events(db: Path) -> Counter[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return Counter(conn.execute("select job_id, status from job_event").fetchall())


def test_kill9_while_running_and_queued_loses_nothing(server_factory, tmp_path: Path) -> None:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    server = server_factory().start()
    with server.client() as client:
        slow = {"pipeline": "side_effect", "params": {"log_dir": str(log_dir), "seconds": 2}}
        ids = [
            client.post("/jobs", json={**slow, "frame": {"columns": {"a": [1]}}}).json()["id"]
            for _ in range(6)
        ]
        wait_status(client, ids[0], "running")
        server.kill()  # two running, four queued
    restarted = server_factory().start()
    with restarted.client() as client:
        finals = [wait_status(client, job_id, timeout=60) for job_id in ids]
    assert [f["status"] for f in finals] == ["completed"] * 6, finals
    events = _events(tmp_path / "data" / "framejobs.db")
    for job_id in ids:
        assert events[(job_id, "completed")] == 1
    finished_runs = Counter(p.name.split(".")[0] for p in log_dir.iterdir())
    assert set(finished_runs) == set(ids)
    assert all(n == 1 for n in finished_runs.values()), finished_runs  # killed runs never finished


def test_sigterm_stops_within_grace_and_exits_zero(server_factory, tmp_path: Path) -> None:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    ids: list[str] = []
    for _round in range(3):
        # room for the re-queued ones; a short grace so the interrupt path is what runs
        server = server_factory(FRAMEJOBS_WORKERS="4", FRAMEJOBS_SHUTDOWN_GRACE_S="1").start()
        with server.client() as client:
            long_job = {
                "pipeline": "side_effect",
                "params": {"log_dir": str(log_dir), "seconds": 60},
            }
            job = client.post("/jobs", json={**long_job, "frame": {"columns": {"a": [1]}}}).json()
            ids.append(job["id"])
            wait_status(client, job["id"], "running")
        assert server.terminate(timeout=15) == 0, server.log()
    final = server_factory(FRAMEJOBS_WORKERS="0").start()  # look, don't run
    with final.client() as client:
        for job_id in ids:
            body = client.get(f"/jobs/{job_id}").json()
            assert body["status"] == "queued" and body["error"]["type"] == "Interrupted"
            assert body["attempt"] == 0  # an interrupted attempt is given back
            assert client.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"


@pytest.mark.slow
@pytest.mark.serial
def test_thousand_concurrent_submits_each_complete_once(server_factory, tmp_path: Path) -> None:
    server = server_factory(FRAMEJOBS_WORKERS="4").start()
    ids: list[str] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client_thread(n: int) -> None:
        with server.client() as client:
            for i in range(32 if n < 8 else 31):
                body = {
                    "pipeline": "sql",
                    "params": {"query": "select count(*) as c from input"},
                    "frame": {"columns": {"a": list(range(10)), "t": [n, i] * 5}},
                }
                response = client.post("/jobs", json=body)
                if response.status_code != 202:
                    errors.append(response.text)
                    continue
                with lock:
                    ids.append(response.json()["id"])

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(ids) == 1000 == len(set(ids))

    def all_done() -> bool:
        with server.client() as client:
            left = client.get("/jobs", params={"status": "queued", "page_size": 1}).json()["items"]
            running = client.get("/jobs", params={"status": "running", "page_size": 1}).json()[
                "items"
            ]
        return not left and not running

    wait_for(all_done, timeout=120, interval=0.2, what="all jobs to finish")
    events = _events(tmp_path / "data" / "framejobs.db")
    assert sum(1 for (_, status) in events if status == "completed") == 1000
    assert all(events[(job_id, "completed")] == 1 for job_id in ids)
    assert all(events[(job_id, "running")] == 1 for job_id in ids)
