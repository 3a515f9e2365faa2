"""In-process wake-ups between the API and the worker threads of one process.

A submit wakes idle workers; a job change wakes long-polls and event streams; a
cancel reaches the worker thread running the job at once. Other processes learn the
same things by polling the database (and, on PostgreSQL, by LISTEN/NOTIFY).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable


class AsyncWaiter:
    """An asyncio.Event that any thread may set."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, seconds: float) -> bool:
        """True when set within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._work_pending = 0
        self._waiters: defaultdict[str, set[AsyncWaiter]] = defaultdict(set)
        self._cancel_listeners: list[Callable[[str], None]] = []
        self._deliveries = threading.Event()
        self._closing = False

    # -- work --------------------------------------------------------------------------
    def work_available(self, count: int = 1) -> None:
        with self._work:
            self._work_pending += count
            self._work.notify(count)

    def wait_for_work(self, timeout: float) -> None:
        with self._work:
            if self._work_pending == 0:
                self._work.wait(timeout)
            self._work_pending = max(0, self._work_pending - 1)

    def wake_all(self) -> None:
        with self._work:
            self._work.notify_all()

    # -- webhook deliveries --------------------------------------------------------------
    def deliveries_due(self) -> None:
        self._deliveries.set()

    def wait_for_deliveries(self, timeout: float) -> None:
        self._deliveries.wait(timeout)
        self._deliveries.clear()

    # -- job changes -------------------------------------------------------------------
    def subscribe(self, job_id: str) -> AsyncWaiter:
        waiter = AsyncWaiter()
        with self._lock:
            self._waiters[job_id].add(waiter)
        return waiter

    def unsubscribe(self, job_id: str, waiter: AsyncWaiter) -> None:
        with self._lock:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[job_id]

    @property
    def closing(self) -> bool:
        """The server is shutting down: long-polls and event streams should end."""
        return self._closing

    def close_streams(self) -> None:
        """End every long-poll and event stream now (they would otherwise hold the
        server's shutdown until it cancels them, logging each as an error)."""
        with self._lock:
            self._closing = True
            waiters = [w for group in self._waiters.values() for w in group]
        for waiter in waiters:
            waiter.set()

    def job_changed(self, job_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for waiter in waiters:
            waiter.set()

    # -- cancels -----------------------------------------------------------------------
    def on_cancel(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            self._cancel_listeners.append(listener)

    def cancel_requested(self, job_id: str) -> None:
        with self._lock:
            listeners = list(self._cancel_listeners)
        for listener in listeners:
            listener(job_id)
        self.job_changed(job_id)
