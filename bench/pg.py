"""PostgreSQL set-up for the ``pg_*`` benchmarks: throw-away databases, bulk-copied
queued jobs, and ``framejobs serve`` / ``framejobs worker`` processes against them.

The server is the one at ``FRAMEJOBS_BENCH_PG`` (a libpq URL of a database to connect
to for CREATE/DROP DATABASE; default ``postgresql://postgres@127.0.0.1:5432/postgres``).
Every database made here is called ``fjbench_<what>_<random>`` and dropped at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa

from bench.harness import ROOT, free_port, log_tail, temp_dir
from service.config import Settings
from service.db import make_engine
from service.models import job_table, payload_table
from service.revisions import upgrade

ADMIN_URL = os.environ.get("FRAMEJOBS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def available() -> bool:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def skip_message(name: str) -> str:
    return (
        f"   {name}: skipped, PostgreSQL is not reachable at FRAMEJOBS_BENCH_PG ({ADMIN_URL}); "
        "start it or point FRAMEJOBS_BENCH_PG at one to run the PostgreSQL benchmarks"
    )


def libpq_url(dbname: str) -> str:
    return sa.make_url(ADMIN_URL).set(database=dbname).render_as_string(hide_password=False)


def sqlalchemy_url(dbname: str) -> str:
    url = sa.make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=dbname)
    return url.render_as_string(hide_password=False)


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def new_name(what: str) -> str:
    return f"fjbench_{what}_{uuid.uuid4().hex[:10]}"


def create_database(name: str, *, template: str | None = None) -> None:
    clause = f' TEMPLATE "{template}"' if template else ""
    _admin(f'CREATE DATABASE "{name}"{clause}')


def drop_database(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database(what: str, *, template: str | None = None, migrate: bool = True) -> Iterator[str]:
    """A fresh database (a copy of ``template`` when given, else migrated to head);
    yields its name and drops it on exit."""
    name = new_name(what)
    create_database(name, template=template)
    try:
        if migrate and template is None:
            engine = make_engine(Settings(database_url=sqlalchemy_url(name)))
            try:
                upgrade(engine)
            finally:
                engine.dispose()
        yield name
    finally:
        drop_database(name)


def copy_queued(dbname: str, template_id: str, n: int) -> None:
    """``n`` queued copies of one job (row and input payload), made by the database
    itself with ``generate_series``. Ids: the template's 10-character time part + 16 hex
    digits (hex digits are in the id alphabet, so the copies are valid, sortable ids)."""

    def new_id(source: str) -> str:
        return f"substr({source}, 1, 10) || lpad(to_hex(g), 16, '0')"

    special = {"id": new_id("t.id"), "idempotency_key": "NULL", "request_hash": "NULL"}
    cols = [c.name for c in job_table.c]
    select = ", ".join(special.get(c, f"t.{c}") for c in cols)
    pcols = [c.name for c in payload_table.c]
    pselect = ", ".join(new_id("p.job_id") if c == "job_id" else f"p.{c}" for c in pcols)
    with psycopg.connect(libpq_url(dbname)) as conn:
        conn.execute(
            f"INSERT INTO job ({', '.join(cols)}) SELECT {select} "
            "FROM job t, generate_series(1, %s) g WHERE t.id = %s",
            (n, template_id),
        )
        conn.execute(
            f"INSERT INTO payload ({', '.join(pcols)}) SELECT {pselect} "
            "FROM payload p, generate_series(1, %s) g WHERE p.job_id = %s",
            (n, template_id),
        )


def delete_job(dbname: str, job_id: str) -> None:
    with psycopg.connect(libpq_url(dbname)) as conn:
        for table in ("payload", "job_event", "webhook_delivery"):
            conn.execute(f"DELETE FROM {table} WHERE job_id = %s", (job_id,))
        conn.execute("DELETE FROM job WHERE id = %s", (job_id,))


def vacuum_analyze(dbname: str) -> None:
    with psycopg.connect(libpq_url(dbname), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# -- processes -----------------------------------------------------------------------


def framejobs_env(
    database_url: str, data_dir: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEJOBS_")}
    env.update(
        FRAMEJOBS_DATABASE_URL=database_url,
        FRAMEJOBS_DATA_DIR=str(data_dir),
        FRAMEJOBS_LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra or {})
    return env


@dataclass
class Proc:
    """A ``framejobs`` process (or a benchmark helper) with its log in a temp dir."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def spawn(command: list[str], env: dict[str, str], log_path: Path) -> Proc:
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(proc, log_path)


def framejobs_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "framejobs"), *args]


def start_api(env: dict[str, str], log_dir: Path) -> Proc:
    """``framejobs serve --workers 0`` on a free port; returns once /readyz says 200."""
    port = free_port()
    command = framejobs_command(
        "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "0"
    )
    api = spawn(command, env, log_dir / f"api-{port}.log")
    api.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if api.proc.poll() is not None:
            raise RuntimeError(f"the API exited at start:\n{api.log_tail()}")
        try:
            if httpx.get(api.url + "/readyz", timeout=2.0).status_code == 200:
                return api
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    api.stop()
    raise RuntimeError(f"the API was not ready within {READY_TIMEOUT_S} s:\n{api.log_tail()}")


@contextmanager
def processes() -> Iterator[list[Proc]]:
    """A list to append started processes to; all are stopped on exit."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


__all__ = [
    "ADMIN_URL",
    "Proc",
    "available",
    "copy_queued",
    "database",
    "framejobs_env",
    "processes",
    "skip_message",
    "spawn",
    "start_api",
    "temp_dir",
]
