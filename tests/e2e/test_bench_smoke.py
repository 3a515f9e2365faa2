"""The fastest benchmark, at smoke-test sizes: it runs a real server and prints figures.
Timings are never asserted on (the machine is shared and noisy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_engine_benchmark_prints_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.engine", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "bare DuckDB" in out
    assert re.search(r"service: total, upload start -> completed seen\s+\d+\.\d+\s+\d+\.\d+", out)
    assert re.search(r"total end to end:\s+\d+\.\d+x bare", out)
