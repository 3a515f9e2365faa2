"""Result downloads: one completed job with a 2,000,000-row result (an int64 and a
32-character text column), fetched in every format, and JSON pages near the start and
near the end, against the Parquet download of the same result (the stored bytes, sent
as they are) in the same run. Also the server's peak RSS above idle during the run,
and what each download left in the spool folder.

    python -m bench.results [--quick]
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence

import httpx

from bench import client as fj
from bench.harness import Server, running_server
from bench.memory import reset_peak
from bench.report import header, parse_args, table

FULL = {"rows": 2_000_000, "repeats": 3}
QUICK = {"rows": 100_000, "repeats": 1}
FORMATS = ("parquet", "arrow", "csv", "ndjson")


def seed(http: httpx.Client, rows: int) -> str:
    query = f"select range as i, md5(range::varchar) as s from range({rows})"
    body = {"pipeline": "sql", "params": {"query": query}, "frame": {"columns": {"a": [1]}}}
    job = fj.submit(http, json.dumps(body).encode())
    done = fj.wait_terminal(http, job["id"], timeout=300.0)
    if done["status"] != "completed":
        raise RuntimeError(f"the seed job ended {done['status']}: {done['error']}")
    return str(job["id"])


def download(http: httpx.Client, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    size = 0
    with http.stream("GET", url) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            size += len(chunk)
    return time.perf_counter() - started, size


def measure(server: Server, sizes: dict[str, int]) -> list[tuple[str, float, int, float]]:
    """(what, median seconds, bytes, x the Parquet download) per request kind."""
    with httpx.Client(base_url=server.url, timeout=600.0) as http:
        job_id = seed(http, sizes["rows"])
        last_page = sizes["rows"] - 1000
        urls = {f"{fmt} (whole result)": f"/jobs/{job_id}/result?format={fmt}" for fmt in FORMATS}
        urls["json page, offset 0"] = f"/jobs/{job_id}/result?format=json&limit=1000"
        urls[f"json page, offset {last_page:,}"] = (
            f"/jobs/{job_id}/result?format=json&limit=1000&offset={last_page}"
        )
        timings: dict[str, list[float]] = {name: [] for name in urls}
        sizes_seen: dict[str, int] = {}
        for _ in range(sizes["repeats"]):  # interleaved: each round fetches every kind
            for name, url in urls.items():
                seconds, size = download(http, url)
                timings[name].append(seconds)
                sizes_seen[name] = size
    base = statistics.median(timings["parquet (whole result)"])
    return [
        (name, statistics.median(t), sizes_seen[name], statistics.median(t) / base)
        for name, t in timings.items()
    ]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    sizes = QUICK if args.quick else FULL
    header(f"result downloads: {sizes['rows']:,} rows", args.quick)
    with running_server("cli") as server:
        idle_kb = server.status_kb("VmRSS")
        peak_known = reset_peak(server.pid)
        rows = measure(server, sizes)
        peak_kb = server.status_kb("VmHWM")
        spool = server.data_dir / "data" / "spool"
        left = [p.name for p in spool.rglob("*") if p.is_file()] if spool.exists() else []
    table(
        ("request", "median s", "bytes", "x Parquet download"),
        [(name, f"{s:.3f}", f"{size:,}", f"{ratio:.2f}") for name, s, size, ratio in rows],
    )
    print()
    rise = f"+{(peak_kb - idle_kb) / 1024:,.0f} MiB" if peak_known else "unknown (no clear_refs)"
    print(f"  server RSS: idle {idle_kb / 1024:,.0f} MiB, peak during the downloads {rise}")
    print(f"  files left in the spool folder afterwards: {len(left)}")


if __name__ == "__main__":
    main()
