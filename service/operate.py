"""The operator's commands: serve, worker, migrate, prune and webhook-secret.

The command line (:mod:`service.cli`) imports this only when one of them runs: it
loads the whole service (uvicorn, the API, SQLAlchemy, DuckDB), about a second of
start-up that ``framejobs submit`` and ``framejobs jobs`` do without.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import typer
import uvicorn
from alembic.util import CommandError
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.config import Settings
from service.console import die
from service.db import make_engine
from service.errors import FramejobsError, first_line
from service.logs import configure_logging
from service.prune import prune
from service.revisions import check_schema, upgrade
from service.runtime import Runtime
from service.secrets import stored_secret
from service.store import utcnow

log = logging.getLogger("framejobs")
# SIGHUP too: closing the terminal of a foreground `framejobs serve` sends it.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def serve(
    *, host: str, port: int, workers: int | None, migrate: bool | None, grace: float | None
) -> None:
    from service.api.app import create_app

    settings = settings_from(shutdown_grace_s=grace, workers=workers)
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


def work(*, concurrency: int | None, grace: float | None) -> None:
    settings = settings_from(shutdown_grace_s=grace)
    configure_logging(settings.log_level)
    slots = concurrency if concurrency is not None else max(settings.workers, 1)
    early = _EarlySignals()
    with _fatal("cannot start"):
        runtime = Runtime.start(settings, workers=slots, migrate=False, api=False)
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


def migrate() -> None:
    settings = settings_from()
    configure_logging(settings.log_level)
    with _database(settings, "cannot migrate") as engine:
        upgrade(engine)
    typer.echo("schema at head")


def prune_older(age: timedelta) -> None:
    settings = settings_from()
    configure_logging(settings.log_level)
    with _database(settings, "cannot prune", existing=True) as engine:
        check_schema(engine)
        deleted = prune(engine, before=utcnow() - age)
    typer.echo(f"deleted {deleted} finished job(s)")


def webhook_secret() -> None:
    settings = settings_from()
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


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        die(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)
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


# A bad value given as an option is named as the option: whoever typed --grace -1
# never set FRAMEJOBS_SHUTDOWN_GRACE_S and would look for it in the environment.
_OPTION_OF = {"shutdown_grace_s": "--grace", "workers": "--workers"}


def settings_from(**overrides: Any) -> Settings:
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
        die(f"{doing}: {exc.detail}", 1)
    except SQLAlchemyError as exc:
        die(f"{doing}: the database: {first_line(exc)}", 1)
    except CommandError as exc:
        die(f"{doing}: {first_line(exc)}", 1)
    except OSError as exc:  # a folder that cannot be made, a path through a file
        where = f" ({exc.filename})" if exc.filename else ""
        die(f"{doing}: {exc.strerror or exc}{where}", 1)


@contextmanager
def _database(settings: Settings, doing: str, *, existing: bool = False) -> Iterator[Engine]:
    """The database's engine, errors as one line. ``existing``: a command that only
    reads or deletes refuses to create an empty SQLite file (in whatever folder it
    was started in) and says where it looked."""
    with _fatal(doing):
        if existing and (path := settings.sqlite_file) is not None and not path.exists():
            die(f"{doing}: no database at {path} (`framejobs migrate` creates it)", 1)
        engine = make_engine(settings)
        try:
            yield engine
        finally:
            engine.dispose()
