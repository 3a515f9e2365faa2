"""Memory: peak RSS of the server process while a 1 GB CSV (userId,amount) is uploaded
as multipart and validated (billing_rollup), streamed from the file by httpx.

The server runs with FRAMEJOBS_WORKERS=0, so the figure is the upload, validation and
storage of the frame, not the job's execution. Idle RSS is read after one small job
was submitted (so the code paths are loaded); the peak is VmHWM after resetting it
(/proc/<pid>/clear_refs), checked against VmRSS sampled every 20 ms.

    python -m bench.memory [--quick]
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx

from bench import client as fj
from bench.harness import Server, running_server, temp_dir
from bench.report import header, parse_args, table, verdict
from bench.submit import job_body

TARGET_MB = 300.0
FULL = {"bytes": 1_000_000_000}
QUICK = {"bytes": 20_000_000}
BYTES_PER_ROW = 14.3  # about, for the rows below; the file size is reported exactly
SAMPLE_S = 0.02


def make_csv(path: Path, size: int) -> int:
    """Write about ``size`` bytes of CSV (DuckDB streams it to disk); returns rows."""
    rows = int(size / BYTES_PER_ROW)
    with duckdb.connect(":memory:") as db:
        db.execute("set enable_progress_bar=false")
        db.execute(
            f"""copy (select (hash(i) % 1000000)::bigint as "userId",
                             (hash(i + {rows}) % 1000000) / 100.0 as amount
                      from range({rows}) t(i)) to '{path}' (header, delimiter ',')"""
        )
    return rows


class RssSampler(threading.Thread):
    """Samples VmRSS of a process until stopped; keeps the maximum."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak_kb = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_S):
            try:
                rss = self.server.status_kb("VmRSS")
            except (OSError, KeyError):
                return
            self.peak_kb = max(self.peak_kb, rss)
            self.samples += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def upload(url: str, source: Path) -> tuple[float, dict[str, Any]]:
    spec = json.dumps({"pipeline": "billing_rollup"})
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=900) as http, source.open("rb") as handle:
        files = {"frame": (source.name, handle, "text/csv")}
        response = http.post("/jobs", data={"spec": spec}, files=files)
    if response.status_code != 202:
        raise RuntimeError(f"submit answered {response.status_code}: {response.text[:500]}")
    return time.monotonic() - started, response.json()


@dataclass
class Memory:
    idle_kb: int
    sampled_kb: int
    hwm_kb: int | None
    seconds: float
    rows: int

    @property
    def peak_kb(self) -> int:
        return max(self.sampled_kb, self.hwm_kb or 0)


def measure(source: Path) -> Memory:
    with running_server("cli", workers=0) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            fj.submit(http, job_body("billing_rollup", 100))
        time.sleep(0.5)
        idle_kb = server.status_kb("VmRSS")
        hwm_reset = reset_peak(server.pid)
        sampler = RssSampler(server)
        sampler.start()
        try:
            seconds, job = upload(server.url, source)
        finally:
            sampler.stop()
        hwm_kb = server.status_kb("VmHWM") if hwm_reset else None
    return Memory(idle_kb, sampler.peak_kb, hwm_kb, seconds, int(job["input"]["rows"]))


def show(source: Path, m: Memory) -> None:
    idle, peak = m.idle_kb / 1024, m.peak_kb / 1024
    size = source.stat().st_size
    table(
        ("measure", "value"),
        [
            ("CSV file, MB (rows)", f"{size / 1e6:,.0f} ({m.rows:,})"),
            ("upload + validate + store (submit request), s", m.seconds),
            ("throughput, MB/s of CSV", size / 1e6 / m.seconds),
            ("server RSS idle, MiB", idle),
            ("server RSS peak, MiB (max of VmHWM and samples)", peak),
            ("  VmHWM after reset / sampled max, MiB", f"{_mib(m.hwm_kb)} / {_mib(m.sampled_kb)}"),
            ("peak - idle, MiB", peak - idle),
        ],
    )
    outcome = verdict(peak - idle, TARGET_MB, at_most=True)
    print(f"\n  peak above idle: {peak - idle:,.0f} MiB  {outcome}")


def _mib(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:,.0f}"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    size = (QUICK if args.quick else FULL)["bytes"]
    header(f"memory: {size / 1e9:g} GB CSV upload, server with FRAMEJOBS_WORKERS=0", args.quick)
    with temp_dir() as tmp:
        source = tmp / "frame.csv"
        make_csv(source, size)
        show(source, measure(source))


if __name__ == "__main__":
    main()
