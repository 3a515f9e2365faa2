"""Alembic environment: uses the engine handed over by framejobs, else FRAMEJOBS_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from service import models  # noqa: F401  (registers the tables)
from service.config import Settings
from service.db import make_engine

target_metadata = SQLModel.metadata


def run() -> None:
    engine = context.config.attributes.get("engine") or make_engine(Settings())
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()


run()
