"""Routes under /jobs. Each is a few lines over submit/store/control/encode."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.engine import RowMapping
from starlette.responses import Response, StreamingResponse

from service import __version__, control, encode, negotiation, store
from service.api.deps import ServicesDep
from service.api.feeds import Feeds, Queue, Update
from service.api.uploads import frame_digest, read_submit
from service.db import reading, writing
from service.errors import Conflict
from service.payload_file import PayloadFile
from service.schemas import TERMINAL, JobOut, JobPage, Status, job_body
from service.submit import Services, submit

router = APIRouter(tags=["jobs"])
DB_POLL_S = 0.5
# An idle event stream checks this often whether its client is still there (sending
# fails sooner when it is not; the feed wakes it for every change anyway).
_DISCONNECT_CHECK_S = 5.0
_EVENT_ID = re.compile(r"[0-9]{1,18}")
_MAX_VERSION = 2**31 - 1  # the version column's range: beyond it, nothing is newer


def job_response(
    row: RowMapping, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    all_headers = {"ETag": etag(row)}
    if row["status"] not in TERMINAL:
        all_headers["Retry-After"] = "1"
    all_headers.update(headers or {})
    return Response(
        json.dumps(job_body(row)),
        status_code=status_code,
        media_type="application/json",
        headers=all_headers,
    )


def etag(row: RowMapping) -> str:
    return f'"{row["version"]}"'


def _read_job(services: Services, job_id: str) -> RowMapping:
    with reading(services.engine, single=True) as conn:
        return control.require_job(conn, job_id)


async def read_job(services: Services, job_id: str) -> RowMapping:
    """On the event loop when it can (SQLite), else in a worker thread."""
    if services.reader is None:
        return await anyio.to_thread.run_sync(_read_job, services, job_id)
    return await services.reader.read(lambda conn: control.require_job(conn, job_id))


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    summary="Submit a frame and a pipeline",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "string", "description": "the job as JSON"},
                            "frame": {"type": "string", "format": "binary"},
                        },
                        "required": ["spec", "frame"],
                    }
                },
            }
        }
    },
)
async def submit_job(
    request: Request,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(max_length=200, pattern=r"\S")] = None,
) -> Response:
    settings = services.settings
    parsed = await read_submit(
        request, json_limit=settings.max_json_bytes, upload_limit=settings.max_upload_bytes
    )
    try:
        request_hash = (
            await anyio.to_thread.run_sync(frame_digest, parsed) if idempotency_key else None
        )
        row, created = await anyio.to_thread.run_sync(
            lambda: submit(
                services,
                parsed.spec,
                frame_file=parsed.frame_file,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
        )
    finally:
        if parsed.form is not None:
            await parsed.form.close()
    headers = {"Location": f"/jobs/{row['id']}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return job_response(row, 202, headers)


@router.get("/jobs", response_model=JobPage, summary="List jobs, newest first")
def list_jobs(
    services: ServicesDep,
    # Repeated, they are alternatives: ?status=queued&status=running
    status: Annotated[list[Status] | None, Query()] = None,
    pipeline: Annotated[list[str] | None, Query()] = None,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    page_token: str | None = None,
) -> Response:
    before = store.decode_page_token(page_token) if page_token else None
    pipeline = [name for name in pipeline or () if name] or None  # ?pipeline= : no filter
    with reading(services.engine) as conn:
        rows, token = store.list_jobs(
            conn, status=status, pipeline=pipeline, page_size=page_size, before_id=before
        )
    body: dict[str, Any] = {"items": [job_body(r) for r in rows]}
    if token:
        body["next_page_token"] = token
    return Response(json.dumps(body), media_type="application/json")


@router.get("/jobs/{job_id}", response_model=JobOut, summary="A job; ?wait=S long-polls")
async def get_job(
    job_id: str,
    request: Request,
    services: ServicesDep,
    if_none_match: Annotated[str | None, Header()] = None,
    wait: Annotated[float | None, Query(ge=0, le=300, allow_inf_nan=False)] = None,
) -> Response:
    row = await read_job(services, job_id)
    seen = if_none_match is None or matches(if_none_match, etag(row))
    if wait and row["status"] not in TERMINAL and seen:
        wait = min(wait, services.settings.long_poll_max_s)
        row = await _wait_for_change(request.app.state.feeds, services, row, wait)
    if if_none_match is not None and matches(if_none_match, etag(row)):
        return Response(status_code=304, headers={"ETag": etag(row)})
    return job_response(row)


def matches(if_none_match: str, tag: str) -> bool:
    """RFC 9110 section 13.1.2: a list of entity tags, or ``*``, compared weakly (a
    proxy that compresses may have turned our tag into ``W/"7"``)."""
    tags = {sent.strip().removeprefix("W/") for sent in if_none_match.split(",")}
    return "*" in tags or tag in tags


async def _wait_for_change(
    feeds: Feeds, services: Services, row: RowMapping, wait: float
) -> RowMapping:
    """The job once it is newer than ``row``, or ``row`` after ``wait`` seconds. Waits
    on the job's shared feed: a change wakes every long-poll with one read."""
    job_id, version = row["id"], row["version"]
    deadline = time.monotonic() + wait
    async with feeds.watch(job_id, version, latest=True) as updates:
        while (remaining := deadline - time.monotonic()) > 0 and not services.hub.closing:
            try:
                update = await asyncio.wait_for(updates.get(), remaining)
            except TimeoutError:
                break
            if update is None or update.row is None:
                # The feed ended (server stopping, database away) or the job is gone:
                # this read answers with what is there now, or the error for it.
                return await read_job(services, job_id)
            if update.row["version"] > version:
                return update.row
    return row


def _event_cursor(last_event_id: str | None) -> int:
    """The version a client has seen; anything but a plain decimal number counts as
    none (``str.isdigit`` would also take "²" and numbers no column holds)."""
    if last_event_id and _EVENT_ID.fullmatch(last_event_id.strip()):
        return min(int(last_event_id), _MAX_VERSION)
    return 0


class AllSeen(Exception):
    """The client has every event of a finished job: answered 204, which tells a
    browser's EventSource to stop reconnecting (WHATWG HTML, server-sent events)."""


def all_seen(_: Request, __: Exception) -> Response:
    return Response(status_code=204)


def _stream_start(
    job_id: str,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> str:
    """Checked before an event stream starts: a missing job is a 404, not an empty
    stream; a finished job whose last event the client has is a 204. An EventSource
    reconnects whenever a stream ends, so an empty 200 had it reconnect forever."""
    row = _read_job(services, job_id)
    cursor = _event_cursor(last_event_id)
    if cursor and row["status"] in TERMINAL and not _changes(services, job_id, cursor)[0]:
        raise AllSeen
    return job_id


StreamedJob = Annotated[str, Depends(_stream_start)]


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    summary="Status and progress as server-sent events; Last-Event-ID resumes",
)
async def job_events(
    job_id: StreamedJob,
    request: Request,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    cursor = _event_cursor(last_event_id)
    feeds: Feeds = request.app.state.feeds
    async with feeds.watch(job_id, cursor) as updates:
        # Joined first, backlog second: nothing committed in between is missed.
        update: Update | None = await read_changes(services, job_id, cursor)
        while update is not None:
            for event in update.events:
                if event["version"] <= cursor:
                    continue  # sent already (the feed and the backlog overlap)
                cursor = event["version"]
                yield ServerSentEvent(data=event["data"], event="status", id=str(cursor))
                if event["status"] in TERMINAL:
                    return
            if update.final:
                return
            assert update.row is not None
            if update.row["version"] > cursor:
                cursor = update.row["version"]
                yield ServerSentEvent(data=job_body(update.row), event="progress", id=str(cursor))
            update = await _next_update(updates, request, services)


async def _next_update(updates: Queue, request: Request, services: Services) -> Update | None:
    """The feed's next update; None when it ended, the client left or the server stops."""
    while not services.hub.closing:
        try:
            return await asyncio.wait_for(updates.get(), _DISCONNECT_CHECK_S)
        except TimeoutError:
            if await request.is_disconnected():
                return None
    return None


async def read_changes(services: Services, job_id: str, cursor: int) -> Update:
    events, row = await anyio.to_thread.run_sync(_changes, services, job_id, cursor)
    return Update(events, row)


def _changes(
    services: Services, job_id: str, cursor: int
) -> tuple[list[RowMapping], RowMapping | None]:
    with reading(services.engine) as conn:
        # The job first, its events second: on PostgreSQL (read committed) each
        # statement sees what was committed when it began, and an ending commits its
        # event with its state, so the events read after a terminal job include its
        # terminal event. The other order could see the state but miss the event,
        # and the stream would end without it.
        row = store.get_job(conn, job_id)
        return store.events_after(conn, job_id, cursor), row


@router.get(
    "/jobs/{job_id}/result",
    summary="The result: JSON pages, NDJSON, CSV, Parquet or Arrow, by Accept or ?format=",
    responses={409: {"description": "the job has not completed"}},
)
def get_result(
    job_id: str,
    services: ServicesDep,
    accept: Annotated[str | None, Header()] = None,
    format: Annotated[str | None, Query()] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    row = _read_job(services, job_id)
    if row["status"] != "completed":
        raise Conflict(f"job {job_id} is {row['status']}; its result exists once it has completed")
    fmt = negotiation.negotiate(accept, format)
    media = negotiation.MEDIA_TYPES[fmt]
    # A completed result never changes; its encoding can, from one release to the next.
    tag = f'"result-{__version__}-{fmt}"'
    if if_none_match is not None and matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag, "Vary": "Accept"})
    # The body depends on Accept: caches must not hand one client's CSV to another.
    headers = {
        "Vary": "Accept",
        "ETag": tag,
        "Content-Disposition": f'attachment; filename="{job_id}.{fmt}"',
    }
    if fmt == "parquet":
        chunks = store.payload_chunks(services.engine, job_id, "result")
        headers["Content-Length"] = str(row["result_bytes"])
        return StreamingResponse(chunks, media_type=media, headers=headers)
    # Read in place: the footer, then only the row groups needed (no copy to disk).
    stored = PayloadFile(services.engine, job_id, "result")
    if fmt == "json":
        page = encode.json_page(stored, offset=offset, limit=limit)
        return Response(
            json.dumps(page, ensure_ascii=False),
            media_type=media,
            headers={"Vary": "Accept", "ETag": tag},
        )
    encoder = {
        "ndjson": encode.ndjson_chunks,
        "csv": encode.csv_chunks,
        "arrow": encode.arrow_chunks,
    }
    return StreamingResponse(encoder[fmt](stored), media_type=media, headers=headers)


@router.post(
    "/jobs/{job_id}/cancel", status_code=202, response_model=JobOut, summary="Cancel a job"
)
def cancel_job(job_id: str, services: ServicesDep) -> Response:
    with writing(services.engine) as conn:
        row = control.cancel(conn, job_id)
    if row["status"] == "running":
        services.hub.cancel_requested(job_id)
    else:
        services.hub.job_changed(job_id)
        services.hub.deliveries_due()
    return job_response(row, 202)


@router.delete("/jobs/{job_id}", status_code=204, summary="Delete a finished job and its data")
def delete_job(job_id: str, services: ServicesDep) -> Response:
    with writing(services.engine) as conn:
        control.delete(conn, job_id)
    return Response(status_code=204)
