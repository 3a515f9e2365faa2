"""Job feeds: every stream of a job shares one read per change; a stream that joins
late loses nothing. The database read is replaced by a scripted job here (the real
one is exercised by the event-stream tests against SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from service.api.feeds import Feeds, Queue, Update
from service.notify import Hub


class ScriptedJob:
    """A job whose versions 1..n are status events; reads see what was "committed",
    and each commit wakes the hub as a real state change does."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.events: list[dict[str, Any]] = []
        self.reads = 0

    def commit(self, status: str) -> None:
        self.events.append({"version": len(self.events) + 1, "status": status})
        self.hub.job_changed("j")

    async def read(self, job_id: str, cursor: int) -> Update:
        self.reads += 1
        await asyncio.sleep(0)  # a read yields, as the real one does
        row = {"version": len(self.events), "status": self.events[-1]["status"]}
        return Update([e for e in self.events if e["version"] > cursor], row)  # type: ignore[arg-type]


def _feeds_of_one_job(status: str) -> tuple[ScriptedJob, Feeds]:
    """Feeds over job "j", whose first event has ``status``; only wake-ups (no
    polling within a test) make them read again."""
    hub = Hub()
    job = ScriptedJob(hub)
    job.commit(status)
    return job, Feeds(job.read, hub, poll_s=60)


async def _next(queue: Queue) -> Update:
    """The queue's next update, which must come (soon) and not be the end."""
    update = await asyncio.wait_for(queue.get(), 5)
    assert update is not None
    return update


async def _drain(queue: Queue, until: str) -> list[int]:
    seen: list[int] = []
    while (update := await asyncio.wait_for(queue.get(), 5)) is not None:
        seen.extend(e["version"] for e in update.events)
        if any(e["status"] == until for e in update.events):
            break
    return seen


@pytest.mark.anyio
async def test_one_read_per_change_for_any_number_of_streams() -> None:
    job, feeds = _feeds_of_one_job("queued")
    async with contextlib.AsyncExitStack() as stack:
        queues = [await stack.enter_async_context(feeds.watch("j", 0)) for _ in range(50)]
        seen: list[list[int]] = [[] for _ in queues]
        for status in ("running", "completed", None):
            for versions, queue in zip(seen, queues, strict=True):
                versions.extend(e["version"] for e in (await _next(queue)).events)
            if status is not None:
                job.commit(status)
    assert job.reads == 3  # one per change, not one per stream and change
    assert all(versions == [1, 2, 3] for versions in seen)


@pytest.mark.anyio
async def test_a_stream_that_joins_late_reads_its_backlog_and_loses_nothing() -> None:
    job, feeds = _feeds_of_one_job("queued")
    async with feeds.watch("j", 0) as early:
        await _next(early)
        job.commit("running")
        await _next(early)
        async with feeds.watch("j", 0) as late:
            backlog = await job.read("j", 0)  # what the stream does after joining
            job.commit("completed")
            late_seen = [e["version"] for e in backlog.events]
            late_seen += [v for v in await _drain(late, "completed") if v > late_seen[-1]]
            assert late_seen == [1, 2, 3]
            assert await _drain(early, "completed") == [3]


@pytest.mark.anyio
async def test_the_feed_ends_every_stream_when_the_server_closes_them() -> None:
    job, feeds = _feeds_of_one_job("running")
    async with feeds.watch("j", 0) as queue:
        await _next(queue)
        job.hub.close_streams()
        assert await asyncio.wait_for(queue.get(), 5) is None


@pytest.mark.anyio
async def test_a_stream_that_joins_as_the_last_one_leaves_gets_a_live_feed() -> None:
    job, feeds = _feeds_of_one_job("queued")
    async with feeds.watch("j", 0) as first:
        await _next(first)
    async with feeds.watch("j", 0) as second:  # the first feed is still winding down
        await _next(second)
        job.commit("completed")
        assert await _drain(second, "completed") == [2]


@pytest.mark.anyio
async def test_a_long_poll_that_joins_gets_the_last_read_at_once_without_reading() -> None:
    job, feeds = _feeds_of_one_job("queued")
    async with feeds.watch("j", 0) as stream:
        await _next(stream)
        job.commit("running")  # read by the feed before the long-poll joins
        await _next(stream)
        reads = job.reads
        async with feeds.watch("j", 1, latest=True) as poll:
            update = poll.get_nowait()
            assert update is not None and update.row is not None
            assert update.row["version"] == 2
        assert job.reads == reads
