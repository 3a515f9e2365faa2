"""A failing test is reported as failed under pytest-xdist, whatever text it shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAILING = """
def test_a_lone_surrogate_in_the_diff():
    print("captured \\udfff")
    assert "a \\ud800 b" == "a \\ufffd b"


def test_a_skip_whose_reason_holds_one():
    import pytest

    pytest.skip("reason \\udfff")


def test_an_xfail_whose_reason_holds_one():
    import pytest

    pytest.xfail("reason \\udfff")
"""


def test_a_failure_showing_a_lone_surrogate_is_reported(tmp_path: Path) -> None:
    """pytest-xdist sends reports as UTF-8; one holding a lone surrogate could not be
    sent, and the test was dropped with an internal error (`make test` could pass)."""
    (tmp_path / "test_x.py").write_text(FAILING)
    command = [sys.executable, "-m", "pytest", "-n", "2", "-p", "tests.conftest", "-q"]
    done = subprocess.run(
        [*command, "-p", "no:cacheprovider", str(tmp_path / "test_x.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "1 failed, 1 skipped, 1 xfailed" in done.stdout
        and "INTERNALERROR" not in done.stdout + done.stderr
    )
