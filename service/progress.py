"""While a job runs: its progress, lease renewals (heartbeats) and cancel requests.

Writes are fenced by worker and attempt, so a worker that lost its job writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.db import notify
from service.models import job_table
from service.text import storable_or_none

J = job_table.c


def _owned(job_id: str, worker: str, attempt: int) -> sa.ColumnElement[bool]:
    return sa.and_(
        J.id == job_id, J.status == "running", J.worker_id == worker, J.attempt == attempt
    )


def write_progress(
    conn: Connection,
    *,
    job_id: str,
    worker: str,
    attempt: int,
    percent: float | None,
    message: str | None,
    now: datetime,
) -> bool:
    """Save progress; False when the job is no longer this worker's."""
    stmt = (
        job_table.update()
        .where(_owned(job_id, worker, attempt))
        .values(
            progress_percent=percent,
            progress_message=storable_or_none(message),
            progress_updated_at=now,
            updated_at=now,
            version=J.version + 1,
        )
    )
    if conn.execute(stmt).rowcount != 1:
        return False
    notify(conn, f"job:{job_id}:running")
    return True


def renew_leases(
    conn: Connection, *, worker: str, jobs: Iterable[tuple[str, int]], now: datetime, lease_s: float
) -> set[str]:
    """Extend the leases of the jobs this worker still holds; returns the ids it holds."""
    held = set()
    until = now + timedelta(seconds=lease_s)
    for job_id, attempt in jobs:
        stmt = (
            job_table.update().where(_owned(job_id, worker, attempt)).values(lease_expires_at=until)
        )
        if conn.execute(stmt).rowcount == 1:
            held.add(job_id)
    return held


def cancel_requested(conn: Connection, *, worker: str, job_ids: Iterable[str]) -> set[str]:
    ids = list(job_ids)
    if not ids:
        return set()
    query = sa.select(J.id).where(
        J.id.in_(ids), J.worker_id == worker, J.status == "running", J.cancel_requested
    )
    return {job_id for (job_id,) in conn.execute(query).all()}
