"""Ending an attempt: completed, failed, cancelled, or back to the queue.

Every outcome is one transaction, fenced by worker and attempt: a worker that lost
its lease changes nothing, so it cannot overwrite the result of the worker that took
the job over. The result payload is written in the same transaction as the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, RowMapping

from service.decode import StoredFrame
from service.models import job_table
from service.store import add_event, delete_payload, write_payload
from service.text import storable_or_none

J = job_table.c


@dataclass(frozen=True)
class Attempt:
    job_id: str
    worker: str
    attempt: int


def _transition(conn: Connection, attempt: Attempt, values: dict[str, Any]) -> RowMapping | None:
    if "error_message" in values:
        values["error_message"] = storable_or_none(values["error_message"])
    stmt = (
        job_table.update()
        .where(
            J.id == attempt.job_id,
            J.status == "running",
            J.worker_id == attempt.worker,
            J.attempt == attempt.attempt,
        )
        .values(**values, version=J.version + 1)
        .returning(job_table)
    )
    row = conn.execute(stmt).mappings().first()
    return add_event(conn, row) if row is not None else None


def _ended(now: datetime, status: str) -> dict[str, Any]:
    return {
        "status": status,
        "finished_at": now,
        "updated_at": now,
        "worker_id": None,
        "lease_expires_at": None,
    }


def complete(
    conn: Connection, attempt: Attempt, result: StoredFrame, *, now: datetime, chunk_bytes: int
) -> RowMapping | None:
    values = {
        **_ended(now, "completed"),
        "progress_percent": 100.0,
        "progress_updated_at": now,
        "result_rows": result.rows,
        "result_bytes": result.bytes,
        "result_columns": result.columns,
        "error_type": None,
        "error_message": None,
    }
    row = _transition(conn, attempt, values)
    if row is not None:
        delete_payload(conn, attempt.job_id, "result")
        write_payload(conn, attempt.job_id, "result", result, chunk_bytes)
    return row


def fail(
    conn: Connection, attempt: Attempt, error_type: str, message: str, *, now: datetime
) -> RowMapping | None:
    values = {**_ended(now, "failed"), "error_type": error_type, "error_message": message}
    return _transition(conn, attempt, values)


def cancelled(conn: Connection, attempt: Attempt, *, now: datetime) -> RowMapping | None:
    values = {
        **_ended(now, "cancelled"),
        "error_type": "JobCancelled",
        "error_message": "cancelled while running",
    }
    return _transition(conn, attempt, values)


def requeue(
    conn: Connection,
    attempt: Attempt,
    *,
    now: datetime,
    delay_s: float,
    error_type: str,
    message: str,
    refund_attempt: bool = False,
) -> RowMapping | None:
    """Back to the queue; ``refund_attempt`` when the job was stopped through no fault
    of its own (shutdown), so that it does not use up an attempt."""
    values: dict[str, Any] = {
        "status": "queued",
        "run_after": now + timedelta(seconds=delay_s),
        "updated_at": now,
        "worker_id": None,
        "lease_expires_at": None,
        "error_type": error_type,
        "error_message": message,
    }
    if refund_attempt:
        values["attempt"] = J.attempt - 1
    return _transition(conn, attempt, values)
