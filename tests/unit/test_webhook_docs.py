"""The verification code in docs/webhooks.md runs, and agrees with what the service
sends: each block marked ``<!-- tested: NAME -->`` is executed here."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import WebhookVerificationError

from service.webhooks import Signer

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_dGhpcyBpcyBhbiBvbGQgc2VjcmV0IGtleQ=="
UNPADDED = "whsec_c2hvcnQtYnV0LW5vdC10b28tc2hvcnQ"  # base64 without its trailing "="
BODY = b'{"type":"job.completed","timestamp":"2026-01-01T00:00:00+00:00","data":{"id":"j"}}'


def snippet(name: str) -> str:
    text = DOC.read_text()
    found = re.search(rf"<!-- tested: {re.escape(name)} -->\n```python\n(.*?)\n```", text, re.S)
    assert found, f"docs/webhooks.md has no tested block {name!r}"
    return found.group(1)


def run(name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"docs_{name.replace('-', '_')}"}
    exec(compile(snippet(name), f"docs/webhooks.md:{name}", "exec"), namespace)
    return namespace


def signed(
    secrets: tuple[str, ...] = (SECRET,), when: datetime | None = None, msg_id: str = "msg_1"
) -> dict[str, str]:
    return Signer(secrets).headers(msg_id, when or datetime.now(UTC), BODY.decode())


# -- plain hmac ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain() -> dict[str, Any]:
    return run("plain-hmac")


def test_plain_hmac_matches_the_standard_webhooks_test_vector(plain: dict[str, Any]) -> None:
    signature = plain["sign"](
        SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}'
    )
    assert f"v1,{signature}" == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" in DOC.read_text()


def test_plain_hmac_accepts_what_the_service_signs(plain: dict[str, Any]) -> None:
    verify = plain["verify"]
    assert verify(SECRET, signed(), BODY) is None
    assert verify(SECRET, {k.upper(): v for k, v in signed().items()}, BODY) is None
    both = signed((OTHER, SECRET))  # during a rotation: either secret passes
    assert verify(SECRET, both, BODY) is None
    assert verify(OTHER, both, BODY) is None
    assert verify(UNPADDED, signed((UNPADDED,)), BODY) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h, b: (h, b + b" "), "no v1 signature"),
        (lambda h, b: (h, b.replace(b"completed", b"cancelled")), "no v1 signature"),
        (lambda h, b: ({**h, "webhook-id": "msg_2"}, b), "no v1 signature"),
        (lambda h, b: ({**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}, b), "v1"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "missing"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "not a number"),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(time.time()) - 301)}, b), "too far"),
    ],
)
def test_plain_hmac_refuses(plain: dict[str, Any], change: Any, reason: str) -> None:
    headers, body = change(signed(), BODY)
    with pytest.raises(plain["InvalidSignature"], match=reason):
        plain["verify"](SECRET, headers, body)


def test_plain_hmac_refuses_another_secret(plain: dict[str, Any]) -> None:
    with pytest.raises(plain["InvalidSignature"], match="no v1 signature"):
        plain["verify"](OTHER, signed(), BODY)


@pytest.mark.parametrize("skew", [timedelta(minutes=-10), timedelta(minutes=10)])
def test_plain_hmac_refuses_timestamp_skew(plain: dict[str, Any], skew: timedelta) -> None:
    headers = signed(when=datetime.now(UTC) + skew)
    with pytest.raises(plain["InvalidSignature"], match="too far"):
        plain["verify"](SECRET, headers, BODY)


# -- standardwebhooks ---------------------------------------------------------------------


def test_standardwebhooks_snippet() -> None:
    parse_event = run("standardwebhooks")["parse_event"]
    assert parse_event(SECRET, BODY, signed())["data"] == {"id": "j"}
    assert parse_event(OTHER, BODY, signed((SECRET, OTHER)))["type"] == "job.completed"
    with pytest.raises(WebhookVerificationError):
        parse_event(OTHER, BODY, signed())
    with pytest.raises(WebhookVerificationError, match="too old"):
        parse_event(SECRET, BODY, signed(when=datetime.now(UTC) - timedelta(minutes=6)))


def test_receiver_snippet_verifies_dedupes_and_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    receiver = run("receiver")
    with TestClient(receiver["app"]) as client:
        first = client.post("/framejobs", content=BODY, headers=signed(msg_id="msg_a"))
        again = client.post("/framejobs", content=BODY, headers=signed(msg_id="msg_a"))
        other = client.post("/framejobs", content=BODY, headers=signed(msg_id="msg_b"))
        forged = client.post("/framejobs", content=BODY, headers=signed((OTHER,), msg_id="msg_c"))
        stale = client.post(
            "/framejobs",
            content=BODY,
            headers=signed(when=datetime.now(UTC) - timedelta(minutes=6), msg_id="msg_d"),
        )
    assert [r.status_code for r in (first, again, other, forged, stale)] == [
        204,
        204,
        204,
        401,
        401,
    ]
    assert receiver["seen"] == {"msg_a", "msg_b"}
    assert [e["data"]["id"] for e in receiver["todo"]] == ["j", "j"]
