"""Webhooks from real ``framejobs serve`` processes to a real receiver on 127.0.0.1:
a crash between a job's end and its callback, the loopback allowlist, and 1,000 jobs."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from service import ssrf
from tests.e2e.server import Server
from tests.support.jobs import wait_status
from tests.support.receiver import Received, Receiver
from tests.support.waiting import wait_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK_ENV = {
    "FRAMEJOBS_WEBHOOK_SECRETS": SECRET,
    "FRAMEJOBS_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    "FRAMEJOBS_WEBHOOK_RETRY_SCHEDULE": "0.05,0.1,0.2",
    "FRAMEJOBS_WEBHOOK_POLL_INTERVAL_S": "0.05",
    "FRAMEJOBS_WEBHOOK_TIMEOUT_S": "2",
}
TRIVIAL = {
    "pipeline": "sql",
    "params": {"query": "select count(*) as n, sum(a) as total from input"},
    "frame": {"columns": {"a": [1, 2, 3]}},
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def hook_server(server_factory: Callable[..., Server]) -> Callable[..., Server]:
    def make(**env: str) -> Server:
        return server_factory(**{**HOOK_ENV, **env})

    return make


def _db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "framejobs.db"


def _rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def _submit(client: httpx.Client, url: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={**TRIVIAL, "webhook": {"url": url}, **extra})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def _webhook_state(client: httpx.Client, job_id: str, state: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return body if body["webhook"]["state"] == state else None

    return wait_for(check, timeout=20, what=f"job {job_id} webhook {state}")


def _header(got: Received, name: str) -> str:
    return next(v for k, v in got.headers.items() if k.lower() == name)


def _verified(got: Received) -> dict[str, Any]:
    event: dict[str, Any] = Webhook(SECRET).verify(got.body, got.headers)
    return event


def test_kill9_after_the_job_ends_then_restart_delivers_once(
    hook_server: Callable[..., Server], receiver: Receiver, tmp_path: Path
) -> None:
    first = hook_server(FRAMEJOBS_WEBHOOK_DISPATCH="false").start()
    with first.client() as client:
        job = _submit(client, receiver.url)
        done = wait_status(client, job["id"])
        assert done["status"] == "completed"
        assert done["webhook"]["state"] == "pending" and done["webhook"]["attempts"] == 0
        (delivery,) = client.get(f"/jobs/{job['id']}/webhook-deliveries").json()["items"]
        assert delivery["status"] == "pending" and delivery["attempt_log"] == []
    # the outbox row was committed with the job's end: it is on disk before the crash
    assert _rows(_db(tmp_path), "select job_id, status from webhook_delivery") == [
        (job["id"], "pending")
    ]
    first.kill()
    assert receiver.received == []

    second = hook_server().start()
    with second.client() as client:
        (got,) = receiver.wait_count(1)
        final = _webhook_state(client, job["id"], "delivered")
        assert final["webhook"]["attempts"] == 1
        event = _verified(got)
        assert event["type"] == "job.completed"
        assert got.headers["webhook-id"] == delivery["id"]
        # data is the job as it ended; only its webhook bookkeeping moved on since
        assert {k: v for k, v in event["data"].items() if k != "webhook"} == {
            k: v for k, v in final.items() if k != "webhook"
        }
        (logged,) = client.get(f"/jobs/{job['id']}/webhook-deliveries").json()["items"]
        assert [a["status_code"] for a in logged["attempt_log"]] == [200]
    assert len(receiver.received) == 1  # delivered, so never sent again


def test_kill9_mid_send_resends_the_same_id_after_the_claim_expires(
    hook_server: Callable[..., Server], receiver: Receiver
) -> None:
    """A dispatcher killed with a POST in flight never recorded it: its claim expires
    (2 x timeout + 5 s) and the next process sends the event again with the same
    webhook-id. At least once, so the receiver dedupes on webhook-id."""
    receiver.answer(200, delay=3.0)  # holds the first POST while its sender is killed
    first = hook_server(FRAMEJOBS_WEBHOOK_TIMEOUT_S="1").start()
    with first.client() as client:
        job = _submit(client, receiver.url)
        wait_for(lambda: _answer_taken(receiver), what="the first POST to arrive")
        first.kill()
    second = hook_server(FRAMEJOBS_WEBHOOK_TIMEOUT_S="1").start()
    with second.client() as client:
        got = receiver.wait_count(2, timeout=30)
        final = _webhook_state(client, job["id"], "delivered")
        (delivery,) = client.get(f"/jobs/{job['id']}/webhook-deliveries").json()["items"]
    assert [r.headers["webhook-id"] for r in got] == [delivery["id"]] * 2
    assert got[0].body == got[1].body
    assert final["webhook"]["attempts"] == 1  # the killed attempt was never recorded
    assert [a["status_code"] for a in delivery["attempt_log"]] == [200]


def _answer_taken(receiver: Receiver) -> bool:
    with receiver.arrived:
        return not receiver.script.answers


def _localhost_is_loopback_v4() -> bool:
    try:
        found = ssrf.system_resolver("localhost", 80)
    except OSError:
        return False
    return all(a.startswith("127.") for a in found)


def test_allowlisted_loopback_is_delivered(
    hook_server: Callable[..., Server], receiver: Receiver
) -> None:
    if not _localhost_is_loopback_v4():
        pytest.skip("localhost resolves to more than 127.0.0.0/8 here (e.g. ::1)")
    server = hook_server().start()  # FRAMEJOBS_WEBHOOK_ALLOW_NETWORKS=127.0.0.0/8
    port = receiver.port
    urls = {
        "localhost": f"http://localhost:{port}/by-name",
        "ip": f"http://127.0.0.1:{port}/by-ip",
        "mapped": f"http://[::ffff:127.0.0.1]:{port}/by-mapped",
    }
    with server.client() as client:
        jobs = {name: _submit(client, url)["id"] for name, url in urls.items()}
        # the allowlist opens exactly what it names: not ::1, not other private ranges
        for refused in (f"http://[::1]:{port}/", "http://10.0.0.1/", "http://169.254.169.254/"):
            response = client.post("/jobs", json={**TRIVIAL, "webhook": {"url": refused}})
            assert response.status_code == 422, response.text
        got = receiver.wait_count(3)
        for job_id in jobs.values():
            assert _webhook_state(client, job_id, "delivered")["webhook"]["attempts"] == 1
    by_path = {r.path: r for r in got}
    assert set(by_path) == {"/by-name", "/by-ip", "/by-mapped"}
    hosts = {path: _header(r, "host") for path, r in by_path.items()}
    assert hosts == {
        "/by-name": f"localhost:{port}",
        "/by-ip": f"127.0.0.1:{port}",
        "/by-mapped": f"[::ffff:127.0.0.1]:{port}",
    }
    for name, path in (("localhost", "/by-name"), ("ip", "/by-ip"), ("mapped", "/by-mapped")):
        assert _verified(by_path[path])["data"]["id"] == jobs[name]
    assert len(receiver.received) == 3


@pytest.mark.slow
@pytest.mark.serial
def test_thousand_jobs_thousand_distinct_verified_webhooks(
    hook_server: Callable[..., Server], receiver: Receiver, tmp_path: Path
) -> None:
    server = hook_server(FRAMEJOBS_WORKERS="4").start()
    ids: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client_thread(n: int) -> None:
        with server.client() as client:
            for i in range(50):
                body = {
                    **TRIVIAL,
                    "frame": {"columns": {"a": [n, i]}},
                    "webhook": {"url": receiver.url},
                }
                response = client.post("/jobs", json=body)
                with lock:
                    if response.status_code == 202:
                        ids.append(response.json()["id"])
                    else:
                        errors.append(response.text)

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(ids) == 1000 == len(set(ids))

    got = receiver.wait_count(1000, timeout=60)
    db = _db(tmp_path)

    def all_delivered() -> bool:
        ((n,),) = _rows(db, "select count(*) from webhook_delivery where status = 'delivered'")
        return n == 1000

    wait_for(all_delivered, timeout=30, interval=0.1, what="1,000 deliveries recorded")
    # every delivery is settled as delivered: nothing is left to send, so this is final
    assert _rows(db, "select count(*), sum(attempts) from webhook_delivery") == [(1000, 1000)]
    assert len(receiver.received) == 1000
    webhook_ids = Counter(r.headers["webhook-id"] for r in got)
    assert len(webhook_ids) == 1000 and max(webhook_ids.values()) == 1
    events = [_verified(r) for r in got]
    assert Counter(e["data"]["id"] for e in events) == Counter(ids)
    assert {e["type"] for e in events} == {"job.completed"}
    assert {json.loads(r.body)["data"]["status"] for r in got} == {"completed"}
    # the webhook-id is the delivery id the log shows for that job
    logged = dict(_rows(db, "select job_id, id from webhook_delivery"))
    assert {e["data"]["id"]: r.headers["webhook-id"] for e, r in zip(events, got, strict=True)} == (
        logged
    )


def test_refused_port_then_receiver_appears(
    hook_server: Callable[..., Server],
) -> None:
    """Connection refused is retried on the (shortened) schedule; the event arrives once
    the receiver listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = hook_server(FRAMEJOBS_WEBHOOK_RETRY_SCHEDULE=",".join(["0.2"] * 50)).start()
    with server.client() as client:
        job = _submit(client, f"http://127.0.0.1:{port}/hook")

        def failed_twice() -> bool:
            items = client.get(f"/jobs/{job['id']}/webhook-deliveries").json()["items"]
            return bool(items) and len(items[0]["attempt_log"]) >= 2

        wait_for(failed_twice, what="two refused attempts")
        with Receiver(port=port) as back:
            (got,) = back.wait_count(1)
            final = _webhook_state(client, job["id"], "delivered")
        _verified(got)
        (d,) = client.get(f"/jobs/{job['id']}/webhook-deliveries").json()["items"]
        assert all("Connect" in (a["error"] or "") for a in d["attempt_log"][:-1])
        assert d["attempt_log"][-1]["status_code"] == 200
        assert final["webhook"]["attempts"] == len(d["attempt_log"])
