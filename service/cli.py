"""The ``framejobs`` command: serve, worker, migrate, prune, webhook-secret, and a
client (submit, jobs list/show/cancel).

Every command is declared here, so ``--help`` is whole; the operator's commands run
from :mod:`service.operate`, imported only when one of them runs, so the client
commands start without loading the service (~0.3 s instead of ~1.3 s)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from service import client as client_api
from service.bounds import MAX_SLOTS
from service.console import die
from service.errors import first_line

HELP = (
    "framejobs: data frames in, DuckDB pipelines run as durable jobs, results out. "
    "Run the service (serve, worker, migrate, prune, webhook-secret) or talk to one "
    "(submit, jobs)."
)
app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP)


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
    from service import operate

    operate.serve(host=host, port=port, workers=workers, migrate=migrate, grace=grace)


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
    from service import operate

    operate.work(concurrency=concurrency, grace=grace)


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest version."""
    from service import operate

    operate.migrate()


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
        die(f"refused: {exc}", 2)
    except httpx.UnsupportedProtocol as exc:
        die(f"{url!r} is not an http:// or https:// URL ({exc})", 2)
    except httpx.HTTPError as exc:
        die(f"cannot reach {url}: {type(exc).__name__}: {first_line(exc)}", 1)
    except (json.JSONDecodeError, client_api.NotFramejobs) as exc:
        die(f"{url} did not answer as framejobs does: {first_line(exc)}", 1)


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
    from service import operate
    from service.prune import parse_age

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from exc
    operate.prune_older(age)


@app.command("webhook-secret")
def webhook_secret() -> None:
    """Print the webhook signing secret(s) receivers verify signatures with."""
    from service import operate

    operate.webhook_secret()


if __name__ == "__main__":
    app()
