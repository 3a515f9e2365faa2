"""Retention: delete finished jobs older than a cutoff, with their payloads, events
and webhook deliveries, in small batches so no transaction grows large."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.db import writing
from service.models import job_table
from service.schemas import TERMINAL
from service.store import delete_job

J = job_table.c
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


MAX_AGE_S = 100 * 365.25 * 86400


def parse_age(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w``. The unit is required: a bare ``7``
    meant as days but read as seconds would delete every finished job."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise ValueError(f"not an age: {text!r} (try 7d, 12h, 30m)")
    if not match.group(2):
        raise ValueError(f"{text!r} has no unit: say 90s, 30m, 12h, 7d or 2w")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r} is no age: it would delete every finished job")
    if seconds > MAX_AGE_S:
        raise ValueError(f"{text!r} is more than 100 years; nothing finished that long ago")
    return timedelta(seconds=seconds)


def prune(
    engine: Engine,
    *,
    before: datetime,
    batch: int = 500,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Delete jobs that ended before ``before``, a batch per transaction, until none
    is left or ``stop()`` says so; returns how many."""
    total = 0
    while not stop():
        with writing(engine) as conn:
            ids = (
                conn.execute(
                    sa.select(J.id)
                    .where(J.status.in_(sorted(TERMINAL)), J.finished_at < before)
                    # a webhook still being retried keeps its job (and its event)
                    .where(sa.or_(J.webhook_state.is_(None), J.webhook_state != "pending"))
                    .order_by(J.finished_at)
                    .limit(batch)
                    # locked: a redelivery committed meanwhile is seen (and its job kept)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            for job_id in ids:
                delete_job(conn, job_id)
        total += len(ids)
        if len(ids) < batch:
            break
    return total
