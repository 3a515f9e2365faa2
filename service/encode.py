"""Encode a stored result (Parquet) as JSON pages, NDJSON, CSV, Parquet or Arrow IPC.

Every encoder reads the file batch by batch, so large results stream. JSON has no
NaN or infinity: they are written as the strings "NaN", "Infinity", "-Infinity"
(which submit accepts back for float columns); decimals are strings (exact), dates
and timestamps ISO 8601, bytes base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from service.errors import NotAcceptable

MEDIA_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
_ALIASES = {
    "application/jsonl": "ndjson",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    "application/vnd.apache.arrow.file": "arrow",
}
STREAM_ROWS = 16 * 1024


def negotiate(accept: str | None, fmt: str | None) -> str:
    """``?format=`` wins; else the first acceptable media type; else JSON."""
    if fmt:
        if fmt not in MEDIA_TYPES:
            raise NotAcceptable(f"format must be one of {sorted(MEDIA_TYPES)}, not {fmt!r}")
        return fmt
    if not accept:
        return "json"
    by_media = {media: name for name, media in MEDIA_TYPES.items()} | _ALIASES
    ranked = sorted(_parse_accept(accept), key=lambda item: -item[1])
    for media, quality in ranked:
        if quality <= 0:
            continue
        if media in by_media:
            return by_media[media]
        if media in ("*/*", "application/*"):
            return "json"
    raise NotAcceptable(
        f"cannot produce any of {accept!r}; offer one of {sorted(MEDIA_TYPES.values())}"
    )


def _parse_accept(accept: str) -> Iterator[tuple[str, float]]:
    for part in accept.split(","):
        media, *options = (p.strip() for p in part.split(";"))
        quality = 1.0
        for option in options:
            key, _, value = option.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        yield media.lower(), quality


# -- JSON values ---------------------------------------------------------------------


def _float(value: float | None) -> Any:
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def _plain(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_null(arrow_type)
    )


def _converter(arrow_type: pa.DataType) -> Callable[[Any], Any] | None:
    if _plain(arrow_type):
        return None
    if pa.types.is_floating(arrow_type):
        return _float
    return _json_value


def batch_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    names = batch.schema.names
    columns = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        values = column.to_pylist()
        convert = _converter(field.type)
        if convert is not None:
            values = [convert(v) for v in values]
        columns.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def json_page(path: Path, *, offset: int, limit: int) -> dict[str, Any]:
    parquet = pq.ParquetFile(path)
    total = parquet.metadata.num_rows
    rows: list[dict[str, Any]] = []
    seen = 0
    for batch in parquet.iter_batches(batch_size=STREAM_ROWS):
        end = seen + batch.num_rows
        if end > offset and len(rows) < limit:
            start = max(0, offset - seen)
            piece = batch.slice(start, limit - len(rows))
            rows.extend(batch_rows(piece))
        seen = end
        if len(rows) >= limit:
            break
    next_offset = offset + len(rows) if offset + len(rows) < total else None
    return {
        "columns": [{"name": f.name, "type": str(f.type)} for f in parquet.schema_arrow],
        "rows": rows,
        "offset": offset,
        "limit": limit,
        "total": total,
        "next_offset": next_offset,
    }


def ndjson_chunks(path: Path) -> Iterator[bytes]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=STREAM_ROWS):
        lines = [json.dumps(row, ensure_ascii=False) for row in batch_rows(batch)]
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """CSV holds no nested or binary values: those become JSON text and base64."""
    arrays = []
    fields = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        kind = field.type
        if pa.types.is_nested(kind):
            texts = [None if v is None else json.dumps(_json_value(v)) for v in column.to_pylist()]
            column = pa.array(texts, pa.string())
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            column = pa.array(
                [None if v is None else base64.b64encode(v).decode() for v in column.to_pylist()],
                pa.string(),
            )
        elif pa.types.is_timestamp(kind) and kind.tz is not None:
            column = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S.%f%z")
        arrays.append(column)
        fields.append(pa.field(field.name, column.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def csv_chunks(path: Path) -> Iterator[bytes]:
    parquet = pq.ParquetFile(path)
    header = True
    for batch in parquet.iter_batches(batch_size=STREAM_ROWS):
        buffer = io.BytesIO()
        options = pcsv.WriteOptions(include_header=header)
        pcsv.write_csv(_csv_ready(batch), buffer, write_options=options)
        header = False
        yield buffer.getvalue()
    if header:  # no rows at all: still send the header line
        yield (",".join(json.dumps(n) for n in parquet.schema_arrow.names) + "\n").encode()


def arrow_chunks(path: Path) -> Iterator[bytes]:
    parquet = pq.ParquetFile(path)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, parquet.schema_arrow) as writer:
        for batch in parquet.iter_batches(batch_size=STREAM_ROWS):
            writer.write_batch(batch)
            yield _drain(sink)
    yield _drain(sink)


def _drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data
