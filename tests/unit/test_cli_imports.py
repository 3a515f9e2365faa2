"""The client commands start without loading the service (about a second of imports)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("sqlalchemy", "duckdb", "pyarrow", "fastapi", "uvicorn", "alembic", "pydantic_settings")


def _refused_url() -> str:
    """A port nothing listens on: bound, then let go, so each command ends at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


NOWHERE = _refused_url()
# Runs one command in a fresh interpreter, then names the heavy modules it loaded.
PROBE = """
import sys
from service.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    print("exit", exc.code, file=sys.stderr)
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded_by(*argv: str) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "", done.stderr


def test_the_command_line_loads_none_of_the_service_until_a_command_needs_it() -> None:
    probe = f"import sys, service.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == ""


@pytest.mark.parametrize(
    "argv",
    [
        ("jobs", "list", "--url", NOWHERE),
        ("jobs", "show", "some-job", "--url", NOWHERE),
        ("jobs", "cancel", "some-job", "--url", NOWHERE),
        ("submit", "sql", "FRAME", "--params", '{"query": "select 1"}', "--url", NOWHERE),
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_client_command_runs_without_the_service(argv: tuple[str, ...], tmp_path: Path) -> None:
    frame = tmp_path / "frame.csv"
    frame.write_text("a\n1\n")
    loaded, stderr = _loaded_by(*(str(frame) if arg == "FRAME" else arg for arg in argv))
    assert "cannot reach" in stderr and "exit 1" in stderr  # it ran as far as the network
    assert loaded == ""


def test_the_help_speaks_to_users() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "durable jobs" in done.stdout
    assert ":mod:" not in done.stdout and "imported only" not in done.stdout
