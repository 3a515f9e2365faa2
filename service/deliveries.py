"""Webhook deliveries in the database: claim the due ones, record each attempt,
redeliver, list. Claims are leases (``claimed_until``), so no two dispatchers send
one delivery at once, and one that died mid-send frees its claim by expiry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from service.db import notify
from service.errors import Conflict, NotFound
from service.ids import looks_like_id
from service.models import attempt_table, delivery_table, job_table
from service.text import storable_or_none
from service.webhooks import SendResult

D = delivery_table.c
A = attempt_table.c


def claim_due(
    conn: Connection, *, dispatcher: str, now: datetime, hold_s: float, limit: int
) -> list[RowMapping]:
    free = sa.or_(D.claimed_until.is_(None), D.claimed_until < now)
    due = (
        sa.select(D.id)
        .where(D.status == "pending", D.next_attempt_at <= now, free)
        .order_by(D.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    picked = due.cte("due")  # evaluated once (see claim.claim for why not IN (...))
    stmt = (
        delivery_table.update()
        .where(D.id == picked.c.id, D.status == "pending", free)
        .values(claimed_by=dispatcher, claimed_until=now + timedelta(seconds=hold_s))
        .returning(delivery_table)
    )
    return list(conn.execute(stmt).mappings().all())


@dataclass(frozen=True)
class Decision:
    status: str  # pending | delivered | failed
    next_attempt_at: datetime | None


def record_attempt(
    conn: Connection,
    delivery: RowMapping,
    *,
    dispatcher: str,
    at: datetime,
    result: SendResult,
    decision: Decision,
) -> bool:
    """Log the attempt and move the delivery on; False if the claim was lost."""
    n = delivery["attempts"] + 1
    values: dict[str, Any] = {
        "status": decision.status,
        "attempts": n,
        "cycle_attempts": delivery["cycle_attempts"] + 1,
        "last_attempt_at": at,
        "claimed_by": None,
        "claimed_until": None,
    }
    if decision.next_attempt_at is not None:
        values["next_attempt_at"] = decision.next_attempt_at
    if decision.status == "delivered":
        values["delivered_at"] = at
    owned = sa.and_(
        D.id == delivery["id"], D.claimed_by == dispatcher, D.attempts == delivery["attempts"]
    )
    if conn.execute(delivery_table.update().where(owned).values(**values)).rowcount != 1:
        return False
    conn.execute(
        attempt_table.insert().values(
            delivery_id=delivery["id"],
            n=n,
            at=at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            # what a receiver answered may hold NUL, which PostgreSQL text cannot
            response=storable_or_none(result.response),
            error=storable_or_none(result.error),
        )
    )
    _mirror_on_job(conn, delivery["job_id"], decision.status, n, at)
    return True


def _mirror_on_job(conn: Connection, job_id: str, state: str, attempts: int, at: datetime) -> None:
    """The job body shows webhook.state and .attempts; a change is a new job version."""
    j = job_table.c
    notify(conn, f"job:{job_id}:webhook")
    if state == "pending":
        notify(conn, f"deliveries:{job_id}:pending")
    conn.execute(
        job_table.update()
        .where(j.id == job_id)
        .values(
            webhook_state=state,
            webhook_attempts=attempts,
            updated_at=at,
            version=j.version + 1,
        )
    )


def redeliver(conn: Connection, job_id: str, delivery_id: str, *, now: datetime) -> RowMapping:
    """Send it again (same webhook-id) with a fresh retry schedule."""
    delivery = _delivery(conn, job_id, delivery_id)
    if delivery["claimed_until"] is not None and delivery["claimed_until"] > now:
        raise Conflict("an attempt of this delivery is in flight; try again in a moment")
    stmt = (
        delivery_table.update()
        .where(D.id == delivery_id)
        .values(status="pending", cycle_attempts=0, next_attempt_at=now, claimed_by=None)
        .returning(delivery_table)
    )
    row = conn.execute(stmt).mappings().one()
    _mirror_on_job(conn, job_id, "pending", row["attempts"], now)
    return row


def _delivery(conn: Connection, job_id: str, delivery_id: str) -> RowMapping:
    row = None
    if delivery_id.startswith("msg_") and looks_like_id(delivery_id[4:]):
        query = sa.select(delivery_table).where(D.id == delivery_id, D.job_id == job_id)
        row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"job {job_id} has no webhook delivery {delivery_id!r}")
    return row


def for_job(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(delivery_table).where(D.job_id == job_id).order_by(D.created_at)
    ).mappings()
    return [_body(conn, row) for row in rows]


def _body(conn: Connection, row: RowMapping) -> dict[str, Any]:
    attempts = conn.execute(
        sa.select(attempt_table).where(A.delivery_id == row["id"]).order_by(A.n)
    ).mappings()
    return {
        "id": row["id"],
        "event_type": row["event_type"],
        "url": row["url"],
        "status": row["status"],
        "attempts": row["attempts"],
        "created_at": row["created_at"].isoformat(),
        "next_attempt_at": row["next_attempt_at"].isoformat()
        if row["status"] == "pending"
        else None,
        "delivered_at": row["delivered_at"].isoformat() if row["delivered_at"] else None,
        "attempt_log": [
            {
                "n": a["n"],
                "at": a["at"].isoformat(),
                "duration_ms": a["duration_ms"],
                "status_code": a["status_code"],
                "response": a["response"],
                "error": a["error"],
            }
            for a in attempts
        ],
    }
