"""PostgreSQL drain: 10,000 queued trivial jobs (10-row frame, sql pipeline
``select count(*) from input``) run by 1, 2 and 4 ``framejobs worker`` processes
(``--concurrency 2`` each), against the ceiling: the same number of raw psycopg loops
(bench/_pg_raw_loop.py) that only claim (the same SKIP LOCKED CTE) and complete each
job, on a copy of the same database.

Set-up: one job is submitted through ``framejobs serve --workers 0`` (so its row and
input payload are the real thing), copied 10,000 times in SQL (generate_series), and
the template deleted; every run then starts from its own ``CREATE DATABASE ...
TEMPLATE`` copy of that database. Rate = completed jobs / (first ``started_at`` to
last ``finished_at``); runs go raw, floor, service for each process count.

    python -m bench.pg_drain [--quick] [--concurrency N] [--processes 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import psycopg

from bench import pg
from bench.harness import cpu_seconds, temp_dir
from bench.report import header, table, verdict
from bench.submit import JSON, job_body
from service.config import Settings
from service.pipelines import load_registry

FULL = {"jobs": 10_000}
QUICK = {"jobs": 300}
TARGET_RATIO = 0.5
DRAIN_TIMEOUT_S = 900.0


@dataclass
class Run:
    kind: str  # "raw" | "service"
    processes: int
    jobs: int
    completed: int
    once: bool  # every job completed at its first attempt (and, for the service, one event)
    span_s: float  # first started_at -> last finished_at (server clocks)
    wall_s: float  # processes started -> nothing queued or running
    client_cpu_s: float
    backend_cpu_s: float

    @property
    def rate(self) -> float:
        return self.completed / self.span_s if self.span_s else float("nan")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--concurrency", type=int, default=2, help="slots per worker process")
    parser.add_argument("--processes", default="1,2,4", help="worker process counts")
    parser.add_argument("--jobs", type=int, default=None, help="override the job count")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="FRAMEJOBS_X=V",
        help="an extra setting for the worker processes (repeatable)",
    )
    return parser.parse_args(argv)


@contextmanager
def seeded(jobs: int) -> Iterator[str]:
    """A database holding ``jobs`` queued copies of one submitted job (a template for
    each run; nothing may be connected to it while it is copied)."""
    with pg.database("drain_seed") as name, temp_dir() as tmp:
        env = pg.framejobs_env(pg.sqlalchemy_url(name), tmp / "data")
        with pg.processes() as procs:
            api = pg.start_api(env, tmp)
            procs.append(api)
            answer = httpx.post(
                f"{api.url}/jobs", content=job_body("sql", 10), headers=dict(JSON), timeout=30
            )
            answer.raise_for_status()
            template = answer.json()["id"]
        pg.copy_queued(name, template, jobs)
        pg.delete_job(name, template)
        pg.vacuum_analyze(name)
        yield name


def _busy(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM job WHERE status IN ('queued', 'running'))"
    ).fetchone()
    return bool(row and row[0])


def _started(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM job WHERE status <> 'queued')").fetchone()
    return bool(row and row[0])


def _backend_pids(conn: psycopg.Connection, dbname: str) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    ).fetchall()
    return [int(pid) for (pid,) in rows]


def _cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def _outcome(conn: psycopg.Connection, kind: str) -> tuple[int, bool, float]:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'completed'),"
        " count(*) FILTER (WHERE status = 'completed' AND attempt = 1),"
        " extract(epoch FROM max(finished_at) - min(started_at)) FROM job"
    ).fetchone()
    assert row is not None
    completed, first_attempt, span = int(row[0]), int(row[1]), float(row[2] or 0.0)
    once = completed == first_attempt
    if kind == "service":
        events = conn.execute(
            "SELECT count(*), count(DISTINCT job_id) FROM job_event WHERE status = 'completed'"
        ).fetchone()
        assert events is not None
        once = once and int(events[0]) == int(events[1]) == completed
    return completed, once, span


LOOPS = {"raw": "bench._pg_raw_loop", "floor": "bench._pg_floor_loop"}


def run_loop(kind: str, seed: str, processes: int, jobs: int) -> Run:
    """The raw loop (claim + complete only) or the floor (bench/_pg_floor_loop.py)."""
    pipelines = ",".join(sorted(load_registry(Settings()).names))
    with pg.database(f"drain_{kind}", template=seed) as name, temp_dir() as tmp:
        url = pg.libpq_url(name)
        started = time.monotonic()
        loops = [
            pg.spawn(
                [sys.executable, "-m", LOOPS[kind], url, f"{kind}-{i}", pipelines],
                pg.framejobs_env("", tmp),
                tmp / f"{kind}-{i}.log",
            )
            for i in range(processes)
        ]
        for loop in loops:
            loop.proc.wait(DRAIN_TIMEOUT_S)
        wall = time.monotonic() - started
        reports = [_last_json(loop) for loop in loops]
        with psycopg.connect(url) as conn:
            completed, once, span = _outcome(conn, kind)
    return Run(
        kind,
        processes,
        jobs,
        completed,
        once,
        span,
        wall,
        sum(r["cpu_s"] for r in reports),
        sum(r["backend_cpu_s"] for r in reports),
    )


def _last_json(proc: pg.Proc) -> dict[str, float]:
    lines = proc.log_path.read_text().splitlines()
    if proc.proc.returncode != 0 or not lines:
        raise RuntimeError(f"a loop failed:\n{proc.log_tail()}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def run_service(
    seed: str, processes: int, jobs: int, concurrency: int, extra: dict[str, str]
) -> Run:
    with (
        pg.database("drain_svc", template=seed) as name,
        temp_dir() as tmp,
        pg.processes() as procs,
        psycopg.connect(pg.libpq_url(name), autocommit=True) as conn,
    ):
        env = pg.framejobs_env(pg.sqlalchemy_url(name), tmp / "data", extra)
        command = pg.framejobs_command("worker", "--concurrency", str(concurrency))
        started = time.monotonic()
        for i in range(processes):
            procs.append(pg.spawn(command, env, tmp / f"worker-{i}.log"))
        deadline = started + DRAIN_TIMEOUT_S
        # CPU is counted from the first claim on, so process start-up is left out
        while not _started(conn) and time.monotonic() < deadline:
            time.sleep(0.02)
        cpu_before = _cpu([p.pid for p in procs]), _cpu(_backend_pids(conn, name))
        while _busy(conn):
            for proc in procs:
                if proc.proc.poll() is not None:
                    raise RuntimeError(f"a worker exited:\n{proc.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued or running after {DRAIN_TIMEOUT_S} s")
            time.sleep(0.1)
        wall = time.monotonic() - started
        client_cpu = _cpu([p.pid for p in procs]) - cpu_before[0]
        backend_cpu = _cpu(_backend_pids(conn, name)) - cpu_before[1]
        completed, once, span = _outcome(conn, "service")
    return Run("service", processes, jobs, completed, once, span, wall, client_cpu, backend_cpu)


def show(runs: list[Run], concurrency: int) -> None:
    best_raw = max(r.rate for r in runs if r.kind == "raw")
    rows = []
    for run in runs:
        label = {
            "raw": f"raw loop x {run.processes}",
            "floor": f"floor loop x {run.processes}",
        }.get(run.kind, f"framejobs worker x {run.processes} (--concurrency {concurrency})")
        rows.append(
            [
                label,
                f"{run.completed}/{run.jobs}",
                "yes" if run.once else "NO",
                run.span_s,
                run.wall_s,
                run.rate,
                run.client_cpu_s * 1000 / max(run.completed, 1),
                run.backend_cpu_s * 1000 / max(run.completed, 1),
            ]
        )
    table(
        (
            "run",
            "completed",
            "exactly once",
            "span s",
            "wall s",
            "jobs/s",
            "client CPU ms/job",
            "PG backend CPU ms/job",
        ),
        rows,
    )
    print()
    raws = {r.processes: r for r in runs if r.kind == "raw"}
    floors = {r.processes: r for r in runs if r.kind == "floor"}
    for run in runs:
        if run.kind == "raw":
            continue
        ratio = run.rate / raws[run.processes].rate
        name = "worker" if run.kind == "service" else "floor loop"
        line = (
            f"  {run.processes} {name} process(es): {run.rate:,.0f} jobs/s = {ratio:.3f}x the raw "
            f"loop x {run.processes}, {run.rate / best_raw:.3f}x the best raw loop  "
            f"{verdict(ratio, TARGET_RATIO)}"
        )
        if run.kind == "service" and run.processes in floors:
            line += f"; {run.rate / floors[run.processes].rate:.3f}x the floor loop's"
        print(line)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    if not pg.available():
        print(pg.skip_message("pg_drain"))
        return
    jobs = args.jobs or (QUICK if args.quick else FULL)["jobs"]
    counts = [int(n) for n in args.processes.split(",")]
    header(
        f"pg_drain: {jobs:,} queued trivial jobs on PostgreSQL, 1/2/4 worker processes "
        "vs raw claim+complete loops",
        args.quick,
    )
    extra = dict(item.split("=", 1) for item in args.worker_env)
    if extra:
        print(f"   worker settings: {extra}")
    runs: list[Run] = []
    with seeded(jobs) as seed:
        for n in counts:
            runs.append(run_loop("raw", seed, n, jobs))
            runs.append(run_loop("floor", seed, n, jobs))
            runs.append(run_service(seed, n, jobs, args.concurrency, extra))
            print(
                f"   ... {n} process(es): raw {runs[-3].rate:,.0f} jobs/s, "
                f"floor {runs[-2].rate:,.0f} jobs/s, service {runs[-1].rate:,.0f} jobs/s",
                flush=True,
            )
    show(runs, args.concurrency)
    for run in runs:
        if run.completed != jobs or not run.once:
            print(f"  !! {run.kind} x {run.processes}: {run.completed}/{jobs} completed once")


if __name__ == "__main__":
    main()
