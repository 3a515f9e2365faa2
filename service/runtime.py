"""Builds and tears down what a process runs: engine, pipelines, DuckDB, workers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import duckdb
import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from service import spool
from service.checkpoint import Checkpointer
from service.config import Settings
from service.db import CHANNEL, WORK_CHANNEL, make_engine
from service.dispatch import Dispatcher
from service.errors import ServiceUnavailable, StartupError, first_line
from service.execute import Engines
from service.loopread import Reader
from service.metrics import Metrics
from service.notify import Hub
from service.pglisten import Listener
from service.pipelines import Registry, load_registry
from service.revisions import check_schema, upgrade
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
    checkpointer: Checkpointer | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        workers: int,
        migrate: bool,
        api: bool = True,
        resolver: Resolver = system_resolver,
        transport: httpx.BaseTransport | None = None,
    ) -> Runtime:
        """``api``: the process serves the API (False: a worker process, which needs
        to hear of less). ``resolver`` and ``transport`` replace DNS and the network in
        tests.

        Everything that can fail (database, schema, pipelines, secrets) is checked
        before any thread starts, so a start that fails claims no job: it raises
        StartupError and leaves nothing running."""
        engine = make_engine(settings, background_checkpoints=True)
        engines: Engines | None = None
        try:
            _check_database(engine, settings, migrate=migrate)
            spool.sweep(spool.ensure(settings.spool_dir))
            registry = _registry(settings)
            engines = _engines(settings, workers)
            runtime = cls._build(
                settings,
                engine,
                registry,
                engines,
                workers=workers,
                api=api,
                resolver=resolver,
                transport=transport,
            )
        except BaseException:
            if engines is not None:
                engines.close()
            engine.dispose()
            raise
        runtime._start_threads()
        log.info("started: %d worker slot(s), database %s", workers, engine.url.render_as_string())
        return runtime

    @classmethod
    def _build(
        cls,
        settings: Settings,
        engine: Engine,
        registry: Registry,
        engines: Engines,
        *,
        workers: int,
        api: bool,
        resolver: Resolver,
        transport: httpx.BaseTransport | None,
    ) -> Runtime:
        hub = Hub()
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
        dispatcher = _dispatcher(services, transport) if settings.webhook_dispatch else None
        listener = checkpointer = None
        if engine.dialect.name == "postgresql":
            channel = CHANNEL if api else WORK_CHANNEL
            listener = Listener(settings.database_url, hub, channel=channel)
        else:
            checkpointer = Checkpointer(engine)
        return cls(services, metrics, worker, dispatcher, listener, checkpointer)

    def _start_threads(self) -> None:
        for part in (self.checkpointer, self.listener, self.worker, self.dispatcher):
            if part is not None:
                part.start()

    def stop(self, grace_s: float | None = None) -> None:
        grace = self.services.settings.shutdown_grace_s if grace_s is None else grace_s
        if self.worker is not None:
            self.worker.stop(grace)
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.listener is not None:
            self.listener.stop()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.services.engines.close()
        if self.services.reader is not None:
            self.services.reader.close()
        self.services.engine.dispose()


def _check_database(engine: Engine, settings: Settings, *, migrate: bool) -> None:
    try:
        if migrate:
            upgrade(engine)
        check_schema(engine)
        if settings.is_sqlite:
            _check_writable(engine)
    except ServiceUnavailable as exc:
        raise StartupError(exc.detail) from exc
    except SQLAlchemyError as exc:
        raise StartupError(f"cannot use the database: {first_line(exc)}") from exc


def _check_writable(engine: Engine) -> None:
    """A read-only SQLite file (or folder) would pass every read and fail each write:
    refuse to start rather than answer 503 to every submit."""
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = version_num"))
    except SQLAlchemyError as exc:
        reason = first_line(getattr(exc, "orig", None) or exc)
        raise StartupError(f"the database cannot be written: {reason}") from exc


def _engines(settings: Settings, workers: int) -> Engines:
    try:
        return Engines(settings, job_slots=workers)
    except duckdb.Error as exc:
        raise StartupError(
            f"DuckDB refused its settings (FRAMEJOBS_DUCKDB_*): {first_line(exc)}"
        ) from exc


def _registry(settings: Settings) -> Registry:
    try:
        return load_registry(settings)
    except StartupError:
        raise
    except Exception as exc:
        raise StartupError(f"cannot load the pipelines: {type(exc).__name__}: {exc}") from exc


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
