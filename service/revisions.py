"""The database schema's revision: checking it, and upgrading it (Alembic).

Several processes may run ``framejobs migrate`` (or ``serve --migrate``) at once
against one PostgreSQL; the upgrade then holds an advisory lock, so one of them
migrates and the others find the schema at head instead of failing half-way.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Engine

from service.errors import ServiceUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# pg_advisory_lock key: "fj_migr" as an integer, so it cannot clash by accident.
_LOCK_KEY = int.from_bytes(b"fj_migr", "big")


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    """The migration scripts, read once (``/readyz`` checks the schema on every probe)."""
    return ScriptDirectory.from_config(alembic_config())


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn, _quiet_alembic():
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Upgrade to head; ServiceUnavailable (with the reason) when it cannot."""
    _check_known(current_revision(engine))
    with _migration_lock(engine):
        command.upgrade(alembic_config(engine), "head")


def check_schema(engine: Engine) -> None:
    """ServiceUnavailable saying what to do unless the schema is at head."""
    current = current_revision(engine)
    _check_known(current)
    if current != _scripts().get_current_head():
        raise ServiceUnavailable("the database schema is not at head; run `framejobs migrate`")


def _check_known(current: str | None) -> None:
    try:
        known = current is None or _scripts().get_revision(current) is not None
    except CommandError:
        known = False
    if not known:
        raise ServiceUnavailable(
            f"the database schema is at revision {current!r}, which this version of "
            "framejobs does not know (a newer version migrated it); run that version"
        )


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "postgresql":
        yield  # SQLite serialises schema changes with its write lock
        return
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
            conn.commit()


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Reading the revision logs two INFO lines ("Context impl ..."); a readiness
    probe reads it every few seconds."""
    logger = logging.getLogger("alembic.runtime.migration")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
