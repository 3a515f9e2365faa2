"""PostgreSQL helpers for the scale-out tests: a cloned database, bulk job copies."""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa

from service.config import Settings
from service.db import make_engine, reading, writing
from service.ids import new_id
from service.models import event_table, job_table, payload_table


def engine_for(url: str) -> sa.Engine:
    return make_engine(Settings(database_url=url))


def copy_job(engine: sa.Engine, template_id: str, n: int) -> list[str]:
    """``n`` queued copies of a queued job, input payload included (fast set-up)."""
    with reading(engine) as conn:
        job = dict(
            conn.execute(sa.select(job_table).where(job_table.c.id == template_id)).mappings().one()
        )
        chunks = (
            conn.execute(sa.select(payload_table).where(payload_table.c.job_id == template_id))
            .mappings()
            .all()
        )
    ids = [new_id() for _ in range(n)]
    with writing(engine) as conn:
        conn.execute(job_table.insert(), [{**job, "id": i, "idempotency_key": None} for i in ids])
        conn.execute(
            payload_table.insert(), [{**dict(c), "job_id": i} for i in ids for c in chunks]
        )
    return ids


def status_counts(engine: sa.Engine) -> Counter[str]:
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(job_table.c.status, sa.func.count()).group_by(job_table.c.status)
        )
        return Counter({status: int(n) for status, n in rows.all()})


def events(engine: sa.Engine, status: str) -> Counter[str]:
    with reading(engine) as conn:
        rows = conn.execute(sa.select(event_table.c.job_id).where(event_table.c.status == status))
        return Counter(job_id for (job_id,) in rows.all())


def job_rows(engine: sa.Engine, ids: list[str]) -> dict[str, dict[str, Any]]:
    with reading(engine) as conn:
        rows = conn.execute(sa.select(job_table).where(job_table.c.id.in_(ids))).mappings().all()
    return {r["id"]: dict(r) for r in rows}
