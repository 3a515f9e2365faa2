"""Retention: finished jobs and everything they own go; live jobs stay."""

from __future__ import annotations

import ipaddress
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import event

from service import deliveries, store
from service.api.app import create_app
from service.config import Settings
from service.db import make_engine, reading, writing
from service.deliveries import Decision
from service.models import attempt_table, delivery_table, event_table, job_table, payload_table
from service.prune import parse_age, prune
from service.store import utcnow
from service.webhooks import SendResult
from tests.conftest import fast_settings
from tests.support.jobs import submit, wait_status

FRAME = {"columns": {"userId": [1], "amount": [1.0]}}
HOOK = "http://127.0.0.1:9/hook"  # never sent to: dispatch is off in these tests


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
            asked_to_stop = prune(engine, before=utcnow() + timedelta(seconds=1), stop=lambda: True)
            assert asked_to_stop == 0  # a worker shutting down stops between batches
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


def _webhook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_allow_networks": [ipaddress.ip_network("127.0.0.0/8")],
            "webhook_dispatch": False,  # deliveries stay pending: nothing sends them
        }
    )


def test_prune_keeps_a_job_whose_webhook_is_still_retried(settings: Settings) -> None:
    """Its delivery (and the event it carries) would be lost with it."""
    hooked = _webhook_settings(settings)
    with TestClient(create_app(hooked)) as client:
        plain = submit(client, "billing_rollup", FRAME)["id"]
        pending = submit(client, "billing_rollup", FRAME, webhook={"url": HOOK})["id"]
        for job_id in (plain, pending):
            wait_status(client, job_id)
        engine = make_engine(hooked)
        try:
            assert prune(engine, before=utcnow() + timedelta(seconds=1)) == 1
        finally:
            engine.dispose()
        assert client.get(f"/jobs/{plain}").status_code == 404
        assert client.get(f"/jobs/{pending}").json()["webhook"]["state"] == "pending"


@pytest.mark.postgres
def test_deleting_a_job_while_its_attempt_is_recorded_leaves_no_attempt_behind(
    pg_url: str, tmp_path: Path
) -> None:
    """PostgreSQL, read committed: an attempt recorded between the delete of the
    attempts and the delete of the deliveries outlived its job (with the receiver's
    answer in it)."""
    settings = _webhook_settings(fast_settings(pg_url, tmp_path / "data"))
    with TestClient(create_app(settings)) as client:
        job_id = submit(client, "billing_rollup", FRAME, webhook={"url": HOOK})["id"]
        wait_status(client, job_id)
    engine = make_engine(settings)
    try:
        with writing(engine) as conn:
            (delivery,) = deliveries.claim_due(
                conn, dispatcher="d1", now=utcnow(), hold_s=60, limit=1
            )
        paused, resume = threading.Event(), threading.Event()

        def pause_after_attempts(conn, cursor, statement: str, *args: object) -> None:  # type: ignore[no-untyped-def]
            if statement.lstrip().upper().startswith("DELETE FROM WEBHOOK_ATTEMPT"):
                paused.set()
                resume.wait(10)

        def delete() -> None:
            with writing(engine) as conn:
                event.listen(conn, "after_cursor_execute", pause_after_attempts)
                store.delete_job(conn, job_id)

        def record() -> None:
            with writing(engine) as conn:
                deliveries.record_attempt(
                    conn,
                    delivery,
                    dispatcher="d1",
                    at=utcnow(),
                    result=SendResult(200, "secret answer", None, 1.0),
                    decision=Decision("delivered", None),
                )

        deleter = threading.Thread(target=delete, daemon=True)
        deleter.start()
        assert paused.wait(10)
        recorder = threading.Thread(target=record, daemon=True)
        recorder.start()
        recorder.join(1.0)  # without the lock it commits now; with it, it waits
        resume.set()
        deleter.join(10)
        recorder.join(10)
        assert _count(engine, delivery_table) == 0
        assert _count(engine, attempt_table) == 0
    finally:
        engine.dispose()
