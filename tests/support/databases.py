"""Test databases: a SQLite file per test, or a PostgreSQL database per test cloned
from a template migrated once per session (CREATE DATABASE ... TEMPLATE)."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
import sqlalchemy as sa

PG_ADMIN = os.environ.get("FRAMEJOBS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
# one template per test session: parallel runs (other checkouts, CI) never share it
TEMPLATE = f"fj_template_{os.getpid()}"


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def require_pg() -> None:
    if pg_available():
        return
    message = (
        "PostgreSQL is not reachable at FRAMEJOBS_TEST_PG "
        f"({PG_ADMIN}); start it (see README) to run the PostgreSQL half"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def wait_until_available(timeout: float = 60.0) -> None:
    from tests.support.waiting import wait_for

    wait_for(pg_available, timeout=timeout, interval=0.2, what="PostgreSQL to accept connections")


def sqlalchemy_url(dbname: str) -> str:
    url = sa.make_url(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://", 1))
    return url.set(database=dbname).render_as_string(hide_password=False)


def admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN, autocommit=True)


def create_template() -> None:
    from service.config import Settings
    from service.db import make_engine
    from service.revisions import upgrade

    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    engine = make_engine(Settings(database_url=sqlalchemy_url(TEMPLATE)))
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def drop_template() -> None:
    drop_database(TEMPLATE)


def clone_database() -> str:
    name = f"fj_test_{uuid.uuid4().hex[:12]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    return name


def drop_database(name: str) -> None:
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
