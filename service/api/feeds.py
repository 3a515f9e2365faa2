"""Job feeds: one database read per change of a watched job, shared by every event
stream and long-poll of this process that watches it.

Each stream reading on its own cost a read per stream per wake-up and per poll
interval: 800 streams on one queued job kept a core busy and took 6 s to all see the
job end (``python -m bench.watchers``). A feed reads the job and its new events once
and hands the same update to every stream's queue.

No event is lost to a stream that joins late: it joins the feed first, then reads
its own backlog (everything after its ``Last-Event-ID``); whatever the feed read
before it joined is in that backlog, whatever commits later the feed reads and hands
to it. A stream drops what it has already sent (by version).

A long-poll needs only the job row, not the events: it joins with ``latest=True``
and gets the feed's last read at once, so a change the feed read just before the
poll joined is not waited out (the poll compares versions itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import RowMapping

from service.notify import Hub
from service.schemas import TERMINAL


@dataclass(frozen=True)
class Update:
    """A job's events after some version, and the job row read just before them."""

    events: list[RowMapping]
    row: RowMapping | None

    @property
    def final(self) -> bool:
        return self.row is None or self.row["status"] in TERMINAL


log = logging.getLogger("framejobs.api")
Reader = Callable[[str, int], Awaitable[Update]]
Queue = asyncio.Queue[Update | None]  # None: the feed has ended


@dataclass
class _Feed:
    queues: set[Queue] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    last: Update | None = None


class Feeds:
    def __init__(self, read: Reader, hub: Hub, poll_s: float) -> None:
        self._read = read
        self._hub = hub
        self._poll_s = poll_s
        self._feeds: dict[str, _Feed] = {}

    @property
    def watchers(self) -> int:
        """Open event streams and long-polls (read by the metrics scrape's thread)."""
        return sum(len(feed.queues) for feed in list(self._feeds.values()))

    @contextlib.asynccontextmanager
    async def watch(
        self, job_id: str, cursor: int, *, latest: bool = False
    ) -> AsyncIterator[Queue]:
        """A queue of the job's updates from now on (read the backlog after joining);
        ``latest``: starting with the feed's last update, if it has one."""
        feed = self._feeds.get(job_id)
        if feed is None or feed.task is None or feed.task.done():
            feed = self._feeds[job_id] = _Feed()
            feed.task = asyncio.create_task(self._run(job_id, feed, cursor))
        queue: Queue = asyncio.Queue()
        if latest and feed.last is not None:
            queue.put_nowait(feed.last)
        feed.queues.add(queue)
        try:
            yield queue
        finally:
            feed.queues.discard(queue)
            if not feed.queues and feed.task is not None:
                # Forget it now: a stream that joins while it winds down gets a new one.
                if self._feeds.get(job_id) is feed:
                    del self._feeds[job_id]
                feed.task.cancel()

    async def _run(self, job_id: str, feed: _Feed, cursor: int) -> None:
        waiter = self._hub.subscribe(job_id)
        try:
            while not self._hub.closing:
                update = feed.last = await self._read(job_id, cursor)
                for queue in feed.queues:
                    queue.put_nowait(update)
                if update.events:
                    cursor = int(update.events[-1]["version"])
                if update.final:
                    return
                await waiter.wait(self._poll_s)
        except Exception as exc:  # the database went away: streams end, clients resume
            log.warning("event feed of job %s ended: %s: %s", job_id, type(exc).__name__, exc)
        finally:
            self._hub.unsubscribe(job_id, waiter)
            if self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
            for queue in feed.queues:
                queue.put_nowait(None)
