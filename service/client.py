"""A small HTTP client for the ``framejobs submit`` and ``framejobs jobs`` commands."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from service.formats import SUFFIXES

TERMINAL = {"completed", "failed", "cancelled"}
FORMATS = ("parquet", "csv", "ndjson", "json", "arrow")
_MEDIA = {
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}


_EXTENSIONS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
    ".arrow": "arrow",
    ".arrows": "arrow",
}


def format_for(path: Path | None) -> str:
    """The result format a file name asks for; Parquet when it names none."""
    return _EXTENSIONS.get(path.suffix.lower(), "parquet") if path is not None else "parquet"


class ClientError(Exception):
    """The service refused a request; the message is its problem detail."""


class NotFramejobs(Exception):
    """What answered is not framejobs (an error without a problem body)."""


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        response.read()  # a streamed response has not read its problem body yet
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        try:
            detail = response.json()["detail"] if kind == "application/problem+json" else None
        except (ValueError, KeyError, TypeError):
            detail = None
        if detail is None:
            raise NotFramejobs(f"HTTP {response.status_code} ({kind or 'no content type'})")
        raise ClientError(f"{response.status_code}: {detail}")
    return response


def submit_file(client: httpx.Client, spec: dict[str, Any], path: Path) -> dict[str, Any]:
    fmt = SUFFIXES.get(path.suffix.lower())
    media = _MEDIA.get(fmt or "", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
    with path.open("rb") as handle:
        response = client.post(
            "/jobs", data={"spec": json.dumps(spec)}, files={"frame": (path.name, handle, media)}
        )
    body: dict[str, Any] = _check(response).json()
    return body


def events(client: httpx.Client, job_id: str) -> Iterator[dict[str, Any]]:
    """The job as it changes, until it ends (server-sent events)."""
    with client.stream("GET", f"/jobs/{job_id}/events", timeout=None) as response:
        _check(response)
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[6:])


def follow(
    client: httpx.Client, job_id: str, on_change: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for job in events(client, job_id):
        last = job
        on_change(job)
    return last or job_of(client, job_id)


def job_of(client: httpx.Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = _check(client.get(f"/jobs/{job_id}")).json()
    return body


def download(client: httpx.Client, job_id: str, fmt: str, dest: Path) -> int:
    """Write the whole result to ``dest``; returns its size in bytes. JSON is fetched
    page by page and written as one document with every row."""
    if fmt == "json":
        return _download_json(client, job_id, dest)
    size = 0
    with client.stream("GET", f"/jobs/{job_id}/result", params={"format": fmt}) as response:
        _check(response)
        with dest.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
                size += len(chunk)
    return size


def _download_json(client: httpx.Client, job_id: str, dest: Path) -> int:
    rows: list[Any] = []
    offset: int | None = 0
    page: dict[str, Any] = {}
    while offset is not None:
        params: dict[str, str | int] = {"format": "json", "offset": offset, "limit": 10_000}
        page = _check(client.get(f"/jobs/{job_id}/result", params=params)).json()
        rows.extend(page["rows"])
        offset = page["next_offset"]
    text = json.dumps({"columns": page.get("columns", []), "rows": rows}, ensure_ascii=False)
    dest.write_text(text, encoding="utf-8")
    return dest.stat().st_size


def list_jobs(client: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    params = {k: v for k, v in filters.items() if v is not None}
    items: list[dict[str, Any]] = _check(client.get("/jobs", params=params)).json()["items"]
    return items


def cancel(client: httpx.Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = _check(client.post(f"/jobs/{job_id}/cancel")).json()
    return body
