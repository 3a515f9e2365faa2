"""Webhooks end to end in one process: a real receiver on 127.0.0.1, real HTTP."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from standardwebhooks import Webhook

from service.api.app import create_app
from service.config import Settings
from service.db import make_engine, writing
from service.models import delivery_table
from service.secrets import stored_secret
from tests.support.jobs import submit, wait_status
from tests.support.receiver import Receiver
from tests.support.waiting import wait_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_dGhpcyBpcyBhbiBvbGQgc2VjcmV0IGtleQ=="
FRAME = {"columns": {"userId": [1, 2], "amount": [1.0, 2.0]}}


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_secrets": [SECRET, OLD_SECRET],
            "webhook_allow_networks": [ipaddress.ip_network("127.0.0.0/8")],
            "webhook_retry_schedule": [0.05, 0.05, 0.05],
            "webhook_retry_jitter": 0.0,
            "webhook_poll_interval_s": 0.05,
            "webhook_timeout_s": 1.0,
        }
    )


@pytest.fixture
def hooked(hook_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(hook_settings)) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def _deliveries(client: TestClient, job_id: str) -> list[dict]:
    return client.get(f"/jobs/{job_id}/webhook-deliveries").json()["items"]


def _settled(client: TestClient, job_id: str, state: str) -> dict:
    def check() -> dict | None:
        body = client.get(f"/jobs/{job_id}").json()
        return body if body["webhook"]["state"] == state else None

    return wait_for(check, timeout=20, what=f"webhook state {state}")


def test_signed_event_matches_the_job(hooked: TestClient, receiver: Receiver) -> None:
    job = submit(hooked, "billing_rollup", FRAME, webhook={"url": receiver.url})
    assert job["webhook"] == {
        "url": receiver.url,
        "events": ["job.completed", "job.failed", "job.cancelled"],
        "state": "pending",
        "attempts": 0,
    }
    (got,) = receiver.wait_count(1)
    for secret in (SECRET, OLD_SECRET):  # every configured secret signs
        event = Webhook(secret).verify(got.body, got.headers)
    assert event["type"] == "job.completed"
    assert got.headers["webhook-id"].startswith("msg_")
    final = _settled(hooked, job["id"], "delivered")
    assert final["webhook"]["attempts"] == 1
    # data is the job as it ended; only the webhook bookkeeping moved on since
    assert {k: v for k, v in event["data"].items() if k != "webhook"} == {
        k: v for k, v in final.items() if k != "webhook"
    }
    log = _deliveries(hooked, job["id"])
    assert [(d["status"], [a["status_code"] for a in d["attempt_log"]]) for d in log] == [
        ("delivered", [200])
    ]
    assert receiver.wait_count(1) and len(receiver.received) == 1


def test_retries_keep_the_webhook_id(hooked: TestClient, receiver: Receiver) -> None:
    receiver.answer(500, 500)
    job = submit(hooked, "billing_rollup", FRAME, webhook={"url": receiver.url})
    got = receiver.wait_count(3)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    final = _settled(hooked, job["id"], "delivered")
    assert final["webhook"]["attempts"] == 3
    (delivery,) = _deliveries(hooked, job["id"])
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
    assert all(a["response"] == "ok" for a in delivery["attempt_log"])


def test_gone_stops_and_schedule_runs_out(hooked: TestClient, receiver: Receiver) -> None:
    receiver.answer(410)
    gone = submit(hooked, "billing_rollup", FRAME, webhook={"url": receiver.url})
    assert _settled(hooked, gone["id"], "failed")["webhook"]["attempts"] == 1
    receiver.script.default = 503
    spent = submit(hooked, "billing_rollup", FRAME, webhook={"url": receiver.url})
    assert _settled(hooked, spent["id"], "failed")["webhook"]["attempts"] == 4  # 1 + 3 retries


def test_redirects_are_not_followed(hooked: TestClient, receiver: Receiver) -> None:
    receiver.answer(302, headers={"location": "/elsewhere"})
    job = submit(hooked, "billing_rollup", FRAME, webhook={"url": receiver.url})
    got = receiver.wait_count(2)
    assert [r.path for r in got] == ["/hook", "/hook"]
    (delivery,) = _deliveries(hooked, job["id"])
    _settled(hooked, job["id"], "delivered")
    assert [a["status_code"] for a in _deliveries(hooked, job["id"])[0]["attempt_log"]] == [
        302,
        200,
    ]
    assert delivery["id"] == got[0].headers["webhook-id"]


def test_receiver_down_then_back(hook_settings: Settings) -> None:
    with socket.socket() as sock:  # a port nobody listens on (connection refused)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    slow_schedule = hook_settings.model_copy(update={"webhook_retry_schedule": [0.3] * 20})
    with TestClient(create_app(slow_schedule)) as client:
        job = submit(client, "billing_rollup", FRAME, webhook={"url": url})
        wait_for(
            lambda: (
                _deliveries(client, job["id"])
                and _deliveries(client, job["id"])[0]["attempts"] >= 2
            ),
            what="failed attempts",
        )
        errors = [a["error"] for a in _deliveries(client, job["id"])[0]["attempt_log"]]
        assert all(e and "Connect" in e for e in errors), errors
        with Receiver(port=port) as back:
            back.wait_count(1)
            _settled(client, job["id"], "delivered")


def test_receiver_that_never_answers_times_out_then_recovers(
    hooked: TestClient, receiver: Receiver
) -> None:
    receiver.answer(200, delay=3.0)  # longer than the 1 s timeout
    job = submit(hooked, "billing_rollup", FRAME, webhook={"url": receiver.url})
    final = _settled(hooked, job["id"], "delivered")
    log = _deliveries(hooked, job["id"])[0]["attempt_log"]
    assert log[0]["error"].startswith("timeout") and log[-1]["status_code"] == 200
    assert final["webhook"]["attempts"] == len(log) >= 2


def test_events_filter_and_cancel_event(hooked: TestClient, receiver: Receiver) -> None:
    only_failed = submit(
        hooked, "billing_rollup", FRAME, webhook={"url": receiver.url, "events": ["job.failed"]}
    )
    assert _settled(hooked, only_failed["id"], "skipped")["status"] == "completed"
    sleepy = submit(hooked, "sleepy", params={"seconds": 30}, webhook={"url": receiver.url})
    wait_status(hooked, sleepy["id"], "running")
    hooked.post(f"/jobs/{sleepy['id']}/cancel")
    (got,) = receiver.wait_count(1)
    assert json.loads(got.body)["type"] == "job.cancelled"


def test_redeliver_sends_the_same_id(hooked: TestClient, receiver: Receiver) -> None:
    job = submit(hooked, "billing_rollup", FRAME, webhook={"url": receiver.url})
    first = receiver.wait_count(1)[0]
    _settled(hooked, job["id"], "delivered")
    delivery_id = _deliveries(hooked, job["id"])[0]["id"]
    response = hooked.post(f"/jobs/{job['id']}/webhook-deliveries/{delivery_id}/redeliver")
    assert response.status_code == 202
    second = receiver.wait_count(2)[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == delivery_id
    assert second.body == first.body
    assert hooked.post(f"/jobs/{job['id']}/webhook-deliveries/nope/redeliver").status_code == 404


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://127.0.0.1:9/hook", "127.0.0.1"),
        ("http://[::1]:9/hook", "::1"),
        ("http://localhost:9/hook", "localhost"),
        ("http://[::ffff:127.0.0.1]:9/hook", "IPv4-mapped"),
        ("http://169.254.169.254/latest/meta-data", "169.254"),
        ("ftp://example.com/hook", "http or https"),
        ("http://user:pw@example.com/hook", "user name"),
        ("not a url", "spaces or control"),
    ],
)
def test_unsafe_urls_refused_at_submit(api_only: TestClient, url: str, needle: str) -> None:
    body = {"pipeline": "billing_rollup", "frame": FRAME, "webhook": {"url": url}}
    response = api_only.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]


def test_rebinding_is_refused_at_send(settings: Settings) -> None:
    """The name resolved to a public address at submit, to loopback at send: no request
    leaves (the transport would record it) and the attempt says why."""
    answers = iter([["93.184.216.34"]])

    def resolver(host: str, port: int) -> list[str]:
        return next(answers, ["127.0.0.1"])

    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200))
    fast = settings.model_copy(
        update={"webhook_retry_schedule": [0.05], "webhook_poll_interval_s": 0.05}
    )
    with TestClient(create_app(fast, resolver=resolver, transport=transport)) as client:
        job = submit(client, "billing_rollup", FRAME, webhook={"url": "http://rebind.example/hook"})
        final = _settled(client, job["id"], "failed")
        log = _deliveries(client, job["id"])[0]["attempt_log"]
    assert sent == [] and final["webhook"]["attempts"] == 2
    errors = {a["error"] for a in log}
    assert errors and all("refused" in e and "127.0.0.1" in e for e in errors), errors


def test_secret_generated_once_and_never_in_the_api(settings: Settings, receiver: Receiver) -> None:
    open_loopback = settings.model_copy(
        update={"webhook_allow_networks": [ipaddress.ip_network("127.0.0.0/8")]}
    )
    with TestClient(create_app(open_loopback)) as client:
        job = submit(client, "billing_rollup", FRAME, webhook={"url": receiver.url})
        (got,) = receiver.wait_count(1)
        body = json.dumps(client.get(f"/jobs/{job['id']}").json()) + json.dumps(
            _deliveries(client, job["id"])
        )
    engine = make_engine(settings)
    try:
        secret = stored_secret(engine)
    finally:
        engine.dispose()
    assert secret and secret.startswith("whsec_") and secret not in body
    Webhook(secret).verify(got.body, got.headers)
    with TestClient(create_app(open_loopback)):  # a restart keeps the same secret
        pass
    engine = make_engine(settings)
    try:
        assert stored_secret(engine) == secret
    finally:
        engine.dispose()


def test_a_url_that_cannot_be_sent_to_fails_on_schedule(hook_settings: Settings) -> None:
    """A stored URL httpx refuses (``010.8.8.8``: accepted by an older version's
    submit check) is a failed attempt on the schedule, not an error that comes back
    each time the claim expires with the delivery pending forever."""
    quiet = hook_settings.model_copy(update={"webhook_dispatch": False})
    with TestClient(create_app(quiet)) as client:
        job = submit(client, "billing_rollup", FRAME, webhook={"url": "http://127.0.0.1:9/hook"})
        wait_status(client, job["id"])
    engine = make_engine(hook_settings)
    try:
        with writing(engine) as conn:
            conn.execute(delivery_table.update().values(url="http://010.8.8.8/hook"))
    finally:
        engine.dispose()
    with TestClient(create_app(hook_settings)) as client:
        final = _settled(client, job["id"], "failed")
        log = _deliveries(client, job["id"])[0]["attempt_log"]
    assert final["webhook"]["attempts"] == len(log) == 4  # 1 + 3 retries
    assert all("not valid" in a["error"] for a in log), log


def test_a_response_no_database_can_store_is_logged_replaced(
    hooked: TestClient, receiver: Receiver
) -> None:
    receiver.script.body = b"ok\x00then \xed\xa0\x80"  # NUL, and bytes that are not UTF-8
    job = submit(hooked, "billing_rollup", FRAME, webhook={"url": receiver.url})
    _settled(hooked, job["id"], "delivered")
    (attempt,) = _deliveries(hooked, job["id"])[0]["attempt_log"]
    assert attempt["status_code"] == 200
    assert attempt["response"].startswith("ok\ufffdthen \ufffd")


def test_an_attempt_ends_at_its_timeout_even_if_bytes_keep_coming(
    hooked: TestClient, receiver: Receiver
) -> None:
    """A byte every 0.2 s never trips httpx's 1 s read timeout; the attempt's own
    deadline ends it, before the claim could expire and the event be sent twice."""
    receiver.script.trickle = 1
    job = submit(hooked, "billing_rollup", FRAME, webhook={"url": receiver.url})
    _settled(hooked, job["id"], "delivered")
    first, second = _deliveries(hooked, job["id"])[0]["attempt_log"]
    assert first["error"] == "timeout: the attempt took longer than 1 s"
    assert first["duration_ms"] < 5000
    assert second["status_code"] == 200
    assert len(receiver.received) == 2
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


def test_a_delivered_event_whose_record_fails_once_is_still_delivered_once(
    hooked: TestClient, receiver: Receiver
) -> None:
    """The receiver said 200, then saving that attempt hit a database error: it was
    recorded as a failed attempt, so the event was sent again or ended `failed`."""
    failed: list[str] = []

    def fail_first_record(conn, cursor, statement: str, *args: object) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO WEBHOOK_ATTEMPT") and not failed:
            failed.append(statement)
            raise OperationalError(statement, None, Exception("injected: database busy"))

    event.listen(Engine, "before_cursor_execute", fail_first_record)
    try:
        job = submit(hooked, "billing_rollup", FRAME, webhook={"url": receiver.url})
        final = _settled(hooked, job["id"], "delivered")
    finally:
        event.remove(Engine, "before_cursor_execute", fail_first_record)
    assert failed, "the injected failure never happened"
    assert len(receiver.received) == 1
    assert final["webhook"]["attempts"] == 1
    (delivery,) = _deliveries(hooked, job["id"])
    assert [a["status_code"] for a in delivery["attempt_log"]] == [200]


def test_a_dispatcher_that_cannot_claim_logs_once_per_streak(
    hook_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A database away for an hour logged an ~8 KB traceback every poll (14 MB/h)."""
    tries: list[str] = []

    def refuse_claims(conn, cursor, statement: str, *args: object) -> None:  # type: ignore[no-untyped-def]
        if "UPDATE webhook_delivery SET claimed_by" in statement:
            tries.append(statement)
            raise OperationalError(statement, None, Exception("injected: database away"))

    with TestClient(create_app(hook_settings)):
        event.listen(Engine, "before_cursor_execute", refuse_claims)
        try:
            wait_for(lambda: len(tries) >= 10, what="ten failed claims")
        finally:
            event.remove(Engine, "before_cursor_execute", refuse_claims)
    logged = [r for r in caplog.records if "claiming webhook deliveries" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
