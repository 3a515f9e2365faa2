"""Printing figures: plain-text tables, and the shared command-line options."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
from collections.abc import Sequence

from bench.load import Result


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    return parser.parse_args(argv)


def header(title: str, quick: bool) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = " [--quick: smoke-test sizes, figures not meaningful]" if quick else ""
    print(f"\n== {title}{mode}")
    print(f"   {now}; {os.cpu_count()} cores; Python {platform.python_version()}; {_load()}")


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load n/a"
    return f"load average {one:.1f} (1 min) {five:.1f} (5 min) at start"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [_line(cells[0], widths), "  ".join("-" * w for w in widths)]
    lines += [_line(row, widths) for row in cells[1:]]
    print("\n".join("  " + line for line in lines))


def _line(row: Sequence[str], widths: Sequence[int]) -> str:
    first = row[0].ljust(widths[0])
    rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
    return "  ".join([first, *rest])


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return str(value)


def ms(seconds: float) -> float:
    return seconds * 1000


def verdict(value: float, target: float, *, at_most: bool = False) -> str:
    met = value <= target if at_most else value >= target
    sign = "<=" if at_most else ">="
    return f"{'MET' if met else 'NOT MET'} (target {sign} {target:g})"


def pooled(name: str, results: Sequence[Result]) -> Result:
    """Several rounds of one phase as one result: counts, times and latencies added."""
    merged = Result(name)
    for r in results:
        merged.done += r.done
        merged.errors += r.errors
        merged.elapsed += r.elapsed
        merged.latencies.extend(r.latencies)
        merged.server_cpu += r.server_cpu
        merged.client_cpu += r.client_cpu
        merged.first_error = merged.first_error or r.first_error
    return merged


def median_ratio(numerators: Sequence[Result], denominators: Sequence[Result]) -> float:
    """Median over rounds of (rate / baseline rate in the same round)."""
    pairs = zip(numerators, denominators, strict=True)
    return statistics.median(n.rate / d.rate for n, d in pairs if d.rate)


def load_rows(results: Sequence[Result]) -> list[list[object]]:
    """One row per phase: throughput, latencies, CPU per request on each side."""
    return [
        [
            r.name,
            r.done,
            r.errors,
            r.rate,
            ms(r.percentile(50)),
            ms(r.percentile(99)),
            r.server_cpu_per_request * 1e6,
            r.server_cpu / r.elapsed if r.elapsed else float("nan"),
            r.client_cpu / r.elapsed if r.elapsed else float("nan"),
        ]
        for r in results
    ]


def print_errors(results: Sequence[Result]) -> None:
    """The first failure of each phase that had any (status or exception)."""
    for r in results:
        if r.errors:
            print(f"  !! {r.name}: {r.errors} failed request(s), first: {r.first_error}")


LOAD_HEADERS = (
    "phase",
    "ok",
    "errors",
    "req/s",
    "p50 ms",
    "p99 ms",
    "server CPU us/req",
    "server cores",
    "client cores",
)
