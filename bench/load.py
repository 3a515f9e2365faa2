"""A closed-loop HTTP/1.1 load generator: ``concurrency`` asyncio tasks, each with its
own keep-alive connection, each sending its next request as soon as the previous one
was answered, until ``total`` requests are done (or a deadline passes).

It speaks just enough HTTP/1.1 itself (request bytes built once, responses framed by
Content-Length) because httpx's pool costs the client ~2 ms of CPU per request at 32
concurrent requests (measured here: ~45 us with this loop), and on a 2-core machine
every cycle the client burns is taken from the server under test. httpx is still used
for setup and for the streamed uploads.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.harness import cpu_seconds

DEADLINE_S = 120.0


@dataclass(frozen=True)
class Call:
    """What every request of a phase sends; ``paths`` are used in turn, each with its
    ``path_headers`` entry (if given) added to the common ``headers``."""

    method: str
    paths: tuple[str, ...]
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    expect: tuple[int, ...] = (200,)
    path_headers: tuple[tuple[tuple[str, str], ...], ...] = ()

    def wire(self, host: str) -> list[bytes]:
        """The request bytes for each path."""
        body = self.body or b""
        requests = []
        for index, path in enumerate(self.paths):
            extra = self.path_headers[index] if self.path_headers else ()
            lines = [f"Host: {host}", *(f"{k}: {v}" for k, v in (*self.headers, *extra))]
            if self.body is not None:
                lines.append(f"Content-Length: {len(body)}")
            head = "\r\n".join(lines)
            requests.append(f"{self.method} {path} HTTP/1.1\r\n{head}\r\n\r\n".encode() + body)
        return requests


@dataclass
class Result:
    name: str
    done: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]

    @property
    def server_cpu_per_request(self) -> float:
        return self.server_cpu / self.done if self.done else float("nan")


class HttpError(Exception):
    pass


def measure(
    name: str,
    base_url: str,
    call: Call,
    *,
    total: int,
    concurrency: int = 32,
    server_pid: int | None = None,
) -> Result:
    """Send ``total`` requests; throughput, latencies and the CPU each side used."""
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    client_before = time.process_time()
    result = asyncio.run(_load(name, base_url, call, total, concurrency))
    result.client_cpu = time.process_time() - client_before
    if server_pid:
        result.server_cpu = cpu_seconds(server_pid) - cpu_before
    return result


async def _load(name: str, base_url: str, call: Call, total: int, concurrency: int) -> Result:
    url = urlsplit(base_url)
    address = (url.hostname or "127.0.0.1", url.port or 80)
    requests = call.wire(url.netloc)
    result = Result(name)
    budget = itertools.islice(itertools.count(), total)
    started = time.monotonic()
    deadline = started + DEADLINE_S
    tasks = [
        _connection(address, requests, call.expect, budget, result, deadline)
        for _ in range(concurrency)
    ]
    await asyncio.gather(*tasks)
    result.elapsed = time.monotonic() - started
    return result


async def _connection(
    address: tuple[str, int],
    requests: list[bytes],
    expect: tuple[int, ...],
    budget: Iterator[int],
    result: Result,
    deadline: float,
) -> None:
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    for index in budget:
        if time.monotonic() > deadline:
            return
        began = time.perf_counter()
        try:
            streams = streams or await asyncio.open_connection(*address)
            status, keep = await _exchange(*streams, requests[index % len(requests)])
            ok, reason = status in expect, f"HTTP {status}"
        except (OSError, asyncio.IncompleteReadError, HttpError) as exc:
            ok, reason, keep = False, repr(exc), False
        result.latencies.append(time.perf_counter() - began)
        result.done += ok
        result.errors += not ok
        result.first_error = result.first_error or ("" if ok else reason)
        if not keep and streams is not None:
            streams[1].close()
            streams = None
    if streams is not None:
        streams[1].close()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool]:
    """Send one request, read its whole response: (status, connection reusable)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, keep = 0, True
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise HttpError("chunked responses are not supported by this load generator")
        elif name == b"connection" and value.strip() == b"close":
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep


def interleaved(
    base_url: str,
    calls: dict[str, Call],
    *,
    total: int,
    rounds: int,
    warmup: int,
    concurrency: int = 32,
    server_pid: int | None = None,
) -> dict[str, list[Result]]:
    """Each phase ``rounds`` times, in turn (A B C A B C ...), so that the machine's
    noise falls on all of them alike; a short unrecorded warm-up of each first."""
    for name, call in calls.items():
        measure(name, base_url, call, total=warmup, concurrency=concurrency)
    results: dict[str, list[Result]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            results[name].append(
                measure(
                    name,
                    base_url,
                    call,
                    total=total,
                    concurrency=concurrency,
                    server_pid=server_pid,
                )
            )
    return results
