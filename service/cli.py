"""The ``framejobs`` command: serve, worker, migrate, prune, webhook-secret, and a
client (submit, jobs list/show/cancel)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
import uvicorn
from alembic.util import CommandError
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from service import client as client_api
from service.config import MAX_SLOTS, Settings
from service.db import make_engine
from service.errors import FramejobsError, first_line
from service.logs import configure_logging
from service.prune import parse_age, prune
from service.revisions import check_schema, upgrade
from service.runtime import Runtime
from service.secrets import stored_secret
from service.store import utcnow

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
log = logging.getLogger("framejobs")
# SIGHUP too: closing the terminal of a foreground `framejobs serve` sends it.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to bind.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(min=0, max=MAX_SLOTS, help="In-process worker slots (0: API only)."),
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

    settings = _settings(shutdown_grace_s=grace, workers=workers)
    configure_logging(settings.log_level)
    # Listen first: a port that is taken must stop the start before any job is claimed.
    listener = _listen(host, port)
    early = _EarlySignals()
    with _fatal("cannot start"):
        runtime = Runtime.start(
            settings,
            workers=settings.workers,
            migrate=settings.is_sqlite if migrate is None else migrate,
        )
    address, bound_port = listener.getsockname()[:2]
    shown = f"[{address}]" if ":" in address else address
    log.info("listening on http://%s:%d", shown, bound_port)  # the port --port 0 got
    config = uvicorn.Config(
        create_app(settings, runtime=runtime),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    _CleanExitServer(config, runtime, early).run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        _die(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)
    return sock


class _EarlySignals:
    """Stop signals that arrive while the service starts, kept for the handlers that
    follow: its workers may already run jobs then, and the default action would kill
    the process and leave them `running` until a rescue. A second one does kill it (a
    start stuck on a slow import or a locked database can still be given up).

    ``signals``: the stop signals this process handles. One it was started ignoring
    (``nohup`` ignores SIGHUP) stays ignored."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.signals = [s for s in _STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
        for sig in self.signals:
            signal.signal(sig, self._keep)

    def _keep(self, sig: int, _: Any) -> None:
        self.received.append(sig)
        if len(self.received) > 1:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        log.warning("%s while starting: stopping once started (again: at once)", _name(sig))


def _name(sig: int) -> str:
    return signal.Signals(sig).name


class _CleanExitServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down gracefully, so the process
    ends "killed by signal". A drained, orderly stop is a success: exit 0. A second
    signal ends the workers' grace period at once."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, early: _EarlySignals) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.early = early

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in self.early.signals}
        for sig in self.early.received:
            self._on_signal(sig, None)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: Any) -> None:
        if self.should_exit and self.runtime.worker is not None:
            self.runtime.worker.hurry()
        # Event streams end (clients resume with Last-Event-ID), long-polls answer now.
        # From another thread: this handler may have interrupted one holding the hub's lock.
        threading.Thread(target=self.runtime.services.hub.close_streams, daemon=True).start()
        self.handle_exit(sig, frame)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=MAX_SLOTS, help="Jobs run at once.")
    ] = None,
    grace: Annotated[
        float | None, typer.Option(help="Seconds running jobs get on shutdown.")
    ] = None,
) -> None:
    """Claim and run jobs (no API). SIGTERM, SIGINT, SIGHUP: stop gracefully; twice: at once."""
    settings = _settings(shutdown_grace_s=grace)
    configure_logging(settings.log_level)
    slots = concurrency if concurrency is not None else max(settings.workers, 1)
    early = _EarlySignals()
    with _fatal("cannot start"):
        runtime = Runtime.start(settings, workers=slots, migrate=False)
    stop = threading.Event()

    def on_signal(*_: Any) -> None:
        if stop.is_set() and runtime.worker is not None:
            runtime.worker.hurry()
        stop.set()

    for sig in early.signals:
        signal.signal(sig, on_signal)
    for _ in early.received:
        on_signal()
    log.info("worker running; send SIGTERM to stop")
    stop.wait()
    log.info("stopping: running jobs get %.0f s", settings.shutdown_grace_s)
    runtime.stop()


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest version."""
    settings = _settings()
    configure_logging(settings.log_level)
    with _database(settings, "cannot migrate") as engine:
        upgrade(engine)
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
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help=f"Result format for --out: {', '.join(client_api.FORMATS)} "
            "(default: from the --out file's extension, else parquet).",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Follow the job to its end with a progress bar.")
    ] = True,
) -> None:
    """Upload a frame as a job; follow it with a progress bar; save the result."""
    spec: dict[str, object] = {"pipeline": pipeline}
    if params:
        spec["params"] = _json_option(params, "--params")
    fmt = fmt or client_api.format_for(out)
    if fmt not in client_api.FORMATS:
        raise typer.BadParameter(f"one of {', '.join(client_api.FORMATS)}", param_hint="--format")
    if out is not None and not out.parent.is_dir():
        raise typer.BadParameter(f"folder {str(out.parent)!r} does not exist", param_hint="--out")
    with _client(url) as client:
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


def _json_option(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=name) from exc


@contextmanager
def _client(url: str) -> Iterator[httpx.Client]:
    """An HTTP client whose failures end the command with one line: 2 when the service
    refused the request, 1 when it could not be reached or did not answer as itself."""
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    except client_api.ClientError as exc:
        _die(f"refused: {exc}", 2)
    except httpx.UnsupportedProtocol as exc:
        _die(f"{url!r} is not an http:// or https:// URL ({exc})", 2)
    except httpx.HTTPError as exc:
        _die(f"cannot reach {url}: {type(exc).__name__}: {first_line(exc)}", 1)
    except (json.JSONDecodeError, client_api.NotFramejobs) as exc:
        _die(f"{url} did not answer as framejobs does: {first_line(exc)}", 1)


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
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
) -> None:
    """The newest jobs, one line each."""
    with _client(url) as client:
        for job in client_api.list_jobs(client, status=status, pipeline=pipeline, page_size=limit):
            typer.echo(f"{job['id']}  {job['status']:<9}  {job['pipeline']}  {job['created_at']}")


@jobs_app.command("show")
def jobs_show(job_id: str, url: ServerURL = "http://127.0.0.1:8000") -> None:
    """One job as JSON."""
    with _client(url) as client:
        typer.echo(json.dumps(client_api.job_of(client, job_id), indent=2))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: ServerURL = "http://127.0.0.1:8000") -> None:
    """Cancel a job (queued: at once; running: it is interrupted)."""
    with _client(url) as client:
        job = client_api.cancel(client, job_id)
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
    settings = _settings()
    configure_logging(settings.log_level)
    with _database(settings, "cannot prune", existing=True) as engine:
        check_schema(engine)
        deleted = prune(engine, before=utcnow() - age)
    typer.echo(f"deleted {deleted} finished job(s)")


@app.command("webhook-secret")
def webhook_secret() -> None:
    """Print the webhook signing secret(s) receivers verify signatures with."""
    settings = _settings()
    if settings.webhook_secrets:
        typer.echo("\n".join(settings.webhook_secrets))
        return
    with _database(settings, "cannot read the secret", existing=True) as engine:
        check_schema(engine)
        stored = stored_secret(engine)
    if stored is None:
        typer.echo("no secret yet: `framejobs serve` generates one on first start", err=True)
        raise typer.Exit(1)
    typer.echo(stored)


# A bad value given as an option is named as the option: whoever typed --grace -1
# never set FRAMEJOBS_SHUTDOWN_GRACE_S and would look for it in the environment.
_OPTION_OF = {"shutdown_grace_s": "--grace", "workers": "--workers"}


def _settings(**overrides: Any) -> Settings:
    """The settings (environment, then these options); a bad value ends the command
    with one line per setting, never its value (it may be a secret)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            name = str(error["loc"][0]) if error["loc"] else "settings"
            option = _OPTION_OF.get(name) if name in given else None
            typer.echo(f"error: {option or f'FRAMEJOBS_{name.upper()}'}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def _fatal(doing: str) -> Iterator[None]:
    """Errors that stop a command before it does its work: one line, exit 1."""
    try:
        yield
    except FramejobsError as exc:
        _die(f"{doing}: {exc.detail}", 1)
    except SQLAlchemyError as exc:
        _die(f"{doing}: the database: {first_line(exc)}", 1)
    except CommandError as exc:
        _die(f"{doing}: {first_line(exc)}", 1)
    except OSError as exc:  # a folder that cannot be made, a path through a file
        where = f" ({exc.filename})" if exc.filename else ""
        _die(f"{doing}: {exc.strerror or exc}{where}", 1)


@contextmanager
def _database(settings: Settings, doing: str, *, existing: bool = False) -> Iterator[Engine]:
    """The database's engine, errors as one line. ``existing``: a command that only
    reads or deletes refuses to create an empty SQLite file (in whatever folder it
    was started in) and says where it looked."""
    with _fatal(doing):
        if existing and (path := settings.sqlite_file) is not None and not path.exists():
            _die(f"{doing}: no database at {path} (`framejobs migrate` creates it)", 1)
        engine = make_engine(settings)
        try:
            yield engine
        finally:
            engine.dispose()


def _die(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
