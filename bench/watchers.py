"""Watchers: N clients follow one job, over server-sent events or with long-polls
(GET /jobs/{id}?wait= with If-None-Match, asked again after every answer), while
another client polls GET /jobs/{id} of a different job; then the watched job is
cancelled.

Two scenarios, each on a server of its own:
- idle: the watched job stays queued (API-only server, FRAMEJOBS_WORKERS=0);
- busy: the watched job runs and reports progress, so its row changes every
  progress interval (4 times a second; one worker slot, bench/_busy_pipeline.py).

Measures what the watching costs the rest of the API (the other client's poll
latency, against the same polls with no watchers, in the same run), the server's
CPU while the watchers wait, and how long it takes until every watcher has seen the
job end.

    python -m bench.watchers [--quick]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx

from bench import client as fj
from bench.harness import Server, running_server
from bench.report import header, ms, parse_args, table
from bench.submit import job_body

FULL = {"watchers": (0, 100, 400, 800), "busy": (0, 100, 200), "polls": 200, "idle_s": 5.0}
QUICK = {"watchers": (0, 20), "busy": (0, 20), "polls": 20, "idle_s": 1.0}
# Fewer watchers of a busy job: each of its changes (4 a second) answers every
# long-poll, and this one client process cannot re-ask 800 of them that often.
_SETTLE_S = 1.0  # lets the last watchers' requests reach the server before measuring
_TERMINAL = {"completed", "failed", "cancelled"}
Follower = Callable[[httpx.AsyncClient, str, asyncio.Event], Awaitable[float]]


async def _follow(http: httpx.AsyncClient, job_id: str, started: asyncio.Event) -> float:
    """Follow the job's event stream to its end; the time the stream ended."""
    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        started.set()
        async for _ in response.aiter_lines():
            pass
    return time.monotonic()


async def _get(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> httpx.Response:
    """GET, again on a kept-alive connection the server closed meanwhile (uvicorn closes
    idle ones after 5 s, and one client process with 800 connections is slow to reuse
    them), as HTTP clients do for idempotent requests."""
    for _ in range(3):
        try:
            return await http.get(url, headers=headers)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            continue
    return await http.get(url, headers=headers)


async def _long_poll(http: httpx.AsyncClient, job_id: str, started: asyncio.Event) -> float:
    """Long-poll the job until it ends, as a client loop would; the time it saw the end."""
    response = await _get(http, f"/jobs/{job_id}", {})
    started.set()
    while response.json()["status"] not in _TERMINAL:
        tag = response.headers["etag"]
        answer = await _get(http, f"/jobs/{job_id}?wait=120", {"If-None-Match": tag})
        answer.raise_for_status()
        if answer.status_code == 200:
            response = answer
    return time.monotonic()


_FOLLOWERS: dict[str, Follower] = {"event streams": _follow, "long-polls": _long_poll}


async def _polls(http: httpx.AsyncClient, job_id: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        begun = time.monotonic()
        (await http.get(f"/jobs/{job_id}")).raise_for_status()
        latencies.append(time.monotonic() - begun)
    return latencies


async def _submit(http: httpx.AsyncClient, body: bytes) -> str:
    json_type = {"Content-Type": "application/json"}
    response = await http.post("/jobs", content=body, headers=json_type)
    response.raise_for_status()
    return str(response.json()["id"])


async def _running(http: httpx.AsyncClient, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while (await http.get(f"/jobs/{job_id}")).json()["status"] != "running":
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not start")
        await asyncio.sleep(0.05)


async def _round(
    server: Server, busy: bool, kind: str, watchers: int, sizes: dict[str, object]
) -> list[object]:
    limits = httpx.Limits(max_connections=watchers + 10)
    async with httpx.AsyncClient(base_url=server.url, timeout=180, limits=limits) as http:
        other = await _submit(http, job_body("sql", 10))
        watched = await _submit(http, _BUSY if busy else job_body("sql", 10))
        if busy:
            await _running(http, watched)
        ready = [asyncio.Event() for _ in range(watchers)]
        follow = _FOLLOWERS[kind]
        streams = [asyncio.create_task(follow(http, watched, r)) for r in ready]
        await asyncio.gather(*(r.wait() for r in ready))
        await asyncio.sleep(_SETTLE_S)
        cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
        await asyncio.sleep(float(sizes["idle_s"]))  # type: ignore[arg-type]
        idle_cores = (server.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
        latencies = await _polls(http, other, int(sizes["polls"]))  # type: ignore[call-overload]
        cancelled, cpu_at_cancel = time.monotonic(), server.cpu_seconds()
        cancel = await http.post(f"/jobs/{watched}/cancel")
        if cancel.status_code != 202:
            job = (await http.get(f"/jobs/{watched}")).text
            raise RuntimeError(f"cancel answered {cancel.status_code}; the job: {job}")
        ended = await asyncio.gather(*streams)
        end_cpu = server.cpu_seconds() - cpu_at_cancel
    last = max(ended) - cancelled if ended else float("nan")
    cuts = sorted(latencies)
    p99 = cuts[min(len(cuts) - 1, int(len(cuts) * 0.99))]
    p50 = ms(statistics.median(latencies))
    scenario = "busy" if busy else "idle"
    return [scenario, kind, watchers, p50, ms(p99), idle_cores, ms(last), end_cpu]


_BUSY = json.dumps(
    {"pipeline": "busy", "frame": {"columns": {"x": [1]}}, "params": {"seconds": 10**9}}
).encode()


def _scenario(busy: bool, sizes: dict[str, object]) -> list[list[object]]:
    env = {"FRAMEJOBS_PIPELINES": "bench._busy_pipeline"} if busy else None
    rows = []
    with running_server("cli", workers=1 if busy else 0, env=env) as server:
        with httpx.Client(base_url=server.url, timeout=30) as warm:
            fj.submit(warm, job_body("sql", 10))
        for kind in _FOLLOWERS:
            for watchers in sizes["busy" if busy else "watchers"]:  # type: ignore[attr-defined]
                rows.append(asyncio.run(_round(server, busy, kind, watchers, sizes)))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    sizes = QUICK if args.quick else FULL
    header("watchers: N event streams or long-polls on one job, another client polling", args.quick)
    rows = _scenario(False, sizes) + _scenario(True, sizes)
    table(
        [
            "watched job",
            "watchers",
            "how many",
            "other client's poll p50 ms",
            "p99 ms",
            "server cores while watched",
            "cancel -> last one saw it, ms",
            "server CPU s meanwhile",
        ],
        rows,
    )
    base = {(row[0], row[1]): row[3] for row in rows if row[2] == 0}
    for row in rows:
        if row[2]:
            ratio = row[3] / base[row[0], row[1]]  # type: ignore[operator]
            print(f"  {row[0]} job, {row[2]} {row[1]}: poll p50 {ratio:.1f}x the p50 with none")


if __name__ == "__main__":
    main()
