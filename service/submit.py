"""Accepting a job: decode and validate the frame, store it as Parquet, and insert the
job row and its input payload in one transaction. A 202 means the frame is committed."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from service import spool, ssrf
from service.config import Settings
from service.db import reading, writing
from service.decode import StoredFrame, file_batches, json_frame_batches, write_frame
from service.errors import (
    FramejobsError,
    IdempotencyMismatch,
    InvalidFrame,
    InvalidInput,
    first_line,
)
from service.execute import Engines
from service.formats import Format
from service.ids import new_id
from service.loopread import Reader
from service.metrics import Metrics
from service.notify import Hub
from service.pipelines import Pipeline, Registry
from service.schemas import JobSpec
from service.ssrf import Resolver, system_resolver
from service.store import insert_job, job_by_idempotency_key, utcnow, write_payload

log = logging.getLogger("framejobs.api")


@dataclass(frozen=True)
class FrameFile:
    file: BinaryIO
    format: Format


@dataclass(frozen=True)
class Services:
    """What submitting needs, built once by the entry point."""

    engine: Engine
    settings: Settings
    registry: Registry
    engines: Engines
    hub: Hub
    metrics: Metrics | None = None
    resolver: Resolver = system_resolver
    # Params checks that passed, by (pipeline, params, input schema): binding a query
    # costs ~1 ms of a ~2.5 ms submit, and clients resend the same query a lot.
    checked: dict[tuple[str, str, str], None] = field(default_factory=dict)
    # Keep each committed input file on local disk for this process's own workers.
    keep_inputs: bool = False
    # Reads for request handlers, on the event loop where that is safe (SQLite).
    reader: Reader | None = None


def submit(
    services: Services,
    spec: JobSpec,
    *,
    frame_file: FrameFile | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> tuple[RowMapping, bool]:
    """Store a new job; returns it and whether it was created (False: idempotent replay)."""
    pipeline = services.registry.get(spec.pipeline)
    params = pipeline.parse_params(spec.params)
    if spec.webhook is not None:
        ssrf.check(
            spec.webhook.url,
            allow=services.settings.webhook_allow_networks,
            resolver=services.resolver,
        )
    if idempotency_key:
        existing = _replay(services.engine, idempotency_key, request_hash)
        if existing is not None:
            return existing, False
    path = _spool_path(services.settings) if frame_file is not None else None
    try:
        stored = _store_frame(pipeline, spec, frame_file, path, services.settings)
        if pipeline.check_params is not None:
            _check_once(services, pipeline, spec.params, params, stored)
        # Ids sort by time: taken only now, after a large frame took its time to
        # convert, so that job lists (newest first) come close to the order of commits.
        # Not exactly: copying a large payload into the database still takes time, and
        # on PostgreSQL a later, smaller submit can commit first (docs/api.md, Listing).
        job_id = new_id()
        values = _job_values(services.settings, pipeline, spec, stored, job_id)
        values.update(idempotency_key=idempotency_key, request_hash=request_hash)
        row = _commit(services, values, stored, idempotency_key, request_hash)
        if row["id"] != job_id:  # an idempotent replay that raced us
            return row, False
        if services.keep_inputs and path is not None:
            _keep_input(services.settings, job_id, path)
    finally:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    services.hub.work_available()
    if services.metrics is not None:
        services.metrics.submitted.labels(pipeline.name).inc()
    return row, True


def _spool_path(settings: Settings) -> Path:
    """A file upload is written to disk as Parquet; a JSON frame stays in memory."""
    return spool.ensure(settings.spool_dir) / spool.owned(f"{secrets.token_hex(8)}.input.parquet")


def _commit(
    services: Services,
    values: dict[str, object],
    stored: StoredFrame,
    key: str | None,
    request_hash: str | None,
) -> RowMapping:
    """Job row and input payload in one transaction (a 202 means both are stored).

    The payload goes first and the row is stamped after it: copying a large frame into
    the database takes a while (0.4 s for 100 MB), and the job is queued only when this
    commits, so its ``created_at`` (and a default ``run_after``) say when that was."""
    try:
        with writing(services.engine) as conn:
            chunk = services.settings.payload_chunk_bytes
            write_payload(conn, str(values["id"]), "input", stored, chunk)
            return insert_job(conn, _stamped(values))
    except IntegrityError:
        # Two requests with one key raced: the other one won; answer as it did.
        replay = _replay(services.engine, key, request_hash) if key else None
        if replay is None:
            raise
        return replay


def _stamped(values: dict[str, object]) -> dict[str, object]:
    now = utcnow()
    return {**values, "created_at": now, "updated_at": now, "run_after": values["run_after"] or now}


def _keep_input(settings: Settings, job_id: str, path: Path) -> None:
    """Keep the input for this process's workers. Only a shortcut: the job is committed
    already, so a spool that cannot take the file must not turn the 202 into an error
    (a client would submit again); the worker then reads the input from the database."""
    kept = input_cache(settings, job_id)
    try:
        spool.ensure(spool.ensure(settings.spool_dir) / kept.parent.name)
        path.replace(kept)
    except OSError as exc:
        log.warning("job %s: its input was not kept on local disk: %s", job_id, exc)


def input_cache(settings: Settings, job_id: str) -> Path:
    """Where a job's input Parquet is kept locally (a copy of what the database holds)."""
    return settings.spool_dir / "inputs" / f"{job_id}.parquet"


def _replay(engine: Engine, key: str, request_hash: str | None) -> RowMapping | None:
    with reading(engine) as conn:
        existing = job_by_idempotency_key(conn, key)
    if existing is not None and existing["request_hash"] != request_hash:
        raise IdempotencyMismatch(
            "this Idempotency-Key was used with a different request; use a new key"
        )
    return existing


def _store_frame(
    pipeline: Pipeline,
    spec: JobSpec,
    frame_file: FrameFile | None,
    path: Path | None,
    settings: Settings,
) -> StoredFrame:
    schema = pipeline.frame_schema
    mode = spec.validation or pipeline.validation
    if frame_file is not None:
        batches = file_batches(
            frame_file.file,
            frame_file.format,
            schema,
            max_bytes=settings.max_frame_bytes,
            max_line_bytes=settings.max_json_bytes,
        )
    elif spec.frame is not None:
        batches = json_frame_batches(spec.frame, schema)
    else:
        raise InvalidFrame("the request has no frame")
    return write_frame(
        batches, schema, mode=mode, dest=path, max_columns=settings.max_frame_columns
    )


def _check_once(
    services: Services,
    pipeline: Pipeline,
    raw: Mapping[str, Any] | None,
    params: object,
    stored: StoredFrame,
) -> None:
    # Keyed by the params as sent (JSON, so they always dump), not as validated: a
    # dump hides secrets (every SecretStr is '**********') and fails on fields of
    # arbitrary types.
    sent = json.dumps(raw, sort_keys=True)
    key = (pipeline.name, sent, json.dumps(stored.columns))
    if key in services.checked:
        return
    _check_params(services.engines, pipeline, params, stored)
    if len(services.checked) >= 1024:
        services.checked.clear()
    services.checked[key] = None


def _check_params(
    engines: Engines, pipeline: Pipeline, params: object, stored: StoredFrame
) -> None:
    assert pipeline.check_params is not None
    assert stored.schema is not None
    empty = stored.schema.empty_table()
    with engines.check_cursor() as cursor:
        try:
            cursor.register("input", empty)
            pipeline.check_params(params, cursor)
        except FramejobsError:
            raise
        except BaseException as exc:  # as a pipeline's own errors (execute.run_pipeline)
            raise InvalidInput(
                f"pipeline {pipeline.name!r} refused the params: {type(exc).__name__}: "
                f"{first_line(exc)}"
            ) from exc


def _job_values(
    settings: Settings,
    pipeline: Pipeline,
    spec: JobSpec,
    stored: StoredFrame,
    job_id: str,
) -> dict[str, object]:
    return {
        "id": job_id,
        "pipeline": pipeline.name,
        # As sent, not as validated: the worker validates them again, and a dump is not
        # always valid input (aliases, validators that change values, SecretStr).
        "params": spec.params if pipeline.params is not None else None,
        "status": "queued",
        "priority": spec.priority,
        "run_after": spec.run_after,  # None: as soon as it is stored (_stamped)
        "max_attempts": spec.max_attempts or pipeline.max_attempts or settings.default_max_attempts,
        "timeout_s": spec.timeout_s or pipeline.timeout_s,
        "input_rows": stored.rows,
        "input_bytes": stored.bytes,
        "input_columns": stored.columns,
        "webhook_url": spec.webhook.url if spec.webhook else None,
        "webhook_events": list(spec.webhook.events) if spec.webhook else None,
    }
