"""The ``framejobs`` command: serve, worker, migrate."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
import uvicorn

from service.config import Settings
from service.db import make_engine, upgrade
from service.errors import ServiceUnavailable
from service.logs import configure_logging
from service.prune import parse_age, prune
from service.runtime import Runtime
from service.secrets import stored_secret
from service.store import utcnow

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
log = logging.getLogger("framejobs")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="In-process worker slots (0: API only).")
    ] = None,
    migrate: Annotated[
        bool | None,
        typer.Option(help="Upgrade the schema at start (default: yes on SQLite, no otherwise)."),
    ] = None,
    grace: Annotated[
        float | None, typer.Option(help="Seconds running jobs get on shutdown.")
    ] = None,
) -> None:
    """Run the HTTP API, with in-process workers unless --workers 0."""
    from service.api.app import create_app

    settings = _settings(grace)
    configure_logging(settings.log_level)
    application = create_app(
        settings,
        workers=workers,
        migrate=settings.is_sqlite if migrate is None else migrate,
    )
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    _CleanExitServer(config).run()


class _CleanExitServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down gracefully, so the process
    ends "killed by signal". A drained, orderly stop is a success: exit 0."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once.")] = None,
    grace: Annotated[
        float | None, typer.Option(help="Seconds running jobs get on shutdown.")
    ] = None,
) -> None:
    """Claim and run jobs (no API). SIGTERM/SIGINT stop it gracefully."""
    settings = _settings(grace)
    configure_logging(settings.log_level)
    slots = concurrency if concurrency is not None else max(settings.workers, 1)
    if slots < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--concurrency")
    try:
        runtime = Runtime.start(settings, workers=slots, migrate=False)
    except ServiceUnavailable as exc:
        log.error("cannot start: %s", exc.detail)
        raise typer.Exit(1) from exc
    stop = threading.Event()
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    log.info("worker running; send SIGTERM to stop")
    stop.wait()
    log.info("stopping: running jobs get %.0f s", settings.shutdown_grace_s)
    runtime.stop()


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest version."""
    settings = Settings()
    configure_logging(settings.log_level)
    engine = make_engine(settings)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    typer.echo("schema at head")


@app.command("prune")
def prune_command(
    older_than: Annotated[str, typer.Option(help="Age of finished jobs to delete: 7d, 12h, 30m.")],
) -> None:
    """Delete finished jobs (and their data) that ended longer ago than --older-than."""
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from exc
    settings = Settings()
    configure_logging(settings.log_level)
    engine = make_engine(settings)
    try:
        deleted = prune(engine, before=utcnow() - age)
    finally:
        engine.dispose()
    typer.echo(f"deleted {deleted} finished job(s)")


@app.command("webhook-secret")
def webhook_secret() -> None:
    """Print the webhook signing secret(s) receivers verify signatures with."""
    settings = Settings()
    if settings.webhook_secrets:
        typer.echo("\n".join(settings.webhook_secrets))
        return
    engine = make_engine(settings)
    try:
        stored = stored_secret(engine)
    finally:
        engine.dispose()
    if stored is None:
        typer.echo("no secret yet: `framejobs serve` generates one on first start", err=True)
        raise typer.Exit(1)
    typer.echo(stored)


def _settings(grace: float | None) -> Settings:
    settings = Settings()
    if grace is not None:
        settings = settings.model_copy(update={"shutdown_grace_s": grace})
    return settings


if __name__ == "__main__":
    app()
