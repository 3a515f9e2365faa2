"""The ``framejobs`` command: serve, worker, migrate."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import uvicorn
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from service import client as client_api
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


ServerURL = Annotated[
    str, typer.Option("--url", envvar="FRAMEJOBS_URL", help="The service's base URL.")
]


@app.command()
def submit(
    pipeline: Annotated[str, typer.Argument(help="Pipeline name (see GET /pipelines).")],
    frame: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="CSV, NDJSON, Parquet or Arrow file."),
    ],
    url: ServerURL = "http://127.0.0.1:8000",
    params: Annotated[str | None, typer.Option(help="Pipeline params as JSON.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the result here when done.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Result format for --out.")] = "parquet",
    wait: Annotated[
        bool, typer.Option(help="Follow the job to its end with a progress bar.")
    ] = True,
) -> None:
    """Upload a frame as a job; follow it with a progress bar; save the result."""
    spec: dict[str, object] = {"pipeline": pipeline}
    if params:
        spec["params"] = json.loads(params)
    with httpx.Client(base_url=url, timeout=60) as client:
        try:
            job = client_api.submit_file(client, spec, frame)
            typer.echo(f"job {job['id']} {job['status']}")
            if not wait:
                return
            job = _follow_with_bar(client, job["id"])
            if job["status"] != "completed":
                error = job.get("error") or {}
                typer.echo(f"job {job['id']} {job['status']}: {error.get('message', '')}", err=True)
                raise typer.Exit(1)
            if out is not None:
                size = client_api.download(client, job["id"], fmt, out)
                typer.echo(f"result: {job['result']['rows']} rows -> {out} ({size} bytes)")
        except client_api.ClientError as exc:
            typer.echo(f"refused: {exc}", err=True)
            raise typer.Exit(2) from exc


def _follow_with_bar(client: httpx.Client, job_id: str) -> dict[str, Any]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("queued", total=100)

        def show(job: dict[str, Any]) -> None:
            progress = job.get("progress") or {}
            percent = progress.get("percent") if isinstance(progress, dict) else None
            done = 100 if job["status"] == "completed" else percent
            bar.update(task, description=str(job["status"]), completed=done or 0)

        return client_api.follow(client, job_id, show)


jobs_app = typer.Typer(no_args_is_help=True, help="Look at and cancel jobs.")
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list(
    url: ServerURL = "http://127.0.0.1:8000",
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only jobs of this pipeline.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
) -> None:
    """The newest jobs, one line each."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for job in client_api.list_jobs(client, status=status, pipeline=pipeline, page_size=limit):
            typer.echo(f"{job['id']}  {job['status']:<9}  {job['pipeline']}  {job['created_at']}")


@jobs_app.command("show")
def jobs_show(job_id: str, url: ServerURL = "http://127.0.0.1:8000") -> None:
    """One job as JSON."""
    with httpx.Client(base_url=url, timeout=30) as client:
        try:
            typer.echo(json.dumps(client_api.job_of(client, job_id), indent=2))
        except client_api.ClientError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: ServerURL = "http://127.0.0.1:8000") -> None:
    """Cancel a job (queued: at once; running: it is interrupted)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        try:
            job = client_api.cancel(client, job_id)
        except client_api.ClientError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc
    typer.echo(f"job {job['id']} {job['status']}")


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
