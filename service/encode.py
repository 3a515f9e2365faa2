"""Encode a stored result (Parquet) as JSON pages, NDJSON, CSV, Parquet or Arrow IPC.

Every encoder reads the file batch by batch, so large results stream. JSON has no
NaN or infinity: they are written as the strings "NaN", "Infinity", "-Infinity"
(which submit accepts back for float columns); decimals are strings (exact), dates,
times and timestamps ISO 8601, bytes base64, durations integers of their unit,
intervals {"months", "days", "nanoseconds"}. CSV writes the same texts (see
``_csv_ready``). The exact rules and their limits: docs/formats.md.
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
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

STREAM_ROWS = 16 * 1024
Source = Path | BinaryIO | io.RawIOBase  # a stored result: a file, or read in place


# -- text renderings ------------------------------------------------------------------
# JSON, NDJSON and CSV spell the types they lack the same way: decimals fixed-point
# with the column's scale, dates "YYYY-MM-DD", times "HH:MM:SS[.fraction]" and
# timestamps "YYYY-MM-DDTHH:MM:SS[.fraction]" with the unit's digits (and "Z" when the
# column has a time zone: written in UTC), bytes base64. Years outside 0001-9999 are
# written as in ECMAScript: sign and six digits ("+010000-01-01").

_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_FIRST_DAY, _LAST_DAY = -719_162, 2_932_896  # 0001-01-01, 9999-12-31 (days since 1970)
_INT64 = (-(2**63), 2**63 - 1)


def text_array(array: pa.Array) -> pa.Array | None:
    """The text of each value for decimal, date, time, timestamp and bytes columns."""
    kind = array.type
    if pa.types.is_decimal(kind):
        return _decimal_text(array)
    if _is_binary(kind):
        texts = [None if v is None else base64.b64encode(v).decode() for v in array.to_pylist()]
        return pa.array(texts, pa.string())
    if pa.types.is_timestamp(kind):
        return _timestamp_text(array)
    if pa.types.is_date(kind):
        return _date_text(array)
    if pa.types.is_time(kind):
        return _time_text(array)
    return None


def _time_text(array: pa.Array) -> pa.Array:
    """Arrow cannot spell 24:00:00 (DuckDB's TIME allows it, as the end of a day)."""
    text = pc.cast(array, pa.string())
    unit = array.type.unit
    per_day = 86_400 * _PER_SECOND[unit]
    ints = array.view(pa.int64() if pa.types.is_time64(array.type) else pa.int32())
    late = pc.fill_null(pc.greater_equal(ints, per_day), False)
    if not pc.any(late).as_py():
        return text
    digits = len(str(_PER_SECOND[unit])) - 1
    fraction = f".{0:0{digits}d}" if digits else ""
    fixed = [_clock(v // _PER_SECOND[unit]) + fraction for v in ints.filter(late).to_pylist()]
    return pc.replace_with_mask(text, late, pa.array(fixed, pa.string()))


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _is_binary(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or pa.types.is_binary_view(kind)
    )


def _decimal_text(array: pa.Array) -> pa.Array:
    text = pc.cast(array, pa.string())
    # Arrow writes small values in scientific notation ("0E-9", "1E-9"): redo those.
    odd = pc.fill_null(pc.match_substring(text, "E"), False)
    if not pc.any(odd).as_py():
        return text
    fixed = [format(v, "f") for v in array.filter(odd).to_pylist()]
    return pc.replace_with_mask(text, odd, pa.array(fixed, pa.string()))


def _timestamp_text(array: pa.Array) -> pa.Array:
    kind = array.type
    if kind.tz is not None:
        array = array.cast(pa.timestamp(kind.unit, "UTC"))
    text = pc.replace_substring(pc.cast(array, pa.string()), " ", "T", max_replacements=1)
    per_day = 86_400 * _PER_SECOND[kind.unit]
    ints = array.view(pa.int64())
    return _patch_years(
        ints, text, per_day, lambda v: _expanded_timestamp(v, kind.unit, kind.tz is not None)
    )


def _date_text(array: pa.Array) -> pa.Array:
    per_day = 1 if pa.types.is_date32(array.type) else 86_400_000
    ints = array.view(pa.int32()).cast(pa.int64()) if per_day == 1 else array.view(pa.int64())
    text = pc.cast(array, pa.string())
    return _patch_years(ints, text, per_day, lambda v: _expanded_date(v // per_day))


def _patch_years(
    ints: pa.Array, text: pa.Array, per_day: int, render: Callable[[int], str]
) -> pa.Array:
    """Arrow writes only years 0001-9999; the values outside are rendered here."""
    low = max(_FIRST_DAY * per_day, _INT64[0])
    high = min((_LAST_DAY + 1) * per_day - 1, _INT64[1])
    outside = pc.fill_null(pc.or_(pc.less(ints, low), pc.greater(ints, high)), False)
    if not pc.any(outside).as_py():
        return text
    fixed = [render(v) for v in ints.filter(outside).to_pylist()]
    return pc.replace_with_mask(text, outside, pa.array(fixed, pa.string()))


def _expanded_timestamp(value: int, unit: str, utc: bool) -> str:
    per_second = _PER_SECOND[unit]
    days, rest = divmod(value, 86_400 * per_second)
    seconds, fraction = divmod(rest, per_second)
    clock = _clock(seconds)
    if per_second > 1:
        clock += f".{fraction:0{len(str(per_second)) - 1}d}"
    return f"{_expanded_date(days)}T{clock}{'Z' if utc else ''}"


def _expanded_date(days: int) -> str:
    # days since 1970-01-01 -> proleptic Gregorian date (H. Hinnant, civil_from_days)
    z = days + 719_468
    era, doe = divmod(z, 146_097)
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    spelled = f"{year:04d}" if 0 <= year <= 9999 else f"{year:+07d}"
    return f"{spelled}-{month:02d}-{day:02d}"


# -- JSON values ---------------------------------------------------------------------


def _float(value: float | None) -> Any:
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _json_value(value: Any) -> Any:
    """Python values (as Arrow gives them) that JSON has no type for, made JSON."""
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.date | dt.time):  # inside maps, which _jsonable leaves alone
        return value.isoformat()
    if isinstance(value, pa.MonthDayNano):
        return {"months": value.months, "days": value.days, "nanoseconds": value.nanoseconds}
    if isinstance(value, list | tuple):
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
        or pa.types.is_string_view(arrow_type)
        or pa.types.is_null(arrow_type)
    )


def _jsonable(array: pa.Array) -> pa.Array:
    """The array with every value JSON lacks a type for (at any depth) as its text;
    durations as integers of their unit."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _jsonable(array.dictionary_decode())
    if pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _jsonable(array.cast(pa.list_(kind.value_field)))
    if pa.types.is_list(kind):
        first, last = array.offsets[0].as_py(), array.offsets[-1].as_py()
        values = _jsonable(array.values.slice(first, last - first))
        offsets = pc.subtract(array.offsets, first)
        return pa.ListArray.from_arrays(offsets, values, mask=array.is_null())
    if pa.types.is_struct(kind):
        children = [_jsonable(array.field(i)) for i in range(kind.num_fields)]
        names = [f.name for f in kind]
        return pa.StructArray.from_arrays(children, names=names, mask=array.is_null())
    if pa.types.is_duration(kind):
        return array.view(pa.int64())
    text = text_array(array)
    return array if text is None else text


def json_values(array: pa.Array) -> list[Any]:
    """The column's values as JSON values (see the module docstring)."""
    kind = array.type
    if _plain(kind):
        return array.to_pylist()  # type: ignore[no-any-return]
    if pa.types.is_floating(kind):
        return [_float(v) for v in array.to_pylist()]
    converted = _jsonable(array)
    if pa.types.is_string(converted.type):
        return converted.to_pylist()  # type: ignore[no-any-return]
    return [_json_value(v) for v in converted.to_pylist()]


def batch_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    names = batch.schema.names
    columns = [json_values(column) for column in batch.columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def json_page(source: Source, *, offset: int, limit: int) -> dict[str, Any]:
    parquet = pq.ParquetFile(source)
    total = parquet.metadata.num_rows
    rows: list[dict[str, Any]] = []
    first, seen = _row_group_at(parquet.metadata, offset)
    groups = list(range(first, parquet.metadata.num_row_groups))
    for batch in parquet.iter_batches(batch_size=STREAM_ROWS, row_groups=groups):
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


def _row_group_at(metadata: pq.FileMetaData, offset: int) -> tuple[int, int]:
    """(the row group holding row ``offset``, rows before it): a page far into a large
    result decodes only from there, not everything before it."""
    seen = 0
    for index in range(metadata.num_row_groups):
        rows = metadata.row_group(index).num_rows
        if seen + rows > offset:
            return index, seen
        seen += rows
    return metadata.num_row_groups, seen


def ndjson_chunks(source: Source) -> Iterator[bytes]:
    for batch in pq.ParquetFile(source).iter_batches(batch_size=STREAM_ROWS):
        lines = [json.dumps(row, ensure_ascii=False) for row in batch_rows(batch)]
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Numbers and booleans stay as they are (Arrow writes them unquoted); every other
    value becomes its JSON text (strings as they are, lists and structs as compact
    JSON), which Arrow writes quoted. Null stays null: an empty unquoted field."""
    arrays = []
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):  # e.g. a DuckDB ENUM: write its values
            column = column.dictionary_decode()
        kind = column.type
        if not (_plain(kind) or pa.types.is_floating(kind)):
            column = text_array(column) or _json_texts(column)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _json_texts(array: pa.Array) -> pa.Array:
    texts = [
        None if v is None else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
        for v in json_values(array)
    ]
    return pa.array(texts, pa.string())


def csv_chunks(source: Source) -> Iterator[bytes]:
    parquet = pq.ParquetFile(source)
    header = True
    for batch in parquet.iter_batches(batch_size=STREAM_ROWS):
        buffer = io.BytesIO()
        options = pcsv.WriteOptions(include_header=header)
        pcsv.write_csv(_csv_ready(batch), buffer, write_options=options)
        header = False
        yield buffer.getvalue()
    if header:  # no rows at all: still send the header line
        yield (",".join(json.dumps(n) for n in parquet.schema_arrow.names) + "\n").encode()


def arrow_chunks(source: Source) -> Iterator[bytes]:
    parquet = pq.ParquetFile(source)
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
