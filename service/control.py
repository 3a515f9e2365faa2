"""What a client may do to a job after submitting it: cancel it, delete it."""

from __future__ import annotations

from sqlalchemy.engine import Connection, RowMapping

from service.db import notify
from service.errors import Conflict, NotFound
from service.models import job_table
from service.schemas import TERMINAL
from service.store import add_event, delete_job, get_job, utcnow

J = job_table.c


def require_job(conn: Connection, job_id: str) -> RowMapping:
    row = get_job(conn, job_id)
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    return row


def cancel(conn: Connection, job_id: str) -> RowMapping:
    """A queued job is cancelled at once; a running one is asked to stop (the worker
    interrupts DuckDB and finishes it as cancelled)."""
    row = require_job(conn, job_id)
    if row["status"] in TERMINAL:
        raise Conflict(f"job {job_id} is already {row['status']}")
    now = utcnow()
    if row["status"] == "queued":
        values = {
            "status": "cancelled",
            "finished_at": now,
            "error_type": "JobCancelled",
            "error_message": "cancelled before it ran",
        }
    else:
        values = {"cancel_requested": True}
    stmt = (
        job_table.update()
        .where(J.id == job_id, J.status == row["status"], J.attempt == row["attempt"])
        .values(**values, updated_at=now, version=J.version + 1)
        .returning(job_table)
    )
    updated = conn.execute(stmt).mappings().first()
    if updated is None:  # it moved on under us (claimed or finished): judge it again
        return cancel(conn, job_id)
    if updated["status"] != row["status"]:
        updated = add_event(conn, updated)
    else:
        notify(conn, f"cancel:{job_id}:running")
    return updated


def delete(conn: Connection, job_id: str) -> None:
    row = require_job(conn, job_id)
    if row["status"] not in TERMINAL:
        raise Conflict(f"job {job_id} is {row['status']}; cancel it first or wait for it to end")
    delete_job(conn, job_id)
