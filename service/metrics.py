"""Prometheus metrics, on a registry of their own (built by the entry point)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from service.db import reading
from service.models import job_table


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.submitted = Counter(
            "framejobs_jobs_submitted", "Jobs accepted", ["pipeline"], registry=self.registry
        )
        self.finished = Counter(
            "framejobs_attempts_finished",
            "Attempts ended, by outcome",
            ["pipeline", "status"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "framejobs_attempt_seconds",
            "Wall time of one attempt",
            ["pipeline"],
            registry=self.registry,
            buckets=(0.005, 0.02, 0.1, 0.5, 1, 5, 30, 120, 600, 3600),
        )
        self.webhook_attempts = Counter(
            "framejobs_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, retry, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "framejobs_webhook_attempt_seconds",
            "Duration of one webhook POST",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
        )
        self.registry.register(_QueueCollector(engine))


class _QueueCollector(Collector):
    """Queued and running jobs (cheap: both are served by partial indexes)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "framejobs_jobs", "Jobs not yet ended, by status", labels=["status"]
        )
        c = job_table.c
        query = (
            sa.select(c.status, sa.func.count())
            .where(c.status.in_(("queued", "running")))
            .group_by(c.status)
        )
        counts = {"queued": 0, "running": 0}
        try:
            with reading(self.engine) as conn:
                counts.update({str(status): int(n) for status, n in conn.execute(query).all()})
        except Exception:  # a scrape must not fail because the database is away
            return
        for status, n in counts.items():
            family.add_metric([status], n)
        yield family


class WatcherCollector(Collector):
    """Open event streams and long-polls of this API process."""

    def __init__(self, count: Callable[[], int]) -> None:
        self.count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "framejobs_watchers", "Open event streams and long-polls", value=self.count()
        )
