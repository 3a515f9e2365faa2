"""Poll throughput: GET /jobs/{id} at 32 concurrent clients, the full body (200) and
the revalidation path (If-None-Match with the job's ETag: 304), against GET /bare
(a small constant JSON) on the same server process.

The polled jobs (32, rotated) have completed, so the bodies are the largest a poll
returns; the default in-process workers ran them and are idle during the phases.

    python -m bench.poll [--quick]
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from bench import client as fj
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
from bench.submit import job_body

TARGET_RATE = 2000.0
JOBS = 32
FULL = {"total": 5000, "rounds": 3, "warmup": 300}
QUICK = {"total": 300, "rounds": 1, "warmup": 30}


def seed(url: str) -> list[tuple[str, str]]:
    """(job id, ETag) of ``JOBS`` completed jobs."""
    with httpx.Client(base_url=url, timeout=30.0) as http:
        ids = [fj.submit(http, job_body("sql", 10))["id"] for _ in range(JOBS)]
        for job_id in ids:
            fj.wait_terminal(http, job_id, timeout=60.0)
        return [(job_id, http.get(f"/jobs/{job_id}").headers["etag"]) for job_id in ids]


def calls(jobs: list[tuple[str, str]]) -> dict[str, Call]:
    paths = tuple(f"/jobs/{job_id}" for job_id, _ in jobs)
    etags = tuple((("If-None-Match", tag),) for _, tag in jobs)
    return {
        "GET /bare (baseline)": Call("GET", ("/bare",)),
        "GET /jobs/{id} 200": Call("GET", paths),
        "GET /jobs/{id} 304": Call("GET", paths, expect=(304,), path_headers=etags),
    }


def show(results: dict[str, list[Result]]) -> None:
    names = list(results)
    baseline = results[names[0]]
    rows = [pooled(n, results[n]) for n in names]
    table(LOAD_HEADERS, load_rows(rows))
    print_errors(rows)
    print()
    for name in names[1:]:
        ratio = median_ratio(results[name], baseline)
        print(f"  {name}: {ratio:.2f}x the bare GET throughput")
    full = pooled(names[1], results[names[1]])
    print(f"  {names[1]}: {full.rate:,.0f} req/s  {verdict(full.rate, TARGET_RATE)}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    sizes = QUICK if args.quick else FULL
    header("poll: GET /jobs/{id}, 32 concurrent clients", args.quick)
    print(
        f"   {sizes['rounds']} interleaved round(s) of {sizes['total']} requests per phase "
        f"over {JOBS} completed jobs; ratio = median of the per-round ratios"
    )
    with running_server("bare") as server:
        jobs = seed(server.url)
        results = interleaved(
            server.url,
            calls(jobs),
            total=sizes["total"],
            rounds=sizes["rounds"],
            warmup=sizes["warmup"],
            server_pid=server.pid,
        )
    show(results)


if __name__ == "__main__":
    main()
