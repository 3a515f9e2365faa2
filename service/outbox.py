"""The transactional outbox: when a job reaches a final state, the webhook delivery
row is written in the same transaction, so a committed end always gets its callback."""

from __future__ import annotations

import json

from sqlalchemy.engine import Connection, RowMapping

from service.db import notify
from service.ids import new_id
from service.models import delivery_table, job_table
from service.schemas import TERMINAL, job_body

EVENT_TYPES = {"completed": "job.completed", "failed": "job.failed", "cancelled": "job.cancelled"}
ALL_EVENTS = tuple(EVENT_TYPES.values())


def on_status(conn: Connection, row: RowMapping) -> RowMapping:
    """Queue the job's webhook if it just ended and asked for this event; returns the
    row as it now is (its ``webhook_state`` may have changed)."""
    if row["status"] not in TERMINAL or not row["webhook_url"]:
        return row
    event = EVENT_TYPES[row["status"]]
    wanted = event in (row["webhook_events"] or ALL_EVENTS)
    row = _set_state(conn, row["id"], "pending" if wanted else "skipped")
    if wanted:
        _insert_delivery(conn, row, event)
        # wakes the dispatchers of other processes (PostgreSQL NOTIFY, sent at commit);
        # a job that ends without a webhook to send wakes none of them
        notify(conn, f"deliveries:{row['id']}:pending")
    return row


def _set_state(conn: Connection, job_id: str, state: str) -> RowMapping:
    stmt = (
        job_table.update()
        .where(job_table.c.id == job_id)
        .values(webhook_state=state)
        .returning(job_table)
    )
    return conn.execute(stmt).mappings().one()


def _insert_delivery(conn: Connection, row: RowMapping, event: str) -> None:
    now = row["finished_at"] or row["updated_at"]
    body = {"type": event, "timestamp": now.isoformat(), "data": job_body(row)}
    conn.execute(
        delivery_table.insert().values(
            id=f"msg_{new_id()}",
            job_id=row["id"],
            event_type=event,
            url=row["webhook_url"],
            payload=json.dumps(body, separators=(",", ":")),
            status="pending",
            next_attempt_at=now,
            created_at=now,
        )
    )
