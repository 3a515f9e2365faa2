"""Builds and tears down what a process runs: engine, pipelines, DuckDB, workers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from sqlalchemy.engine import Engine

from service.config import Settings
from service.db import make_engine, schema_at_head, upgrade
from service.dispatch import Dispatcher
from service.errors import ServiceUnavailable
from service.execute import Engines
from service.loopread import Reader
from service.metrics import Metrics
from service.notify import Hub
from service.pglisten import Listener
from service.pipelines import load_registry
from service.secrets import signing_secrets
from service.ssrf import Resolver, system_resolver
from service.submit import Services
from service.webhooks import Sender, Signer
from service.worker import Worker

log = logging.getLogger("framejobs")


@dataclass
class Runtime:
    services: Services
    metrics: Metrics
    worker: Worker | None
    dispatcher: Dispatcher | None
    listener: Listener | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        workers: int,
        migrate: bool,
        resolver: Resolver = system_resolver,
        transport: httpx.BaseTransport | None = None,
    ) -> Runtime:
        """``resolver`` and ``transport`` replace DNS and the network in tests."""
        engine = make_engine(settings)
        if migrate:
            upgrade(engine)
        elif not schema_at_head(engine):
            engine.dispose()
            raise ServiceUnavailable("the database schema is not at head; run `framejobs migrate`")
        settings.spool_dir.mkdir(parents=True, exist_ok=True)
        registry = load_registry(settings)
        engines = Engines(settings, job_slots=workers)
        hub = Hub()
        listener = None
        if engine.dialect.name == "postgresql":
            listener = Listener(settings.database_url, hub)
            listener.start()
        metrics = Metrics(engine)
        services = Services(
            engine,
            settings,
            registry,
            engines,
            hub,
            metrics,
            resolver,
            keep_inputs=workers > 0,
            reader=_reader(engine),
        )
        worker = None
        if workers > 0:
            worker = Worker(
                engine=engine,
                settings=settings,
                registry=registry,
                engines=engines,
                hub=hub,
                concurrency=workers,
                metrics=metrics,
            )
            worker.start()
        dispatcher = None
        if settings.webhook_dispatch:
            dispatcher = _dispatcher(services, transport)
            dispatcher.start()
        log.info("started: %d worker slot(s), database %s", workers, engine.url.render_as_string())
        return cls(services, metrics, worker, dispatcher, listener)

    def stop(self, grace_s: float | None = None) -> None:
        grace = self.services.settings.shutdown_grace_s if grace_s is None else grace_s
        if self.worker is not None:
            self.worker.stop(grace)
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.listener is not None:
            self.listener.stop()
        self.services.engines.close()
        if self.services.reader is not None:
            self.services.reader.close()
        self.services.engine.dispose()


def _reader(engine: Engine) -> Reader:
    reader = Reader(engine)
    if not reader.open():
        log.warning("the event loop's read connection could not be opened yet; retrying later")
    return reader


def _dispatcher(services: Services, transport: httpx.BaseTransport | None) -> Dispatcher:
    settings = services.settings
    sender = Sender(
        timeout_s=settings.webhook_timeout_s,
        allow=settings.webhook_allow_networks,
        resolver=services.resolver,
        transport=transport,
        max_connections=settings.webhook_concurrency,
    )
    return Dispatcher(
        engine=services.engine,
        settings=settings,
        hub=services.hub,
        signer=Signer(signing_secrets(services.engine, settings)),
        sender=sender,
        metrics=services.metrics,
    )
