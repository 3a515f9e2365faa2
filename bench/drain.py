"""Drain: 5,000 trivial jobs (10-row frame, ``select count(*) from input``) submitted by
32 concurrent clients to ``framejobs serve`` with its default in-process workers;
jobs/s from the first submit until every job has completed.

Baseline, same run: the per-job engine work alone, in this process with no service
around it (write the 10-row input as Parquet, scan it from a DuckDB cursor, run the
query, write the result as Parquet), job after job.

    python -m bench.drain [--quick]
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from bench import client as fj
from bench.harness import running_server
from bench.load import Call, measure
from bench.report import header, ms, parse_args, table
from bench.submit import JSON, job_body

FULL = {"jobs": 5000}
QUICK = {"jobs": 200}
DRAIN_TIMEOUT_S = 600.0
QUERY = "select count(*) from input"


def run_service(jobs: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``env``: extra environment for the server (PYTHONPATH=<a worktree>: an A/B run)."""
    call = Call("POST", ("/jobs",), job_body("sql", 10), JSON, (202,))
    with (
        running_server("cli", env=env) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        started = time.monotonic()
        submitted = measure("submit", server.url, call, total=jobs, server_pid=server.pid)
        submit_s = time.monotonic() - started
        _wait_drained(http, started + DRAIN_TIMEOUT_S)
        drained_s = time.monotonic() - started
        items = fj.list_all(http)
    return {"submit": submitted, "submit_s": submit_s, "drained_s": drained_s, "items": items}


def _wait_drained(http: httpx.Client, deadline: float) -> None:
    while fj.any_with(http, "queued") or fj.any_with(http, "running"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs still queued or running after {DRAIN_TIMEOUT_S} s")
        time.sleep(0.1)


def engine_alone(jobs: int) -> float:
    """Seconds for the engine work of ``jobs`` jobs, one after another."""
    frame = pa.table({"userId": list(range(10)), "amount": [1.5] * 10})
    with tempfile.TemporaryDirectory(prefix="fj-bench-") as tmp:
        source, result = Path(tmp) / "in.parquet", Path(tmp) / "out.parquet"
        db = duckdb.connect(":memory:", config={"threads": 2})
        try:
            started = time.monotonic()
            for _ in range(jobs):
                pq.write_table(frame, source)
                cursor = db.cursor()
                cursor.register("input", pads.dataset(str(source), format="parquet"))
                pq.write_table(cursor.sql(QUERY).to_arrow_table(), result)
                cursor.close()
            return time.monotonic() - started
        finally:
            db.close()


def _span(items: list[dict[str, Any]]) -> tuple[float, list[float]]:
    """Server clock: first created_at to last finished_at; each job's time in system."""
    created = [dt.datetime.fromisoformat(i["created_at"]) for i in items]
    finished = [dt.datetime.fromisoformat(i["finished_at"]) for i in items if i["finished_at"]]
    in_system = [
        (dt.datetime.fromisoformat(i["finished_at"]) - c).total_seconds()
        for i, c in zip(items, created, strict=True)
        if i["finished_at"]
    ]
    return (max(finished) - min(created)).total_seconds(), sorted(in_system)


def show(jobs: int, service: dict[str, Any], alone_s: float) -> None:
    items = service["items"]
    statuses = Counter(i["status"] for i in items)
    span_s, in_system = _span(items)
    completed = statuses.get("completed", 0)
    rate = completed / service["drained_s"]
    baseline = jobs / alone_s
    p50, p99 = in_system[len(in_system) // 2], in_system[int(len(in_system) * 0.99) - 1]
    table(
        ("measure", "value"),
        [
            ("jobs submitted (202)", service["submit"].done),
            ("submits that failed", service["submit"].errors),
            ("jobs by final status", dict(statuses)),
            (
                "submit phase: s / submits per s",
                f"{service['submit_s']:.1f} / {service['submit'].rate:,.0f}",
            ),
            ("first submit -> all completed, s (client)", service["drained_s"]),
            ("first created_at -> last finished_at, s (server)", span_s),
            ("drain rate, jobs/s (client span)", rate),
            ("drain rate, jobs/s (server span)", completed / span_s),
            ("time in system p50 / p99, ms", f"{ms(p50):,.0f} / {ms(p99):,.0f}"),
            ("baseline: engine work alone, jobs/s", baseline),
            ("ratio service / baseline", rate / baseline),
        ],
    )


def _check(service: dict[str, Any]) -> None:
    submitted = service["submit"]
    if submitted.errors:
        print(f"  !! {submitted.errors} submit(s) failed, first: {submitted.first_error}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    jobs = (QUICK if args.quick else FULL)["jobs"]
    header(f"drain: {jobs:,} trivial jobs, default in-process workers (2)", args.quick)
    alone_s = engine_alone(min(jobs, 1000))
    service = run_service(jobs)
    show(jobs, service, alone_s * jobs / min(jobs, 1000))
    _check(service)


if __name__ == "__main__":
    main()
