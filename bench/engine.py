"""Engine overhead: one ``billing_rollup`` job over 10,000,000 rows (userId int64,
amount float64), submitted as a multipart Parquet upload to ``framejobs serve``,
against the same aggregation run by bare DuckDB on the same Parquet file.

Service and bare runs alternate (bare, job, bare, job, bare); medians are reported.
Bare DuckDB runs in this process with the server's DuckDB settings (threads = cores,
memory_limit 1GB) and writes its result as Parquet, as the service does.

"accepted -> completed" is the engine's part of a job: from the 202 (the frame is
stored and committed then) to the result stored with the final state. The submit
itself (upload, validation, storage) is measured too, but bare DuckDB does none of it.

    python -m bench.engine [--quick]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb
import httpx

from bench import client as fj
from bench.harness import running_server, temp_dir
from bench.report import header, parse_args, table, verdict

TARGET_RATIO = 1.15
FULL = {"rows": 10_000_000, "users": 100_000, "repeats": 2}
QUICK = {"rows": 200_000, "users": 1_000, "repeats": 1}
JOB_TIMEOUT_S = 600.0
BARE_QUERY = (
    'select "userId" as user_id, sum(amount) as total, count(*) as n '
    "from read_parquet('{source}') group by user_id order by user_id"
)


def make_parquet(path: Path, rows: int, users: int) -> None:
    with duckdb.connect(":memory:") as db:
        db.execute("set enable_progress_bar=false")
        db.execute(
            f"""copy (select (hash(i) % {users})::bigint as "userId",
                             (hash(i + {rows}) % 1000000) / 100.0 as amount
                      from range({rows}) t(i)) to '{path}' (format parquet)"""
        )


def bare_duckdb(source: Path, dest: Path) -> float:
    config = {"threads": _cores(), "memory_limit": "1GB"}
    started = time.monotonic()
    with duckdb.connect(":memory:", config=config) as db:
        db.execute(f"copy ({BARE_QUERY.format(source=source)}) to '{dest}' (format parquet)")
    return time.monotonic() - started


def _cores() -> int:
    return os.cpu_count() or 1


def run_job(http: httpx.Client, source: Path) -> dict[str, float]:
    """Submit the file as a streamed multipart upload; wait for the job to end."""
    spec = json.dumps({"pipeline": "billing_rollup"})
    started = time.monotonic()
    with source.open("rb") as handle:
        files = {"frame": (source.name, handle, "application/vnd.apache.parquet")}
        response = http.post("/jobs", data={"spec": spec}, files=files)
    submitted = time.monotonic()
    accepted_at = dt.datetime.now(dt.UTC)  # the server's clock too: the same host
    if response.status_code != 202:
        raise RuntimeError(f"submit answered {response.status_code}: {response.text[:500]}")
    job = fj.wait_terminal(http, response.json()["id"], timeout=JOB_TIMEOUT_S)
    done = time.monotonic()
    if job["status"] != "completed":
        raise RuntimeError(f"the job ended {job['status']}: {job['error']}")
    created, started_at, finished = (
        dt.datetime.fromisoformat(job[k]) for k in ("created_at", "started_at", "finished_at")
    )
    return {
        "submit": submitted - started,
        "wait": (started_at - created).total_seconds(),
        "run": (finished - started_at).total_seconds(),
        "accepted": (finished - accepted_at).total_seconds(),
        "total": done - started,
        "rows": float(job["input"]["rows"]),
    }


def measure(sizes: dict[str, int], tmp: Path) -> tuple[list[float], list[dict[str, float]]]:
    source = tmp / "frame.parquet"
    make_parquet(source, sizes["rows"], sizes["users"])
    print(f"   input: {sizes['rows']:,} rows, {source.stat().st_size / 1e6:,.0f} MB Parquet")
    bare: list[float] = [bare_duckdb(source, tmp / "bare.parquet")]
    jobs: list[dict[str, float]] = []
    with running_server("cli") as server, httpx.Client(base_url=server.url, timeout=600) as http:
        for _ in range(sizes["repeats"]):
            jobs.append(run_job(http, source))
            bare.append(bare_duckdb(source, tmp / "bare.parquet"))
    return bare, jobs


def show(bare: list[float], jobs: list[dict[str, float]]) -> None:
    base = statistics.median(bare)
    keys = ("submit", "wait", "run", "accepted", "total")
    med = {k: statistics.median(j[k] for j in jobs) for k in keys}
    queued = med["wait"] + med["run"]
    rows = [
        ("bare DuckDB: read_parquet + group by + write Parquet", base, 1.0),
        (
            "service: submit request (upload + validate + store)",
            med["submit"],
            med["submit"] / base,
        ),
        ("  created_at -> started_at (store input, claim)", med["wait"], med["wait"] / base),
        ("  started_at -> finished_at (run, store result)", med["run"], med["run"] / base),
        ("service: queued -> completed (created -> finished)", queued, queued / base),
        (
            "service: accepted -> completed (202 -> finished: claim, run, store result)",
            med["accepted"],
            med["accepted"] / base,
        ),
        ("service: total, upload start -> completed seen", med["total"], med["total"] / base),
    ]
    print(f"   medians of {len(bare)} bare and {len(jobs)} service run(s)")
    totals = _seconds(j["total"] for j in jobs)
    print(f"   bare runs, s: {_seconds(bare)}; service totals, s: {totals}")
    table(("phase", "seconds", "x bare"), rows)
    print()
    print(f"  queued -> completed: {queued / base:.2f}x bare  {_verdict(queued / base)}")
    accepted = med["accepted"] / base
    print(f"  accepted -> completed: {accepted:.2f}x bare  {_verdict(accepted)}")
    print(
        f"  total end to end:    {med['total'] / base:.2f}x bare  {_verdict(med['total'] / base)}"
    )


def _seconds(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def _verdict(ratio: float) -> str:
    return verdict(ratio, TARGET_RATIO, at_most=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    sizes = QUICK if args.quick else FULL
    header(f"engine overhead: billing_rollup over {sizes['rows']:,} rows", args.quick)
    with temp_dir() as tmp:
        bare, jobs = measure(sizes, tmp)
    show(bare, jobs)


if __name__ == "__main__":
    main()
