"""Retention: finished jobs and everything they own go; live jobs stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import Settings
from service.db import make_engine, reading
from service.models import event_table, job_table, payload_table
from service.prune import parse_age, prune
from service.store import utcnow
from tests.support.jobs import submit, wait_status

FRAME = {"columns": {"userId": [1], "amount": [1.0]}}


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with reading(engine) as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_prune_removes_finished_jobs_with_their_data(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        done = [submit(client, "billing_rollup", FRAME)["id"] for _ in range(7)]
        for job_id in done:
            wait_status(client, job_id)
    with TestClient(create_app(settings, workers=0)) as api:
        waiting = submit(api, "billing_rollup", FRAME)["id"]
        engine = make_engine(settings)
        try:
            assert prune(engine, before=utcnow() - timedelta(hours=1)) == 0
            assert prune(engine, before=utcnow() + timedelta(seconds=1), batch=3) == 7
            with reading(engine) as conn:
                left = conn.execute(sa.select(job_table.c.id)).scalars().all()
            assert left == [waiting]
            assert _count(engine, payload_table) == 1  # the waiting job's input
            assert _count(engine, event_table) == 1
        finally:
            engine.dispose()
        assert api.get(f"/jobs/{done[0]}").status_code == 404


def test_periodic_prune(settings: Settings) -> None:
    periodic = settings.model_copy(update={"prune_after_s": 0.01, "prune_interval_s": 0.1})
    with TestClient(create_app(periodic)) as client:
        job_id = submit(client, "billing_rollup", FRAME)["id"]
        from tests.support.waiting import wait_for

        wait_for(lambda: client.get(f"/jobs/{job_id}").status_code == 404, what="the prune")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800), ("12h", 43200), ("30m", 1800), ("90s", 90), ("1.5h", 5400), ("2w", 1209600)],
)
def test_parse_age(text: str, seconds: int) -> None:
    assert parse_age(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "7 days", "-1d", "d", "7", "0s", "0.0d"])
def test_parse_age_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_age(text)
