"""PostgreSQL wake-up latency: how soon an idle worker starts a job after it was
submitted. ``framejobs serve --workers 0`` (the API) and one ``framejobs worker
--concurrency 2`` (another process) on one PostgreSQL database; jobs are submitted one
at a time (10-row frame, sql ``select count(*) from input``), each after the previous
one completed and a random idle pause of 50-250 ms, so the worker is always idle,
waiting, when the job arrives.

Measured per job: ``created_at`` -> ``started_at`` (both server clocks, same machine:
the API stamps created_at before it writes the input and commits, so this includes
the rest of the submit transaction, the NOTIFY, the worker's wake-up and its claim);
202 received by the client -> ``started_at`` (may be negative: the worker can start
before the client has read the answer); and 202 -> the completed job seen by the
client's long-poll on the API (``GET /jobs/{id}?wait=``, woken by NOTIFY as well).

Baseline, same run: the same worker without its LISTEN connection
(bench/_pg_nolisten_worker.py), which finds jobs by polling every
FRAMEJOBS_POLL_INTERVAL_S (default 0.5 s). Rounds alternate LISTEN / polling.

    python -m bench.pg_wakeup [--quick]
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import pg
from bench.harness import temp_dir
from bench.report import header, ms, parse_args, table, verdict
from bench.submit import JSON, job_body

FULL = {"samples": 200, "rounds": 4}
QUICK = {"samples": 10, "rounds": 1}
TARGET_P50_MS = 20.0
IDLE_S = (0.05, 0.25)
JOB_TIMEOUT_S = 30.0


@dataclass
class Mode:
    name: str
    tag: str
    command: list[str]
    created_to_started: list[float] = field(default_factory=list)
    answered_to_started: list[float] = field(default_factory=list)
    answered_to_seen: list[float] = field(default_factory=list)


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


def one_job(http: httpx.Client, body: bytes) -> tuple[float, float, float]:
    """Submit, long-poll until terminal; (created->started, 202->started, 202->seen) s."""
    answer = http.post("/jobs", content=body, headers=dict(JSON))
    answered = time.time()
    if answer.status_code != 202:
        raise RuntimeError(f"submit answered {answer.status_code}: {answer.text[:300]}")
    job: dict[str, Any] = answer.json()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while job["status"] not in ("completed", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job['id']} still {job['status']} after {JOB_TIMEOUT_S} s")
        job = http.get(f"/jobs/{job['id']}", params={"wait": 5}).json()
    seen = time.time()
    if job["status"] != "completed":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job['error']}")
    started = _ts(job["started_at"])
    return started - _ts(job["created_at"]), started - answered, seen - answered


def run_round(mode: Mode, api: pg.Proc, env: dict[str, str], tmp: Path, n: int) -> None:
    with pg.processes() as procs:
        procs.append(pg.spawn(mode.command, env, tmp / f"worker-{mode.tag}.log"))
        body = job_body("sql", 10)
        with httpx.Client(base_url=api.url or "", timeout=30) as http:
            one_job(http, body)  # warm-up: the worker is up, DuckDB is loaded
            for _ in range(n):
                time.sleep(random.uniform(*IDLE_S))
                created, answered, seen = one_job(http, body)
                mode.created_to_started.append(created)
                mode.answered_to_started.append(answered)
                mode.answered_to_seen.append(seen)


def _p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


def show(modes: list[Mode]) -> None:
    rows = []
    for mode in modes:
        rows.append(
            [
                mode.name,
                len(mode.created_to_started),
                ms(statistics.median(mode.created_to_started)),
                ms(_p(mode.created_to_started, 99)),
                ms(statistics.median(mode.answered_to_started)),
                ms(_p(mode.answered_to_started, 99)),
                ms(statistics.median(mode.answered_to_seen)),
                ms(_p(mode.answered_to_seen, 99)),
            ]
        )
    table(
        (
            "worker",
            "jobs",
            "created->started p50 ms",
            "p99 ms",
            "202->started p50 ms",
            "p99 ms",
            "202->completed seen p50 ms",
            "p99 ms",
        ),
        rows,
    )
    listen, polling = modes
    p50 = ms(statistics.median(listen.created_to_started))
    ratio = statistics.median(polling.created_to_started) / statistics.median(
        listen.created_to_started
    )
    print(
        f"\n  LISTEN/NOTIFY: created -> started p50 {p50:.1f} ms  "
        f"{verdict(p50, TARGET_P50_MS, at_most=True)}"
    )
    print(f"  polling (no LISTEN) / LISTEN, created -> started p50: {ratio:.1f}x")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    if not pg.available():
        print(pg.skip_message("pg_wakeup"))
        return
    sizes = QUICK if args.quick else FULL
    header(
        "pg_wakeup: submit -> running for an idle worker, LISTEN/NOTIFY vs polling "
        "(API --workers 0 + one framejobs worker)",
        args.quick,
    )
    worker_args = ["--concurrency", "2"]
    modes = [
        Mode(
            "LISTEN/NOTIFY (framejobs worker)",
            "listen",
            pg.framejobs_command("worker", *worker_args),
        ),
        Mode(
            "polling, no LISTEN (poll 0.5 s)",
            "polling",
            [sys.executable, "-m", "bench._pg_nolisten_worker", *worker_args],
        ),
    ]
    per_round = max(1, sizes["samples"] // sizes["rounds"])
    print(
        f"   {sizes['rounds']} alternating round(s) of {per_round} jobs per worker kind, "
        f"idle {IDLE_S[0] * 1000:.0f}-{IDLE_S[1] * 1000:.0f} ms before each submit"
    )
    with pg.database("wakeup") as name, temp_dir() as tmp, pg.processes() as procs:
        env = pg.framejobs_env(pg.sqlalchemy_url(name), tmp / "data")
        api = pg.start_api(env, tmp)
        procs.append(api)
        for _ in range(sizes["rounds"]):
            for mode in modes:
                run_round(mode, api, env, tmp, per_round)
    show(modes)


if __name__ == "__main__":
    main()
