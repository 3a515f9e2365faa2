"""PostgreSQL LISTEN: turns other processes' NOTIFYs into this process's wake-ups.

Payloads are ``kind:job_id:status``: ``job`` (a job changed; ``queued`` means work
for workers), ``cancel`` (stop that job if it runs here), ``deliveries`` (a webhook
delivery was queued or re-queued: wake the dispatcher). Processes that serve the API
listen on the channel of every change; worker-only processes on the one of what
workers act on (service.db.WORK_CHANNEL). A job that ends without a
webhook wakes no dispatcher: with N processes, waking every dispatcher on every final
state cost N delivery claims (write transactions) per job. Polling stays as the fallback, and
after a reconnect everything is woken once to catch up on what was missed.
"""

from __future__ import annotations

import logging
import os
import select
import threading

import psycopg
import sqlalchemy as sa

from service.db import CHANNEL
from service.logs import worth_logging
from service.notify import Hub

log = logging.getLogger("framejobs.listen")


def conninfo(database_url: str) -> str:
    url = sa.make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def route(hub: Hub, payload: str) -> None:
    kind, _, rest = payload.partition(":")
    job_id, _, status = rest.partition(":")
    if kind == "job":
        hub.job_changed(job_id)
        if status == "queued":
            hub.work_available()
    elif kind == "cancel":
        hub.cancel_requested(job_id)
    elif kind == "deliveries":
        hub.deliveries_due()


class Listener:
    """``idle_s``: how long the thread waits on a quiet connection before it looks
    again; stop() wakes it at once (through a pipe), so this only bounds a wait that
    nothing else would end."""

    def __init__(
        self,
        database_url: str,
        hub: Hub,
        *,
        channel: str = CHANNEL,
        retry_s: float = 1.0,
        idle_s: float = 5.0,
    ) -> None:
        self.conninfo = conninfo(database_url)
        self.hub = hub
        self.channel = channel
        self.retry_s = retry_s
        self.idle_s = idle_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fj-listen", daemon=True)
        self.connected = threading.Event()
        self._wake_r, self._wake_w = os.pipe()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop listening. Waiting in notifies() with a timeout held every shutdown
        (and every PostgreSQL test's teardown) for up to that timeout; the pipe ends
        the wait at once."""
        if self._stopping.is_set():  # stopped already: its pipe may be closed
            return
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        if not self._thread.is_alive():
            os.close(self._wake_r)
            os.close(self._wake_w)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                # A streak of failed reconnects is one line, then one every 100 tries.
                failures = 1 if self.connected.is_set() else failures + 1
                self.connected.clear()
                if worth_logging(failures):
                    name = type(exc).__name__
                    log.warning(
                        "LISTEN connection lost (%s); reconnecting (try %d)", name, failures
                    )
                self._stopping.wait(self.retry_s)
            except Exception:  # a wake-up's handler failed: this thread must not die
                self.connected.clear()
                log.exception("handling a notification failed; listening again")
                self._stopping.wait(self.retry_s)

    def _listen(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {self.channel}")
            self.connected.set()
            self._catch_up()
            while not self._stopping.is_set():
                ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], self.idle_s)
                if conn.fileno() in ready:  # notifications, or the connection's end
                    for note in conn.notifies(timeout=0):
                        route(self.hub, note.payload)

    def _catch_up(self) -> None:
        self.hub.work_available()
        self.hub.deliveries_due()
        self.hub.wake_all()
