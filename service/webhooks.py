"""Sending one webhook: Standard Webhooks signatures, and an HTTP POST that connects
only to the address the SSRF guard checked (no redirects, no proxies from the env)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from service import __version__, ssrf
from service.deadline import Deadline
from service.ssrf import IPNetwork, Resolver, UnsafeURL

RESPONSE_KEEP = 1024


class Signer:
    """Signs with every configured secret, so receivers can rotate without downtime."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is needed")
        self._hooks = [Webhook(secret) for secret in secrets]

    def headers(self, msg_id: str, when: datetime, body: str) -> dict[str, str]:
        when = when.astimezone(UTC)
        signatures = " ".join(hook.sign(msg_id, when, body) for hook in self._hooks)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signatures,
            "content-type": "application/json",
            "user-agent": f"framejobs/{__version__}",
        }


@dataclass(frozen=True)
class SendResult:
    status_code: int | None
    response: str | None
    error: str | None
    duration_ms: float
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    """POSTs events. ``transport`` lets tests swap the network for httpx.MockTransport."""

    def __init__(
        self,
        *,
        timeout_s: float,
        allow: Sequence[IPNetwork] = (),
        resolver: Resolver = ssrf.system_resolver,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 16,
    ) -> None:
        self.allow = list(allow)
        self.resolver = resolver
        self.timeout_s = timeout_s
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,
            transport=transport,
            # no keep-alive: each attempt connects, so its Deadline sees the socket
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=0),
        )

    def close(self) -> None:
        self.client.close()

    def send(self, url: str, headers: dict[str, str], body: str) -> SendResult:
        started = time.monotonic()
        try:
            target = ssrf.check(url, allow=self.allow, resolver=self.resolver)
        except UnsafeURL as exc:
            return SendResult(None, None, f"refused: {exc.detail}", _ms(started))
        try:
            request = self._pinned_request(url, target, headers, body)
        except (httpx.InvalidURL, ValueError) as exc:  # a failed attempt, recorded as such
            return SendResult(None, None, f"invalid URL: {exc}", _ms(started))
        with Deadline(self.timeout_s) as deadline:
            request.extensions["trace"] = deadline.trace
            try:
                response = self.client.send(request, stream=True)
                try:
                    text = _head(response)
                finally:
                    response.close()
            except httpx.TimeoutException as exc:
                return SendResult(None, None, f"timeout: {type(exc).__name__}", _ms(started))
            except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL: a bad Location
                if deadline.expired:
                    error = f"timeout: the attempt took longer than {self.timeout_s:g} s"
                    return SendResult(None, None, error, _ms(started))
                return SendResult(None, None, f"{type(exc).__name__}: {exc}", _ms(started))
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return SendResult(response.status_code, text, None, _ms(started), retry_after)

    def _pinned_request(
        self, url: str, target: ssrf.Target, headers: dict[str, str], body: str
    ) -> httpx.Request:
        original = httpx.URL(url)
        pinned = original.copy_with(host=str(target.address))
        extensions = {"sni_hostname": target.host} if original.scheme == "https" else {}
        all_headers = {**headers, "host": original.netloc.decode("ascii")}
        return self.client.build_request(
            "POST", pinned, content=body.encode(), headers=all_headers, extensions=extensions
        )


def _head(response: httpx.Response) -> str:
    kept = b""
    for chunk in response.iter_bytes():
        kept += chunk
        if len(kept) >= RESPONSE_KEEP:
            break
    return kept[:RESPONSE_KEEP].decode("utf-8", errors="replace")


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit also takes "²"
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
