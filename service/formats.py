"""The frame formats, and how an upload or a file says which one it is (no pyarrow
here: the command-line client needs this much and nothing else of decoding)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from service.errors import UnsupportedMediaType

Format = Literal["csv", "ndjson", "parquet", "arrow"]

_MEDIA_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/jsonlines": "ndjson",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    "application/vnd.apache.arrow.stream": "arrow",
    "application/vnd.apache.arrow.file": "arrow",
}
SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".arrows": "arrow",
    ".ipc": "arrow",
    ".feather": "arrow",
}


def detect_format(content_type: str | None, filename: str | None) -> Format:
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _MEDIA_TYPES:
        return _MEDIA_TYPES[media]
    suffix = Path(filename or "").suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    raise UnsupportedMediaType(
        f"cannot tell the frame's format from content type {media or 'none'!r} and file "
        f"name {filename!r}; send text/csv, application/x-ndjson, "
        "application/vnd.apache.parquet or application/vnd.apache.arrow.stream"
    )
