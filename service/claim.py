"""Claiming due jobs, and rescuing jobs whose worker vanished.

The claim is one statement: a CTE picks due queued jobs in priority order
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers instead) and
the UPDATE marks them running with worker, attempt + 1 and lease, RETURNING them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from service.models import job_table
from service.processes import HOST, alive
from service.store import add_event

J = job_table.c
# Inline literals, not bound parameters: PostgreSQL can prove a partial index
# (``WHERE status = 'queued'``) usable only from a literal, and once psycopg prepares
# the statement, a generic plan with ``status = $1`` would scan the whole table.
QUEUED: sa.ColumnElement[str] = sa.literal_column("'queued'", sa.String)
RUNNING: sa.ColumnElement[str] = sa.literal_column("'running'", sa.String)
# The generic plan walks ix_job_queued whatever the table holds. A custom plan is
# planned anew at each claim, and planning ``run_after <= <value>`` looks the value up
# against the whole table: with 1,000,000 finished jobs PostgreSQL chose custom plans
# every time and a claim took 1.37x as long as with 10,000 (bench/pg_claim.py).
GENERIC_PLAN = "SET LOCAL plan_cache_mode = force_generic_plan"


def worker_id(suffix: str) -> str:
    """``host:pid:suffix``; lets a restart on the same host spot jobs of dead processes."""
    return f"{HOST}:{os.getpid()}:{suffix}"


def claim(
    conn: Connection,
    *,
    worker: str,
    now: datetime,
    lease_s: float,
    limit: int = 1,
    pipelines: Collection[str] | None = None,
) -> list[RowMapping]:
    """Claim up to ``limit`` due jobs; only of ``pipelines`` when given, so a worker
    never takes a job whose pipeline module it has not loaded. ``conn`` is in a
    transaction (as :func:`service.db.writing` gives), not AUTOCOMMIT, where
    PostgreSQL would ignore the ``SET LOCAL``."""
    names = tuple(sorted(pipelines)) if pipelines is not None else None
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(GENERIC_PLAN)
    values = {"now": now, "worker": worker, "lease_until": now + timedelta(seconds=lease_s)}
    found = conn.execute(_claim_statement(limit, names), values).mappings().all()
    rows = [add_event(conn, row) for row in found]
    return sorted(rows, key=lambda r: (-r["priority"], r["run_after"], r["id"]))


@functools.lru_cache(maxsize=64)
def _claim_statement(limit: int, pipelines: tuple[str, ...] | None) -> sa.Update:
    """Built once per (limit, pipelines): building it per claim cost ~0.3 ms of CPU,
    a tenth of a trivial job's claim transaction."""
    now = sa.bindparam("now", type_=J.run_after.type)
    due = (
        sa.select(J.id)
        .where(J.status == QUEUED, J.run_after <= now)
        .order_by(J.priority.desc(), J.run_after, J.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if pipelines is not None:
        due = due.where(J.pipeline.in_(pipelines))
    # A CTE, not `id IN (sub-select)`: PostgreSQL may run such a sub-select once per
    # row, and with SKIP LOCKED every run can pick other rows, so the UPDATE could
    # claim far more than `limit` jobs. The CTE is evaluated once.
    picked = due.cte("due")
    return (
        job_table.update()
        .where(J.id == picked.c.id, J.status == QUEUED)
        .values(
            status="running",
            worker_id=sa.bindparam("worker", type_=J.worker_id.type),
            attempt=J.attempt + 1,
            lease_expires_at=sa.bindparam("lease_until", type_=J.lease_expires_at.type),
            started_at=now,
            updated_at=now,
            progress_percent=None,
            progress_message=None,
            progress_updated_at=now,
            version=J.version + 1,
        )
        .returning(job_table)
    )


@dataclass(frozen=True)
class Rescued:
    requeued: list[str]
    ended: list[str]  # failed (attempts spent) or cancelled (a cancel was accepted)


def rescue(
    conn: Connection, *, now: datetime, dead_workers: frozenset[str] = frozenset()
) -> Rescued:
    """Re-queue (or fail, when attempts are spent) running jobs whose lease expired or
    whose worker is known dead; a job whose cancel was accepted ends ``cancelled``.

    The candidates are locked, skipping rows locked by others: a row locked by its
    worker's final save (or by a paused worker mid-transaction) must not stall the
    rescuer, and a lease renewed between the SELECT and the UPDATE is seen by the lock
    (PostgreSQL re-checks a locked row's WHERE on its newest version)."""
    lost = J.lease_expires_at < now
    if dead_workers:
        lost = sa.or_(lost, J.worker_id.in_(dead_workers))
    query = (
        sa.select(J.id, J.attempt, J.max_attempts, J.cancel_requested)
        .where(J.status == RUNNING, lost)
        .with_for_update(skip_locked=True)
    )
    requeued: list[str] = []
    ended: list[str] = []
    for job_id, attempt, max_attempts, cancel in conn.execute(query).all():
        retry = attempt < max_attempts and not cancel
        if _rescue_one(conn, job_id, _rescued_values(attempt, retry, cancel, now), attempt):
            (requeued if retry else ended).append(job_id)
    return Rescued(requeued, ended)


def _rescued_values(attempt: int, retry: bool, cancel: bool, now: datetime) -> dict[str, object]:
    message = f"the worker running attempt {attempt} stopped renewing its lease"
    values: dict[str, object] = {
        "worker_id": None,
        "lease_expires_at": None,
        "error_type": "LeaseExpired",
        "error_message": message,
        "updated_at": now,
        "version": J.version + 1,
    }
    if retry:
        values.update(status="queued", run_after=now)
    elif cancel:  # the client was told it would stop: it did
        values.update(status="cancelled", finished_at=now, error_type="JobCancelled")
        values["error_message"] = f"cancelled while running; then {message}"
    else:
        values.update(
            status="failed", finished_at=now, error_message=f"{message}; no attempts left"
        )
    return values


def _rescue_one(conn: Connection, job_id: str, values: dict[str, object], attempt: int) -> bool:
    stmt = (
        job_table.update()
        .where(J.id == job_id, J.status == "running", J.attempt == attempt)
        .values(**values)
        .returning(job_table)
    )
    row = conn.execute(stmt).mappings().first()
    if row is not None:
        add_event(conn, row)
    return row is not None


def running_workers(conn: Connection) -> set[str]:
    query = sa.select(J.worker_id).where(J.status == RUNNING).distinct()
    return {w for (w,) in conn.execute(query).all() if w}


def dead_local_workers(workers: set[str], mine: frozenset[str]) -> frozenset[str]:
    """Workers on this host whose process no longer exists (a pid that came back as
    this very process, under another worker id, is dead too)."""
    dead = set()
    for wid in workers - mine:
        host, _, rest = wid.partition(":")
        pid_text = rest.split(":", 1)[0]
        if host != HOST or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or not alive(pid):
            dead.add(wid)
    return frozenset(dead)
