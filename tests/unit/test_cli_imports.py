"""The client commands start without loading the service (about a second of imports)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sqlalchemy", "duckdb", "pyarrow", "fastapi", "uvicorn", "alembic", "pydantic_settings")


def test_the_command_line_loads_none_of_the_service_until_a_command_needs_it() -> None:
    probe = f"import sys, service.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == ""
