"""LISTEN/NOTIFY wake-ups on PostgreSQL: which notifications wake which component."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import Settings
from service.db import CHANNEL, WORK_CHANNEL, for_workers, make_engine, notify, writing
from service.notify import Hub
from service.pglisten import Listener, conninfo, route
from tests.conftest import fast_settings
from tests.support.jobs import submit, wait_status
from tests.support.waiting import wait_for


class RecordingHub:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def job_changed(self, job_id: str) -> None:
        self.calls.append(("job_changed", job_id))

    def work_available(self, count: int = 1) -> None:
        self.calls.append(("work_available", None))

    def deliveries_due(self) -> None:
        self.calls.append(("deliveries_due", None))

    def cancel_requested(self, job_id: str) -> None:
        self.calls.append(("cancel_requested", job_id))

    def wake_all(self) -> None:
        self.calls.append(("wake_all", None))

    def woken(self, what: str) -> int:
        return sum(1 for name, _ in self.calls if name == what)


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled", "running"])
def test_a_job_change_alone_wakes_no_dispatcher(status: str) -> None:
    hub = RecordingHub()
    route(hub, f"job:j1:{status}")  # type: ignore[arg-type]
    assert hub.calls == [("job_changed", "j1")]


def test_queued_wakes_workers_and_deliveries_wake_dispatchers() -> None:
    hub = RecordingHub()
    route(hub, "job:j1:queued")  # type: ignore[arg-type]
    route(hub, "deliveries:j2:pending")  # type: ignore[arg-type]
    assert hub.woken("work_available") == 1
    assert hub.woken("deliveries_due") == 1


@pytest.mark.postgres
def test_only_a_job_with_a_webhook_notifies_the_dispatchers(pg_url: str, tmp_path: Path) -> None:
    settings = fast_settings(
        pg_url,
        tmp_path / "data",
        webhook_allow_networks=[ipaddress.ip_network("127.0.0.0/8")],
        webhook_dispatch=False,  # nothing is sent: only the notifications matter here
    )
    with psycopg.connect(conninfo(pg_url), autocommit=True) as listen:
        listen.execute(f"LISTEN {CHANNEL}")
        with TestClient(create_app(settings)) as client:
            plain = submit(client, "sql", params={"query": "select count(*) from input"})
            hooked = submit(
                client,
                "sql",
                params={"query": "select count(*) from input"},
                webhook={"url": "http://127.0.0.1:9/hook"},
            )
            for job in (plain, hooked):
                assert wait_status(client, job["id"])["status"] == "completed"
        payloads = [note.payload for note in listen.notifies(timeout=1.0)]
    assert f"job:{plain['id']}:completed" in payloads
    assert f"job:{hooked['id']}:completed" in payloads
    deliveries = [p for p in payloads if p.startswith("deliveries:")]
    assert deliveries == [f"deliveries:{hooked['id']}:pending"]
    hub = RecordingHub()
    for payload in payloads:
        route(hub, payload)  # type: ignore[arg-type]
    assert hub.woken("deliveries_due") == 1


class FailingOnceHub(RecordingHub):
    """A hub whose first cancel wake-up fails, as a cancel of a closed cursor did."""

    def cancel_requested(self, job_id: str) -> None:
        super().cancel_requested(job_id)
        if self.woken("cancel_requested") == 1:
            raise RuntimeError("the cursor was already closed")


def test_the_listener_outlives_a_failing_wake_up(pg_url: str) -> None:
    hub = FailingOnceHub()
    listener = Listener(pg_url, hub, retry_s=0.05)  # type: ignore[arg-type]
    listener.start()
    try:
        with psycopg.connect(conninfo(pg_url), autocommit=True) as conn:
            wait_for(listener.connected.is_set, timeout=10, what="LISTEN")
            conn.execute(f"NOTIFY {CHANNEL}, 'cancel:j1:running'")
            wait_for(lambda: hub.woken("cancel_requested"), what="the failing wake-up")
            wait_for(listener.connected.is_set, timeout=10, what="LISTEN again")
            conn.execute(f"NOTIFY {CHANNEL}, 'cancel:j2:running'")
            wait_for(lambda: hub.woken("cancel_requested") == 2, what="the next wake-up")
    finally:
        listener.stop()
    assert ("cancel_requested", "j2") in hub.calls


def test_stop_wakes_a_listener_waiting_on_a_quiet_connection(pg_url: str) -> None:
    """The listener waited in notifies() with a timeout, so every shutdown (and every
    PostgreSQL test's teardown) waited up to that long for it; stop() now wakes it.
    Here nothing else would end its wait within the hour."""
    listener = Listener(pg_url, Hub(), idle_s=3600)
    listener.start()
    wait_for(listener.connected.is_set, timeout=10, what="LISTEN")
    listener.stop()  # joins for at most 5 s
    assert not listener.running


@pytest.mark.parametrize(
    ("payload", "workers"),
    [
        ("job:j1:queued", True),
        ("cancel:j1:running", True),
        ("deliveries:j1:pending", True),
        ("job:j1:running", False),
        ("job:j1:completed", False),
        ("job:j1:webhook", False),
        ("job:queued:running", False),  # an id is no status
    ],
)
def test_workers_hear_only_of_what_they_act_on(payload: str, workers: bool) -> None:
    assert for_workers(payload) is workers


@pytest.mark.postgres
def test_a_worker_process_is_not_woken_by_every_job_change(pg_url: str) -> None:
    """Every worker process heard every job's running, progress and completed
    notifications, which only event streams and long-polls use; a worker-only
    process now listens on the channel of queued jobs, cancels and deliveries."""
    worker_hub, api_hub = RecordingHub(), RecordingHub()
    listeners = [
        Listener(pg_url, worker_hub, channel=WORK_CHANNEL),  # type: ignore[arg-type]
        Listener(pg_url, api_hub),  # type: ignore[arg-type]
    ]
    engine = make_engine(Settings(database_url=pg_url))
    for listener in listeners:
        listener.start()
    try:
        for listener in listeners:
            wait_for(listener.connected.is_set, timeout=10, what="LISTEN")
        for payload in ("job:j1:running", "job:j1:completed", "job:j2:queued"):
            with writing(engine) as conn:  # one transaction each: delivered in this order
                notify(conn, payload)
        wait_for(lambda: ("job_changed", "j2") in worker_hub.calls, what="the queued job")
        wait_for(lambda: ("job_changed", "j2") in api_hub.calls, what="the API's wake-up")
    finally:
        for listener in listeners:
            listener.stop()
        engine.dispose()
    assert ("job_changed", "j1") not in worker_hub.calls
    assert api_hub.calls.count(("job_changed", "j1")) == 2
