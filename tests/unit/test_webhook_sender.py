"""Signing and sending one webhook, over httpx.MockTransport and an injected resolver:
no socket is opened, whatever address a test names."""

from __future__ import annotations

import email.utils
import ipaddress
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service import __version__
from service.webhooks import RESPONSE_KEEP, Sender, SendResult, Signer, parse_retry_after

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_dGhpcyBpcyBhbiBvbGQgc2VjcmV0IGtleQ=="
BODY = json.dumps({"type": "job.completed", "timestamp": "t", "data": {"id": "j1"}})
DNS = {"hooks.example": ["93.184.216.34"], "v6.example": ["2606:2800:220:1::248"]}

Handler = Callable[[httpx.Request], httpx.Response]


def resolver(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise OSError(-2, "Name or service not known")
    return DNS[host]


class Recorder:
    """A MockTransport that records every request and answers with ``handler``."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.handler = handler or (lambda request: httpx.Response(200, text="ok"))
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_sender(recorder: Recorder) -> Iterator[Callable[..., Sender]]:
    made: list[Sender] = []

    def make(**kw: object) -> Sender:
        options: dict[str, object] = {
            "timeout_s": 2.0,
            "resolver": resolver,
            "transport": recorder.transport,
        }
        options.update(kw)
        sender = Sender(**options)  # type: ignore[arg-type]
        made.append(sender)
        return sender

    yield make
    for sender in made:
        sender.close()


def signed(msg_id: str = "msg_1", secrets: tuple[str, ...] = (SECRET,)) -> dict[str, str]:
    return Signer(secrets).headers(msg_id, datetime.now(UTC), BODY)


# -- where the request goes ---------------------------------------------------------------


def test_http_goes_to_the_checked_ip_with_the_original_host(
    make_sender: Callable[..., Sender], recorder: Recorder
) -> None:
    result = make_sender().send("http://hooks.example/cb?job=1", signed(), BODY)
    assert result.ok and result.status_code == 200 and result.error is None
    (request,) = recorder.requests
    assert str(request.url) == "http://93.184.216.34/cb?job=1"
    assert request.headers["host"] == "hooks.example"
    assert "sni_hostname" not in request.extensions
    assert request.method == "POST"


def test_https_pins_the_ip_and_sets_sni(
    make_sender: Callable[..., Sender], recorder: Recorder
) -> None:
    make_sender().send("https://hooks.example:8443/cb", signed(), BODY)
    (request,) = recorder.requests
    assert str(request.url) == "https://93.184.216.34:8443/cb"
    assert request.headers["host"] == "hooks.example:8443"
    assert request.extensions["sni_hostname"] == "hooks.example"


def test_ipv6_target(make_sender: Callable[..., Sender], recorder: Recorder) -> None:
    make_sender().send("https://v6.example/cb", signed(), BODY)
    (request,) = recorder.requests
    assert request.url.host == "2606:2800:220:1::248"
    assert str(request.url) == "https://[2606:2800:220:1::248]/cb"
    assert request.headers["host"] == "v6.example"
    assert request.extensions["sni_hostname"] == "v6.example"


def test_literal_ip_url(make_sender: Callable[..., Sender], recorder: Recorder) -> None:
    make_sender().send("http://93.184.216.34:8080/x", signed(), BODY)
    (request,) = recorder.requests
    assert str(request.url) == "http://93.184.216.34:8080/x"
    assert request.headers["host"] == "93.184.216.34:8080"


def test_refused_address_sends_nothing(
    make_sender: Callable[..., Sender], recorder: Recorder
) -> None:
    DNS["evil.example"] = ["93.184.216.34", "169.254.169.254"]
    try:
        result = make_sender().send("http://evil.example/", signed(), BODY)
    finally:
        del DNS["evil.example"]
    assert recorder.requests == []
    assert result.status_code is None and not result.ok
    assert result.error is not None and result.error.startswith("refused:")
    assert "169.254.169.254" in result.error


def test_unresolvable_host_sends_nothing(
    make_sender: Callable[..., Sender], recorder: Recorder
) -> None:
    result = make_sender().send("http://gone.example/", signed(), BODY)
    assert recorder.requests == [] and result.error and "does not resolve" in result.error


def test_allowlist_reaches_the_sender(
    make_sender: Callable[..., Sender], recorder: Recorder
) -> None:
    DNS["internal.example"] = ["10.1.2.3"]
    try:
        closed = make_sender().send("http://internal.example/", signed(), BODY)
        opened = make_sender(allow=[ipaddress.ip_network("10.1.0.0/16")]).send(
            "http://internal.example/", signed(), BODY
        )
    finally:
        del DNS["internal.example"]
    assert closed.error and closed.error.startswith("refused:")
    assert opened.ok
    (request,) = recorder.requests
    assert request.url.host == "10.1.2.3"


def test_no_proxies_from_the_environment_and_no_redirects(
    make_sender: Callable[..., Sender],
) -> None:
    sender = make_sender()
    assert sender.client.trust_env is False
    assert sender.client.follow_redirects is False


# -- what is sent -------------------------------------------------------------------------


def test_signature_verifies_with_standardwebhooks(
    make_sender: Callable[..., Sender], recorder: Recorder
) -> None:
    make_sender().send("https://hooks.example/cb", signed("msg_abc"), BODY)
    (request,) = recorder.requests
    assert request.content == BODY.encode()
    headers = dict(request.headers)
    assert Webhook(SECRET).verify(request.content, headers) == json.loads(BODY)
    assert headers["webhook-id"] == "msg_abc"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"framejobs/{__version__}"
    assert headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD_SECRET).verify(request.content, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.content + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.content, {**headers, "webhook-id": "msg_other"})


def test_every_secret_signs() -> None:
    headers = signed(secrets=(SECRET, OLD_SECRET))
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for secret in (SECRET, OLD_SECRET):
        Webhook(secret).verify(BODY, headers)


def test_timestamp_header_is_the_signing_time() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 900_000, tzinfo=UTC)
    headers = Signer([SECRET]).headers("msg_1", when, BODY)
    assert headers["webhook-timestamp"] == str(int(when.timestamp()))
    # the same instant in another zone signs identically
    other = Signer([SECRET]).headers("msg_1", when.astimezone(UTC).astimezone(), BODY)
    assert other == headers


def test_stale_timestamp_is_rejected_by_receivers() -> None:
    old = Signer([SECRET]).headers("msg_1", datetime.now(UTC) - timedelta(minutes=10), BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(BODY, old)


def test_signer_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Signer([])


# -- what comes back ----------------------------------------------------------------------


def test_redirect_is_not_followed(make_sender: Callable[..., Sender], recorder: Recorder) -> None:
    recorder.handler = lambda request: httpx.Response(
        302, headers={"location": "http://169.254.169.254/latest/meta-data/"}
    )
    result = make_sender().send("http://hooks.example/cb", signed(), BODY)
    assert len(recorder.requests) == 1
    assert result.status_code == 302 and not result.ok and result.error is None


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_ok(make_sender: Callable[..., Sender], recorder: Recorder, status: int) -> None:
    recorder.handler = lambda request: httpx.Response(status)
    assert make_sender().send("http://hooks.example/", signed(), BODY).ok


@pytest.mark.parametrize("status", [100, 199, 300, 301, 304, 400, 404, 410, 429, 500, 503])
def test_other_statuses_are_not_ok(
    make_sender: Callable[..., Sender], recorder: Recorder, status: int
) -> None:
    recorder.handler = lambda request: httpx.Response(status)
    result = make_sender().send("http://hooks.example/", signed(), BODY)
    assert result.status_code == status and not result.ok


def test_response_kept_is_at_most_1kb_and_the_rest_is_not_read(
    make_sender: Callable[..., Sender], recorder: Recorder
) -> None:
    pulled = []

    def endless() -> Iterator[bytes]:
        for i in range(10_000):
            pulled.append(i)
            yield b"x" * 500

    recorder.handler = lambda request: httpx.Response(500, content=endless())
    result = make_sender().send("http://hooks.example/", signed(), BODY)
    assert RESPONSE_KEEP == 1024
    assert result.response == "x" * 1024
    assert len(pulled) <= 4  # stops reading once it has 1 KB


def test_short_and_non_utf8_responses(
    make_sender: Callable[..., Sender], recorder: Recorder
) -> None:
    recorder.handler = lambda request: httpx.Response(200, content=b"")
    assert make_sender().send("http://hooks.example/", signed(), BODY).response == ""
    recorder.handler = lambda request: httpx.Response(200, content="é".encode() * 600)
    kept = make_sender().send("http://hooks.example/", signed(), BODY).response
    assert kept is not None and kept == "é" * 512  # 1024 bytes, cut on a boundary
    recorder.handler = lambda request: httpx.Response(200, content=b"a" + "é".encode() * 600)
    kept = make_sender().send("http://hooks.example/", signed(), BODY).response
    assert kept is not None and kept == "a" + "é" * 511 + "\ufffd"  # half a character


@pytest.mark.parametrize(
    ("exc", "prefix"),
    [
        (httpx.ConnectTimeout, "timeout: ConnectTimeout"),
        (httpx.ReadTimeout, "timeout: ReadTimeout"),
        (httpx.WriteTimeout, "timeout: WriteTimeout"),
        (httpx.PoolTimeout, "timeout: PoolTimeout"),
        (httpx.ConnectError, "ConnectError: boom"),
        (httpx.ReadError, "ReadError: boom"),
        (httpx.RemoteProtocolError, "RemoteProtocolError: boom"),
    ],
)
def test_transport_errors_become_result_errors(
    make_sender: Callable[..., Sender],
    recorder: Recorder,
    exc: type[httpx.TransportError],
    prefix: str,
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)

    recorder.handler = fail
    result = make_sender().send("http://hooks.example/", signed(), BODY)
    assert result == SendResult(None, None, result.error, result.duration_ms)
    assert result.error is not None and result.error.startswith(prefix)
    assert not result.ok and result.duration_ms >= 0


def test_retry_after_is_read_from_the_response(
    make_sender: Callable[..., Sender], recorder: Recorder
) -> None:
    recorder.handler = lambda request: httpx.Response(503, headers={"retry-after": "30"})
    result = make_sender().send("http://hooks.example/", signed(), BODY)
    assert result.status_code == 503 and result.retry_after == 30.0
    recorder.handler = lambda request: httpx.Response(500)
    assert make_sender().send("http://hooks.example/", signed(), BODY).retry_after is None


# -- Retry-After --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("86400", 86400.0)],
)
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date() -> None:
    future = datetime.now(UTC) + timedelta(seconds=90)
    value = email.utils.format_datetime(future, usegmt=True)  # "Wed, 21 Oct 2015 07:28:00 GMT"
    seconds = parse_retry_after(value)
    assert seconds is not None and 85 <= seconds <= 90


def test_retry_after_date_without_zone_is_utc() -> None:
    future = (datetime.now(UTC) + timedelta(seconds=60)).replace(tzinfo=None)
    value = email.utils.format_datetime(future)  # "... -0000": no zone given
    seconds = parse_retry_after(value)
    assert seconds is not None and 55 <= seconds <= 60


def test_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "1.5", "Wed, 99 Foo"])
def test_retry_after_unreadable(value: str | None) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize("value", ["²", "¹2", "-5", "1.5e3", "", "   "])
def test_retry_after_that_is_not_plain_digits_or_a_date_is_ignored(value: str) -> None:
    assert parse_retry_after(value) is None
