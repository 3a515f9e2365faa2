"""The FastAPI application. The entry point builds the settings and hands them in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
import httpx
from fastapi import FastAPI

from service import __version__
from service.api import jobs, meta, openapi, problems, webhooks
from service.api.feeds import Feeds
from service.api.methods import HeadAsGet
from service.config import Settings
from service.metrics import WatcherCollector
from service.runtime import Runtime
from service.ssrf import Resolver, system_resolver


def create_app(
    settings: Settings,
    *,
    workers: int | None = None,
    migrate: bool = False,
    resolver: Resolver = system_resolver,
    transport: httpx.BaseTransport | None = None,
    runtime: Runtime | None = None,
) -> FastAPI:
    """``workers``: in-process worker slots (default: the setting); ``migrate``: upgrade
    the schema at start (the embedded default does; scaled-out deployments migrate once).
    ``resolver`` and ``transport`` replace DNS and the network for webhooks in tests.
    ``runtime``: one already started (``framejobs serve`` starts it before it listens,
    so that a start that fails is one line, not a traceback from the lifespan)."""
    slots = settings.workers if workers is None else workers

    def start() -> Runtime:
        if runtime is not None:
            return runtime
        return Runtime.start(
            settings, workers=slots, migrate=migrate, resolver=resolver, transport=transport
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = await anyio.to_thread.run_sync(start)
        app.state.services = started.services
        app.state.metrics = started.metrics.registry
        app.state.runtime = started
        app.state.feeds = feeds = Feeds(
            partial(jobs.read_changes, started.services), started.services.hub, jobs.DB_POLL_S
        )
        watchers = WatcherCollector(lambda: feeds.watchers)
        started.metrics.registry.register(watchers)
        try:
            yield
        finally:
            started.metrics.registry.unregister(watchers)
            await anyio.to_thread.run_sync(started.stop)

    app = FastAPI(
        title="framejobs",
        version=__version__,
        summary="Durable background jobs over data frames, run on DuckDB.",
        lifespan=lifespan,
        # No redirect for a trailing slash: Starlette builds it from the Host header,
        # which a client controls; an unknown path is a plain 404 problem instead.
        redirect_slashes=False,
    )
    problems.install(app)
    app.add_exception_handler(jobs.AllSeen, jobs.all_seen)
    app.add_middleware(HeadAsGet)  # outermost: everything inside sees a GET
    app.include_router(jobs.router)
    app.include_router(webhooks.router)
    app.include_router(meta.router)
    openapi.install(app)
    return app
