"""Builds and tears down what a process runs: engine, pipelines, DuckDB, workers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.config import Settings
from service.db import make_engine, schema_at_head, upgrade
from service.errors import ServiceUnavailable
from service.execute import Engines
from service.metrics import Metrics
from service.notify import Hub
from service.pipelines import load_registry
from service.submit import Services
from service.worker import Worker

log = logging.getLogger("framejobs")


@dataclass
class Runtime:
    services: Services
    metrics: Metrics
    worker: Worker | None

    @classmethod
    def start(cls, settings: Settings, *, workers: int, migrate: bool) -> Runtime:
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
        metrics = Metrics(engine)
        services = Services(engine, settings, registry, engines, hub, metrics)
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
        log.info("started: %d worker slot(s), database %s", workers, engine.url.render_as_string())
        return cls(services, metrics, worker)

    def stop(self, grace_s: float | None = None) -> None:
        grace = self.services.settings.shutdown_grace_s if grace_s is None else grace_s
        if self.worker is not None:
            self.worker.stop(grace)
        self.services.engines.close()
        self.services.engine.dispose()
