"""The webhook dispatcher: claims due deliveries and sends them, a few at a time.

Runs in every ``serve`` and ``worker`` process. It is woken at once when this process
ends a job, and otherwise polls; claims are leases, so several dispatchers share the
outbox without sending one event twice at once.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import SQLAlchemyError

from service import deliveries
from service.claim import worker_id
from service.config import Settings
from service.db import writing
from service.deliveries import Decision
from service.errors import ServiceUnavailable
from service.logs import log_streak, worth_logging
from service.metrics import Metrics
from service.notify import Hub
from service.retry import WebhookRetry
from service.store import utcnow
from service.webhooks import Sender, SendResult, Signer

log = logging.getLogger("framejobs.webhooks")


class Dispatcher:
    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        hub: Hub,
        signer: Signer,
        sender: Sender,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.hub = hub
        self.signer = signer
        self.sender = sender
        self.metrics = metrics
        self.retry = WebhookRetry(
            schedule=tuple(settings.webhook_retry_schedule),
            jitter=settings.webhook_retry_jitter,
            max_retry_after_s=settings.webhook_max_retry_after_s,
        )
        self.id = worker_id(f"dispatch-{secrets.token_hex(4)}")
        self._capacity = settings.webhook_concurrency
        self._in_flight = 0
        self._claim_failures = 0  # in a row: logged once per streak, not once per poll
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(self._capacity, thread_name_prefix="fj-webhook")
        self._thread = threading.Thread(target=self._loop, name="fj-dispatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.hub.deliveries_due()
        self._thread.join(self.settings.webhook_timeout_s + 5)
        self._pool.shutdown(wait=True)
        self.sender.close()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            free = self._free()
            batch = self._claim(free) if free else []
            if not batch:
                self.hub.wait_for_deliveries(self.settings.webhook_poll_interval_s)
                continue
            for delivery in batch:
                with self._lock:
                    self._in_flight += 1
                self._pool.submit(self._deliver, delivery)

    def _free(self) -> int:
        with self._lock:
            return self._capacity - self._in_flight

    def _claim(self, limit: int) -> list[RowMapping]:
        try:
            with writing(self.engine) as conn:
                claimed = deliveries.claim_due(
                    conn, dispatcher=self.id, now=utcnow(), hold_s=self._hold_s, limit=limit
                )
        except (SQLAlchemyError, ServiceUnavailable):
            self._claim_failures += 1
            log_streak(log, "claiming webhook deliveries", self._claim_failures)
            self._stopping.wait(self.settings.webhook_poll_interval_s)
            return []
        self._claim_failures = 0
        return claimed

    @property
    def _hold_s(self) -> float:
        """A claim lasts long enough for one POST and recording it; a dispatcher that
        died mid-send frees it by expiry."""
        return self.settings.webhook_timeout_s * 2 + 5

    def _deliver(self, delivery: RowMapping) -> None:
        claimed = time.monotonic()
        at = utcnow()
        try:
            result = self._send(delivery, at)
            self._save(delivery, result, at, until=claimed + self._hold_s)
        finally:
            with self._lock:
                self._in_flight -= 1
            self.hub.deliveries_due()

    def _send(self, delivery: RowMapping, at: datetime) -> SendResult:
        """The receiver's answer; an error of ours before or during the send counts as
        a failed attempt, so that the retry schedule runs its course instead of the
        same error coming back each time the claim expires."""
        try:
            headers = self.signer.headers(delivery["id"], at, delivery["payload"])
            return self.sender.send(delivery["url"], headers, delivery["payload"])
        except Exception as exc:
            log.exception("delivery %s: unexpected error", delivery["id"])
            return SendResult(None, None, f"internal error: {type(exc).__name__}: {exc}"[:500], 0.0)

    def _save(self, delivery: RowMapping, result: SendResult, at: datetime, until: float) -> None:
        """Record what the receiver answered, retrying through brief database trouble
        while the claim holds. Recording it as a failure instead would send a delivered
        event again, or end it `failed`; if it cannot be recorded at all, the claim
        expires and the event is sent again (at least once, as documented)."""
        failures = 0
        while True:
            try:
                self._record(delivery, result, self._decide(delivery, result), at)
                return
            except (SQLAlchemyError, ServiceUnavailable):
                if time.monotonic() + 0.5 > until or self._stopping.is_set():
                    log.exception("delivery %s: the attempt could not be recorded", delivery["id"])
                    return
                failures += 1
                if worth_logging(failures, every=20):
                    log.warning(
                        "delivery %s: recording the attempt failed; retrying", delivery["id"]
                    )
                time.sleep(0.5)
            except Exception:  # a bug: the claim expires and the event goes again
                log.exception("delivery %s: the attempt could not be recorded", delivery["id"])
                return

    def _decide(self, delivery: RowMapping, result: SendResult) -> Decision:
        if result.ok:
            return Decision("delivered", None)
        delay = self.retry.delay(
            failures=delivery["cycle_attempts"] + 1,
            status_code=result.status_code,
            retry_after=result.retry_after,
        )
        if delay is None:
            return Decision("failed", None)
        return Decision("pending", utcnow() + timedelta(seconds=delay))

    def _record(
        self, delivery: RowMapping, result: SendResult, decision: Decision, at: datetime
    ) -> None:
        with writing(self.engine) as conn:
            saved = deliveries.record_attempt(
                conn, delivery, dispatcher=self.id, at=at, result=result, decision=decision
            )
        if not saved:
            log.warning("delivery %s: claim lost before the attempt was saved", delivery["id"])
        outcome = decision.status if decision.status != "pending" else "retry"
        log.info(
            "webhook %s attempt %d: %s -> %s",
            delivery["id"],
            delivery["attempts"] + 1,
            result.status_code or result.error,
            outcome,
        )
        if self.metrics is not None:
            self.metrics.webhook_attempts.labels(outcome).inc()
            self.metrics.webhook_seconds.observe(result.duration_ms / 1000)
        self.hub.job_changed(delivery["job_id"])
