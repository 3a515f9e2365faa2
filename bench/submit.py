"""Submit throughput: POST /jobs with a 100-row JSON frame at 32 concurrent clients,
against POST /bare (parses the same body, nothing else) on the same server process,
and against the floor of a durable submit (POST /floor and /floor-group: Arrow,
Parquet and one SQLite transaction, nothing else; bench/floor_app.py).

The main run has no in-process workers (FRAMEJOBS_WORKERS=0), so job execution does
not compete with the API for the 2 cores; a second, shorter run keeps the default
workers, which then run the submitted jobs meanwhile.

    python -m bench.submit [--quick]
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from bench.harness import running_server
from bench.load import Call, Result, interleaved
from bench.report import (
    LOAD_HEADERS,
    header,
    load_rows,
    median_ratio,
    parse_args,
    pooled,
    print_errors,
    table,
    verdict,
)

TARGET_RATIO = 0.5
FLOOR = "POST /floor (durable floor)"
JSON = (("Content-Type", "application/json"),)
FULL = {"total": 2000, "rounds": 3, "warmup": 200, "rows": 100}
QUICK = {"total": 150, "rounds": 1, "warmup": 20, "rows": 100}


def job_body(pipeline: str, rows: int) -> bytes:
    """A submit body with ``rows`` rows of (userId int, amount float)."""
    spec: dict[str, object] = {
        "pipeline": pipeline,
        "frame": {
            "columns": {
                "userId": [i % 17 for i in range(rows)],
                "amount": [round(i * 1.25, 2) for i in range(rows)],
            }
        },
    }
    if pipeline == "sql":
        spec["params"] = {"query": "select count(*) from input"}
    return json.dumps(spec).encode()


def calls(rows: int) -> dict[str, Call]:
    sql, rollup = job_body("sql", rows), job_body("billing_rollup", rows)
    return {
        "POST /bare (baseline)": Call("POST", ("/bare",), sql, JSON),
        FLOOR: Call("POST", ("/floor",), sql, JSON, (202,)),
        "POST /floor-group (floor, group commit)": Call(
            "POST", ("/floor-group",), sql, JSON, (202,)
        ),
        "POST /jobs sql": Call("POST", ("/jobs",), sql, JSON, (202,)),
        "POST /jobs billing_rollup": Call("POST", ("/jobs",), rollup, JSON, (202,)),
    }


def run(workers: int | None, sizes: dict[str, int]) -> dict[str, list[Result]]:
    with running_server("bare", workers=workers) as server:
        return interleaved(
            server.url,
            calls(sizes["rows"]),
            total=sizes["total"],
            rounds=sizes["rounds"],
            warmup=sizes["warmup"],
            server_pid=server.pid,
        )


def show(title: str, results: dict[str, list[Result]]) -> None:
    names = list(results)
    baseline = results[names[0]]
    print(f"\n  {title}")
    rows = [pooled(n, results[n]) for n in names]
    table(LOAD_HEADERS, load_rows(rows))
    print_errors(rows)
    print()
    for name in names[1:]:
        ratio = median_ratio(results[name], baseline)
        line = f"  {name}: {ratio:.2f}x the bare throughput  {verdict(ratio, TARGET_RATIO)}"
        if name.startswith("POST /jobs"):
            line += f"; {median_ratio(results[name], results[FLOOR]):.2f}x the floor's"
        print(line)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    sizes = QUICK if args.quick else FULL
    header("submit: POST /jobs, 100-row JSON frame, 32 concurrent clients", args.quick)
    print(
        f"   {sizes['rounds']} interleaved round(s) of {sizes['total']} requests per phase; "
        "req/s and latencies over all rounds; ratio = median of the per-round ratios"
    )
    show("API only (FRAMEJOBS_WORKERS=0: no job runs meanwhile)", run(0, sizes))
    once = {**sizes, "rounds": 1}
    show("with the default in-process workers (2), running the jobs meanwhile", run(None, once))


if __name__ == "__main__":
    main()
