"""Watchers: N clients follow one queued job over server-sent events while another
client polls GET /jobs/{id} of a different job; then the watched job is cancelled.

Measures what the watching costs the rest of the API (the other client's poll
latency, against the same polls with no watchers, in the same run), the server's
CPU while the watchers wait, and how long it takes until every watcher has seen the
job end. API-only server (FRAMEJOBS_WORKERS=0): the job stays queued until cancelled.

    python -m bench.watchers [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence

import httpx

from bench import client as fj
from bench.harness import Server, running_server
from bench.report import header, ms, parse_args, table
from bench.submit import job_body

FULL = {"watchers": (0, 100, 400, 800), "polls": 200, "idle_s": 5.0}
QUICK = {"watchers": (0, 20), "polls": 20, "idle_s": 1.0}


async def _follow(http: httpx.AsyncClient, job_id: str, started: asyncio.Event) -> float:
    """Follow the job's event stream to its end; the time the stream ended."""
    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        started.set()
        async for _ in response.aiter_lines():
            pass
    return time.monotonic()


async def _polls(http: httpx.AsyncClient, job_id: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        begun = time.monotonic()
        (await http.get(f"/jobs/{job_id}")).raise_for_status()
        latencies.append(time.monotonic() - begun)
    return latencies


async def _submit(http: httpx.AsyncClient) -> str:
    json_type = {"Content-Type": "application/json"}
    response = await http.post("/jobs", content=job_body("sql", 10), headers=json_type)
    response.raise_for_status()
    return str(response.json()["id"])


async def _round(server: Server, watchers: int, polls: int, idle_s: float) -> list[object]:
    limits = httpx.Limits(max_connections=watchers + 10)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as http:
        watched, other = [await _submit(http) for _ in range(2)]
        ready = [asyncio.Event() for _ in range(watchers)]
        streams = [asyncio.create_task(_follow(http, watched, r)) for r in ready]
        await asyncio.gather(*(r.wait() for r in ready))
        cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
        await asyncio.sleep(idle_s)
        idle_cores = (server.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
        latencies = await _polls(http, other, polls)
        cancelled, cpu_at_cancel = time.monotonic(), server.cpu_seconds()
        (await http.post(f"/jobs/{watched}/cancel")).raise_for_status()
        ended = await asyncio.gather(*streams)
        end_cpu = server.cpu_seconds() - cpu_at_cancel
    last = max(ended) - cancelled if ended else float("nan")
    cuts = sorted(latencies)
    p99 = cuts[min(len(cuts) - 1, int(len(cuts) * 0.99))]
    return [watchers, ms(statistics.median(latencies)), ms(p99), idle_cores, ms(last), end_cpu]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    sizes = QUICK if args.quick else FULL
    header("watchers: N event streams on one job, another client polling", args.quick)
    rows = []
    with running_server("cli", workers=0) as server:
        with httpx.Client(base_url=server.url, timeout=30) as warm:
            fj.submit(warm, job_body("sql", 10))
        for watchers in sizes["watchers"]:
            rows.append(asyncio.run(_round(server, watchers, sizes["polls"], sizes["idle_s"])))
    table(
        [
            "event streams",
            "other client's poll p50 ms",
            "p99 ms",
            "server cores while idle",
            "cancel -> last stream ended, ms",
            "server CPU s meanwhile",
        ],
        rows,
    )
    base = rows[0][1]
    for row in rows[1:]:
        print(f"  {row[0]} streams: poll p50 {row[1] / base:.1f}x the p50 with none")  # type: ignore[operator]


if __name__ == "__main__":
    main()
