"""Webhook benchmark: end-to-callback latency and delivery throughput.

Runs real ``framejobs serve`` processes on the embedded default (a SQLite file in a
temporary directory, unless --database-url says otherwise) and a receiver process on
127.0.0.1 (``bench/_webhook_receiver.py``) that answers 200 at once.

latency     N trivial ``sql`` jobs with a webhook, submitted by a few client threads;
            per job: the receiver's arrival time minus the job's ``finished_at`` (the
            moment its final state was written, read from the event's ``data``).
throughput  N jobs run with the dispatcher off, the server is stopped and started
            again with it on, so all N deliveries are due at once; deliveries/s over
            first-to-last arrival (and from the new process's start, for reference).

    python -m bench.webhooks            # 1,000 jobs per scenario
    python -m bench.webhooks --quick    # 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook

SECRET = "whsec_YmVuY2htYXJrLXNlY3JldC1ub3QtZm9yLXVzZQ=="
QUERY = "select count(*) as n, sum(a) as total from input"
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class ReceiverProcess:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench._webhook_receiver"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def count(self) -> int:
        return int(self.client.get("/count").json()["count"])

    def results(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.client.get("/results").json()
        return items

    def clear(self) -> None:
        self.client.delete("/results")

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


@dataclass
class ServerProcess:
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    spawned: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **extra: str) -> ServerProcess:
        self.port = _free_port()
        port = str(self.port)
        command = [sys.executable, "-m", "service.cli", "serve", "--port", port, "--migrate"]
        with self.log_path.open("ab") as log:
            self.spawned = time.time()
            self.process = subprocess.Popen(
                command, cwd=ROOT, env={**self.env, **extra}, stdout=log, stderr=log
            )
        _wait(self._ready, 60, "the server to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"server exited with {self.process.returncode}:\n{tail}")
        try:
            return httpx.get(self.base_url + "/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _submit_all(base_url: str, hook_url: str, n: int, clients: int) -> list[str]:
    def one_client(k: int) -> list[str]:
        ids = []
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for i in range(k, n, clients):
                body = {
                    "pipeline": "sql",
                    "params": {"query": QUERY},
                    "frame": {"columns": {"a": [i, i + 1, i + 2]}},
                    "webhook": {"url": hook_url},
                }
                response = client.post("/jobs", json=body)
                if response.status_code != 202:
                    raise SystemExit(f"submit failed: {response.status_code} {response.text}")
                ids.append(response.json()["id"])
        return ids

    with ThreadPoolExecutor(clients) as pool:
        return [job_id for ids in pool.map(one_client, range(clients)) for job_id in ids]


def _all_jobs_done(base_url: str) -> bool:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for status in ("queued", "running"):
            page = client.get("/jobs", params={"status": status, "page_size": 1}).json()
            if page["items"]:
                return False
    return True


@dataclass
class Checked:
    received: int
    distinct: int
    verified: int
    jobs_matched: bool


def _check(items: list[dict[str, Any]], ids: list[str]) -> Checked:
    hook = Webhook(SECRET)
    verified = 0
    for item in items:
        try:
            hook.verify(item["body"], item["headers"])
            verified += 1
        except Exception:  # counted, not raised: the table shows it
            pass
    job_ids = sorted(json.loads(item["body"])["data"]["id"] for item in items)
    return Checked(
        received=len(items),
        distinct=len({item["headers"]["webhook-id"] for item in items}),
        verified=verified,
        jobs_matched=job_ids == sorted(ids),
    )


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency(
    env: dict[str, str], work: Path, receiver: ReceiverProcess, args: Any
) -> dict[str, Any]:
    server = ServerProcess(env, work / "latency.log").start()
    try:
        started = time.monotonic()
        ids = _submit_all(server.base_url, receiver.url, args.jobs, args.clients)
        _wait(lambda: receiver.count() >= len(ids), 300, f"{len(ids)} webhooks", 0.1)
        elapsed = time.monotonic() - started
        _wait(lambda: _all_jobs_done(server.base_url), 60, "the jobs to settle", 0.1)
    finally:
        server.stop()
    items = receiver.results()
    receiver.clear()
    lags = [
        (
            item["arrived"]
            - datetime.fromisoformat(json.loads(item["body"])["data"]["finished_at"]).timestamp()
        )
        * 1000
        for item in items
    ]
    return {
        "checked": _check(items, ids),
        "p50": _percentile(lags, 50),
        "p90": _percentile(lags, 90),
        "p99": _percentile(lags, 99),
        "max": max(lags),
        "mean": statistics.fmean(lags),
        "jobs_per_s": len(ids) / elapsed,
    }


def throughput(
    env: dict[str, str], work: Path, receiver: ReceiverProcess, args: Any
) -> dict[str, Any]:
    quiet = ServerProcess(env, work / "throughput-run.log").start(
        FRAMEJOBS_WEBHOOK_DISPATCH="false"
    )
    try:
        ids = _submit_all(quiet.base_url, receiver.url, args.jobs, args.clients)
        _wait(lambda: _all_jobs_done(quiet.base_url), 300, "the jobs to finish", 0.1)
    finally:
        quiet.stop()
    if receiver.count():
        raise SystemExit("the receiver got webhooks while the dispatcher was off")
    server = ServerProcess(env, work / "throughput-send.log")
    try:
        server.start()
        _wait(lambda: receiver.count() >= len(ids), 300, f"{len(ids)} webhooks", 0.05)
    finally:
        server.stop()
    items = receiver.results()
    receiver.clear()
    arrivals = sorted(item["arrived"] for item in items)
    window = arrivals[-1] - arrivals[0]
    return {
        "checked": _check(items, ids),
        "rate": (len(arrivals) - 1) / window if window > 0 else float("inf"),
        "window_s": window,
        "from_spawn_s": arrivals[-1] - server.spawned,
        "first_after_spawn_s": arrivals[0] - server.spawned,
    }


def _env(work: Path, args: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEJOBS_")}
    env.update(
        FRAMEJOBS_DATA_DIR=str(work / "data"),
        FRAMEJOBS_DATABASE_URL=args.database_url or f"sqlite:///{work / 'data' / 'framejobs.db'}",
        FRAMEJOBS_WEBHOOK_SECRETS=SECRET,
        FRAMEJOBS_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8",
        FRAMEJOBS_LOG_LEVEL="warning",
    )
    if args.workers is not None:
        env["FRAMEJOBS_WORKERS"] = str(args.workers)
    return env


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [f"{'measure'.ljust(width)}  value", f"{'-' * width}  {'-' * 24}"]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def _check_rows(label: str, checked: Checked, n: int) -> list[tuple[str, str]]:
    ok = checked.received == checked.distinct == checked.verified == n and checked.jobs_matched
    return [
        (
            f"{label}: received / distinct ids / verified",
            f"{checked.received} / {checked.distinct} / {checked.verified}"
            + ("" if ok else "  << MISMATCH"),
        )
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 jobs instead of 1,000")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per scenario")
    parser.add_argument("--clients", type=int, default=8, help="concurrent submitting clients")
    parser.add_argument(
        "--workers", type=int, default=None, help="FRAMEJOBS_WORKERS (default: the service's)"
    )
    parser.add_argument(
        "--database-url", default=None, help="an empty database (default: a fresh SQLite file)"
    )
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (200 if args.quick else 1000)

    receiver = ReceiverProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="fj-bench-webhooks-") as tmp:
            work = Path(tmp)
            lat = latency(_env(work / "latency", args), work, receiver, args)
            thr = throughput(_env(work / "throughput", args), work, receiver, args)
    finally:
        receiver.stop()

    database = "PostgreSQL" if args.database_url else "SQLite (embedded default)"
    print(
        f"webhooks: {args.jobs} jobs per scenario, {database}, {args.clients} clients, "
        f"workers={args.workers or os.cpu_count()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print()
    rows = [
        ("latency finished_at -> received, p50", f"{lat['p50']:.1f} ms (target < 100 ms)"),
        ("latency p90", f"{lat['p90']:.1f} ms"),
        ("latency p99", f"{lat['p99']:.1f} ms"),
        ("latency max", f"{lat['max']:.1f} ms"),
        ("jobs submitted+run+delivered per s", f"{lat['jobs_per_s']:.0f}"),
        *_check_rows("latency", lat["checked"], args.jobs),
        (f"{args.jobs} due at once: deliveries/s", f"{thr['rate']:.0f}"),
        ("  first -> last arrival", f"{thr['window_s']:.2f} s"),
        (
            "  process start -> first / last arrival",
            f"{thr['first_after_spawn_s']:.2f} s / {thr['from_spawn_s']:.2f} s",
        ),
        *_check_rows("throughput", thr["checked"], args.jobs),
    ]
    print(_table(rows))
    bad = [
        c
        for c in (lat["checked"], thr["checked"])
        if c.received != c.distinct or c.verified != c.received
    ]
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
