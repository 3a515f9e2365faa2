"""The DuckDB engines run in UTC whatever the host's zone: a TIMESTAMPTZ result carries
the session's zone, which would otherwise leak into results (docs/formats.md)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import pyarrow as pa
from service.config import Settings
from service.execute import Engines

engines = Engines(Settings(database_url="sqlite://"), job_slots=1)
try:
    for sandboxed in (False, True):
        with engines.job_cursor(sandboxed) as cursor:
            stamps = pa.table({"t": pa.array([0], pa.timestamp("us", tz="UTC"))})
            cursor.register("stamps", stamps)
            kind = cursor.sql("select t from stamps").to_arrow_table().schema.field(0).type
            cursor.unregister("stamps")
            zone = cursor.sql("select current_setting('TimeZone')").fetchall()[0][0]
            print(zone, kind.tz)
finally:
    engines.close()
"""


def test_engines_run_in_utc_on_a_host_in_another_zone() -> None:
    env = {**os.environ, "TZ": "Europe/Berlin"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["UTC", "UTC", "UTC", "UTC"]
