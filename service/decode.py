"""Decode an uploaded frame (JSON, CSV, NDJSON, Parquet, Arrow IPC) into Arrow batches,
conform them to the pipeline's input schema, and write one Parquet file.

Files are read batch by batch, so a large upload never sits whole in memory.
"""

from __future__ import annotations

import base64
import builtins
import collections
import functools
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from service.errors import InvalidFrame, PayloadTooLarge, first_line
from service.formats import Format
from service.frames import (
    FrameProblems,
    FrameSchema,
    Mode,
    columns_info,
    conform_batch,
    storable_batch,
)
from service.text import encodable

BATCH_ROWS = 64 * 1024
# The reader holds a few blocks at once: 1 MiB keeps a large upload's memory low
# (4 MiB cost ~200 MB more at the same speed); a single CSV row must fit in a block.
_CSV_BLOCK = 1024 * 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@dataclass(frozen=True)
class StoredFrame:
    """A frame written as Parquet: to a file, or (small JSON frames) to memory."""

    path: Path | None
    rows: int
    bytes: int
    columns: list[dict[str, Any]]
    data: builtins.bytes | None = None  # (the field `bytes` shadows the type here)
    schema: pa.Schema | None = None

    def open(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")


def write_frame(
    batches: Iterable[tuple[pa.RecordBatch, bool]],
    schema: FrameSchema | None,
    *,
    mode: Mode,
    dest: Path | None,
    max_columns: int | None = None,
) -> StoredFrame:
    """Conform each ``(batch, text_source)`` and write them as Parquet: to ``dest``, or
    to memory when ``dest`` is None (frames that arrived in memory anyway)."""
    try:
        return _write_frame(batches, schema, mode=mode, dest=dest, max_columns=max_columns)
    except UnicodeDecodeError as exc:  # Arrow decodes names lazily, wherever they are read
        raise InvalidFrame(f"a column or struct field name is not valid UTF-8: {exc}") from exc
    except UnicodeEncodeError as exc:  # a name Arrow could not take (values are checked)
        raise InvalidFrame(
            f"column name {exc.object!r} is not valid Unicode (a lone surrogate)"
        ) from exc


def _write_frame(
    batches: Iterable[tuple[pa.RecordBatch, bool]],
    schema: FrameSchema | None,
    *,
    mode: Mode,
    dest: Path | None,
    max_columns: int | None = None,
) -> StoredFrame:
    sink: Path | io.BytesIO = dest if dest is not None else io.BytesIO()
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for batch, text_source in batches:
            if writer is None and max_columns is not None:
                _check_width(batch.schema, max_columns)
            if schema is not None:
                batch = conform_batch(
                    batch, schema, mode=mode, text_source=text_source, row_offset=rows
                )
            batch = storable_batch(batch, row_offset=rows)
            if writer is None:
                _check_names(batch.schema)
                writer = parquet_writer(sink, batch.schema)
            elif not batch.schema.equals(writer.schema, check_metadata=False):
                raise InvalidFrame(
                    f"the frame's column types change at row {rows}: "
                    f"{_schema_text(writer.schema)} then {_schema_text(batch.schema)}"
                )
            writer.write_batch(batch)
            rows += batch.num_rows
        if writer is None:
            empty = schema.arrow if schema is not None else pa.schema([])
            _check_names(empty)
            writer = parquet_writer(sink, empty)
        written = writer.schema
    finally:
        if writer is not None:
            writer.close()
    if isinstance(sink, io.BytesIO):
        data = sink.getvalue()
        stored = stored_schema(written, pa.BufferReader(data))
        return StoredFrame(None, rows, len(data), columns_info(stored), data=data, schema=stored)
    stored = stored_schema(written, sink)
    return StoredFrame(sink, rows, sink.stat().st_size, columns_info(stored), schema=stored)


def stored_schema(written: pa.Schema, source: Path | pa.BufferReader) -> pa.Schema:
    """The schema as readers (and pipelines) see the file: Parquet stores timestamp[s]
    as ms, names list items "element" .... Read back only when a type may change:
    opening the file costs ~60 us, a third of what a small JSON frame costs to write."""
    if all(_round_trips(field.type) for field in written):
        return written
    return pq.read_schema(source)


def _round_trips(kind: pa.DataType) -> bool:
    if pa.types.is_timestamp(kind):
        return bool(kind.unit != "s")
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_date32(kind)
        or pa.types.is_decimal128(kind)
        or pa.types.is_time64(kind)
    )


def parquet_writer(dest: Path | io.BytesIO, schema: pa.Schema) -> pq.ParquetWriter:
    """Dictionary encoding only where it pays (text, bytes): for numbers it costs time
    and usually space (measured on 10 M rows: 1.4 s -> 0.7 s, 126 -> 100 MB)."""
    wordy = [
        f.name
        for f in schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_binary(f.type)
        or pa.types.is_large_binary(f.type)
    ]
    return pq.ParquetWriter(dest, schema, use_dictionary=wordy)


def _schema_text(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def _check_names(schema: pa.Schema) -> None:
    names = schema.names
    if not names:
        raise _frame_error("the frame has no columns")
    if any(not n for n in names):
        raise _frame_error("every column needs a non-empty name")
    for name in names:
        _check_name_text(name)
    if len(set(names)) != len(names):
        # Counted once: names.count() per name took 8 s for 20,000 columns and one
        # duplicate, and grows with the square (a 1 MB CSV header, minutes of CPU).
        dupes = sorted(n for n, seen in collections.Counter(names).items() if seen > 1)
        more = f" and {len(dupes) - 10} more" if len(dupes) > 10 else ""
        raise _frame_error(f"duplicate column names: {dupes[:10]}{more}")


def _check_width(schema: pa.Schema, max_columns: int) -> None:
    """Storing and binding a frame costs more than linearly in its columns: one row of
    100,000 columns (a 900 KB CSV) took 7 s to store and 60 s to bind in DuckDB, which
    a cancel or timeout stops only between steps (2 s timeout: ended after 15 s).
    Struct fields count as columns."""
    width = len(schema)
    types = [field.type for field in schema]
    while types and width <= max_columns:
        kind = types.pop()
        if pa.types.is_struct(kind):
            width += kind.num_fields
            types.extend(kind.field(i).type for i in range(kind.num_fields))
        elif pa.types.is_map(kind):
            types.extend((kind.key_type, kind.item_type))
        elif hasattr(kind, "value_type"):  # the list types
            types.append(kind.value_type)
    if width > max_columns:
        raise _frame_error(
            f"the frame has more than {max_columns} columns and struct fields"
            " (FRAMEJOBS_MAX_FRAME_COLUMNS)"
        )


def _frame_error(reason: str) -> InvalidFrame:
    """A fault of the frame as a whole; named as the field ``frame`` like field errors."""
    return InvalidFrame(reason, errors=[{"field": "frame", "reason": reason}])


def _check_name_text(name: str) -> None:
    if _CONTROL.search(name):
        raise InvalidFrame(f"column name {name!r} holds a control character")
    if not encodable(name):
        raise InvalidFrame(f"column name {name!r} is not valid Unicode (a lone surrogate)")


# -- JSON frames -------------------------------------------------------------------


def json_frame_batches(
    frame: Any, schema: FrameSchema | None
) -> Iterator[tuple[pa.RecordBatch, bool]]:
    """The ``frame`` member of a JSON submit body, as one batch."""
    if not isinstance(frame, dict) or len(frame.keys() & {"columns", "rows"}) != 1:
        raise _frame_error('frame must be an object with either "columns" or "rows"')
    if "columns" in frame:
        columns = _columns_from_mapping(frame["columns"])
    else:
        columns = _columns_from_rows(frame["rows"], first_row=0)
    if frame.get("rows") == [] and schema is not None:
        # "rows": [] names no columns; with a model the frame is simply empty
        yield _empty(schema), False
        return
    yield _batch_from_columns(columns, schema, row_offset=0), False


def _empty(schema: FrameSchema) -> pa.RecordBatch:
    arrow = schema.arrow
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in arrow], schema=arrow)


def _columns_from_mapping(columns: Any) -> dict[str, list[Any]]:
    if not isinstance(columns, dict):
        raise InvalidFrame('frame.columns must be an object of {"name": [values]}')
    problems = FrameProblems()
    for name, values in columns.items():
        if not isinstance(values, list):
            problems.add(name, "column values must be a list")
    problems.raise_if_any()
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise InvalidFrame(
            f"columns have different lengths: {lengths}",
            errors=[{"column": n, "reason": f"{k} values"} for n, k in lengths.items()],
        )
    return columns


def _columns_from_rows(rows: Any, first_row: int) -> dict[str, list[Any]]:
    if not isinstance(rows, list):
        raise InvalidFrame("frame.rows must be a list of objects")
    names: dict[str, None] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidFrame(
                f"row {first_row + index} is not an object",
                errors=[{"column": None, "rows": [first_row + index], "reason": "not an object"}],
            )
        names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in rows] for name in names}


def _batch_from_columns(
    columns: dict[str, list[Any]], schema: FrameSchema | None, row_offset: int
) -> pa.RecordBatch:
    problems = FrameProblems()
    targets = _targets(schema)
    arrays: dict[str, pa.Array] = {}
    for name, values in columns.items():
        array = _json_array(values, targets.get(name), name, row_offset, problems)
        if array is not None:
            arrays[name] = array
    problems.raise_if_any()
    if not arrays:
        return pa.RecordBatch.from_pydict({})
    return pa.RecordBatch.from_pydict(arrays)


def _targets(schema: FrameSchema | None) -> dict[str, pa.DataType]:
    if schema is None:
        return {}
    targets = {}
    for column in schema.columns:
        for key in (column.name, *column.aliases):
            targets[key] = column.type
    return targets


def _json_array(
    values: list[Any],
    target: pa.DataType | None,
    name: str,
    offset: int,
    problems: FrameProblems,
) -> pa.Array | None:
    if target is not None:
        try:
            values = _prepare_json_values(values, target)
        except ValueError as exc:
            rows = _bad_prepare_rows(values, target, offset)
            problems.add(name, f"cannot be read as {target}: {exc}", rows)
            return None
    try:
        return pa.array(values, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    except UnicodeEncodeError:
        rows = [
            i + offset
            for i, v in enumerate(values)
            if not encodable(json.dumps(v, ensure_ascii=False))
        ]
        problems.add(name, "text is not valid Unicode (a lone surrogate such as \\ud800)", rows[:5])
        return None
    if target is not None:
        # Mixed Python types: let the conform step judge each value against the target.
        try:
            return pa.array(values, type=target, from_pandas=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            reason = f"cannot be read as {target}: {str(exc).splitlines()[0][:200]}"
            problems.add(name, reason, _bad_json_rows(values, target, offset))
            return None
    if target is None and (array := _with_nonfinite_floats(values)) is not None:
        return array
    problems.add(name, "values of different types in one column", _odd_rows(values, offset))
    return None


def _with_nonfinite_floats(values: list[Any]) -> pa.Array | None:
    """Untyped columns: "NaN", "Infinity" and "-Infinity" among numbers are floats,
    as JSON output writes them (at any depth)."""
    try:
        return pa.array([_nonfinite_inside(v) for v in values], from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None


def _nonfinite_inside(value: Any) -> Any:
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, list):
        return [_nonfinite_inside(v) for v in value]
    if isinstance(value, dict):
        return {k: _nonfinite_inside(v) for k, v in value.items()}
    return value


def _prepare_json_values(values: list[Any], target: pa.DataType) -> list[Any]:
    """JSON spellings of values JSON has no type for, at any depth: "NaN" and
    "Infinity" in float columns, base64 for bytes, numbers in decimal columns."""
    prepare = _preparer(target)
    if prepare is None:
        return values
    return [None if v is None else prepare(v) for v in values]


def _preparer(target: pa.DataType) -> Callable[[Any], Any] | None:
    if pa.types.is_floating(target):
        return _float_value
    if pa.types.is_binary(target) or pa.types.is_large_binary(target):
        return _b64
    if pa.types.is_decimal(target):
        return _decimal_value
    if pa.types.is_list(target) or pa.types.is_large_list(target):
        item = _preparer(target.value_type)
        return None if item is None else functools.partial(_each_item, item)
    if pa.types.is_struct(target):
        fields = {f.name: p for f in target if (p := _preparer(f.type)) is not None}
        return functools.partial(_each_field, fields) if fields else None
    return None


def _float_value(value: Any) -> Any:
    return _NONFINITE.get(value, value) if isinstance(value, str) else value


def _decimal_value(value: Any) -> Any:
    # Numbers become text, so a column of 2 and 1.5 is one type. The repr of a JSON
    # float is the shortest text that reads back to it: exact for 1.1.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return value


def _b64(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError("bytes are written as base64 text") from None


def _each_item(prepare: Callable[[Any], Any], value: Any) -> Any:
    if not isinstance(value, list):
        return value
    return [None if v is None else prepare(v) for v in value]


def _each_field(fields: dict[str, Callable[[Any], Any]], value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: v if v is None or k not in fields else fields[k](v) for k, v in value.items()}


def _bad_prepare_rows(values: list[Any], target: pa.DataType, offset: int) -> list[int]:
    bad = []
    for index, value in enumerate(values):
        try:
            _prepare_json_values([value], target)
        except ValueError:
            bad.append(index + offset)
            if len(bad) >= 5:
                break
    return bad


def _bad_json_rows(values: list[Any], target: pa.DataType, offset: int) -> list[int]:
    bad = []
    for index, value in enumerate(values):
        try:
            pa.array([value], type=target, from_pandas=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            bad.append(index + offset)
            if len(bad) >= 5:
                break
    return bad


def _odd_rows(values: list[Any], offset: int) -> list[int]:
    kinds = [type(v) for v in values if v is not None]
    if not kinds:
        return []
    common = max(set(kinds), key=kinds.count)
    rows = [i + offset for i, v in enumerate(values) if v is not None and type(v) is not common]
    return rows[:5]


# -- files -------------------------------------------------------------------------


def file_batches(
    source: BinaryIO,
    fmt: Format,
    schema: FrameSchema | None,
    *,
    max_bytes: int | None = None,
    max_line_bytes: int | None = None,
) -> Iterator[tuple[pa.RecordBatch, bool]]:
    """The file's batches; a Parquet or Arrow frame past ``max_bytes`` decoded is
    PayloadTooLarge. Those formats compress: a file of a few KB can hold GBs (one zstd
    value of 300 MB is 10 KB), so the upload limit alone bounds neither the memory nor
    the disk a frame takes. Text formats are not counted: they only expand the way
    numbers do (``1,`` is 8 bytes as int64), within a bound of the upload limit."""
    source.seek(0)
    if fmt == "ndjson":
        yield from _ndjson(source, schema, max_line_bytes)
        return
    if fmt == "csv":
        yield from _csv(source, schema)
        return
    if fmt == "parquet" and max_bytes is not None:
        _check_declared_size(source, max_bytes)
        source.seek(0)
    batches = _parquet(source, schema) if fmt == "parquet" else _arrow(source, schema)
    decoded = 0
    for batch, text_source in batches:
        # counted once decoded: one batch (a row group, an IPC message) is decompressed
        # whole before its size is known; the limit bounds the frame, not one batch
        decoded += batch.nbytes
        if max_bytes is not None and decoded > max_bytes:
            raise _frame_too_large(max_bytes)
        yield batch, text_source


# How Arrow says a Parquet or IPC file is broken. NotImplemented: a damaged footer can
# declare types Arrow lacks (an integer of 128 bits). MemoryError: a compressed buffer
# says how large it is once decompressed, and Arrow allocates that first. Either was a
# 500 (a 2 KB file claiming exabytes; one flipped byte in a footer).
_UNREADABLE = (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, MemoryError)


def _check_declared_size(source: BinaryIO, max_bytes: int) -> None:
    """Refuse before decoding what the footer says is too large; a footer that lies
    is caught by the running count in file_batches."""
    try:
        metadata = pq.ParquetFile(source).metadata
    except _UNREADABLE:
        return  # not readable: _parquet says why
    declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if declared > max_bytes:
        raise _frame_too_large(max_bytes)


def _frame_too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the frame is larger than {max_bytes} bytes once decoded (FRAMEJOBS_MAX_FRAME_BYTES)"
    )


def _csv(path: BinaryIO, schema: FrameSchema | None) -> Iterator[tuple[pa.RecordBatch, bool]]:
    # Model columns are read as text and parsed by the conform step, which reports rows.
    # Only an empty unquoted field is null: "", "NA", "null", "NaN" are values.
    targets = _targets(schema)
    convert = pcsv.ConvertOptions(
        column_types={k: pa.string() for k in targets},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    rows = 0
    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=_CSV_BLOCK),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=convert,
        )
        for batch in _or_empty(reader, reader.schema):
            yield _csv_text_values(batch, targets, rows), True
            rows += batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidFrame(f"could not read the CSV file: {first_line(exc)}") from exc


def _csv_text_values(
    batch: pa.RecordBatch, targets: dict[str, pa.DataType], offset: int
) -> pa.RecordBatch:
    """CSV fields of bytes columns are base64, of list and struct columns JSON text."""
    problems = FrameProblems()
    arrays = list(batch.columns)
    for index, name in enumerate(batch.schema.names):
        target = targets.get(name)
        if target is None or not (pa.types.is_nested(target) or pa.types.is_binary(target)):
            continue
        values = batch.column(index).to_pylist()
        if pa.types.is_nested(target):
            values = _json_texts(values, name, offset, problems)
        array = _json_array(values, target, name, offset, problems)
        arrays[index] = pa.nulls(batch.num_rows) if array is None else array
    problems.raise_if_any()
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _json_texts(
    texts: list[str | None], name: str, offset: int, problems: FrameProblems
) -> list[Any]:
    values: list[Any] = []
    bad: list[int] = []
    for index, text in enumerate(texts):
        try:
            values.append(None if text is None else json.loads(text))
        except (ValueError, RecursionError):
            values.append(None)
            bad.append(index + offset)
    if bad:
        problems.add(name, "expected JSON text (a list or an object)", bad)
    return values


def _ndjson(
    handle: BinaryIO, schema: FrameSchema | None, max_line: int | None = None
) -> Iterator[tuple[pa.RecordBatch, bool]]:
    rows: list[Any] = []
    first = 0
    for line_no, line in enumerate(_lines(handle, max_line)):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise InvalidFrame(
                f"could not read NDJSON line {line_no + 1}: {reason}",
                errors=[{"column": None, "rows": [first + len(rows)], "reason": reason}],
            ) from exc
        if len(rows) >= BATCH_ROWS:
            yield _batch_from_columns(_columns_from_rows(rows, first), schema, first), False
            first += len(rows)
            rows = []
    if rows or first == 0:
        yield _batch_from_columns(_columns_from_rows(rows, first), schema, first), False


def _lines(handle: BinaryIO, max_line: int | None) -> Iterator[bytes]:
    """A line is parsed whole, into Python objects that take up to 20 times its size
    (``[],`` is 3 bytes, an empty list 56): a line may be as long as a JSON body."""
    if max_line is None:
        yield from handle
        return
    line_no = 0
    # max_line + 2: a line of the longest length still fits with its CRLF, so every
    # chunk read is a whole line (or one that is too long), and lines count right
    while line := handle.readline(max_line + 2):
        line_no += 1
        if len(line.rstrip(b"\r\n")) > max_line:
            raise PayloadTooLarge(
                f"NDJSON line {line_no} is longer than {max_line} bytes, the limit of a "
                "JSON body (FRAMEJOBS_MAX_JSON_BYTES); send wide rows as Parquet or Arrow"
            )
        yield line


def _parquet(path: BinaryIO, schema: FrameSchema | None) -> Iterator[tuple[pa.RecordBatch, bool]]:
    del schema
    try:
        parquet = pq.ParquetFile(path)
        batches = parquet.iter_batches(batch_size=BATCH_ROWS)
        for batch in _or_empty(batches, parquet.schema_arrow):
            yield _valid_text(batch), False
    except _UNREADABLE as exc:
        raise InvalidFrame(f"could not read the Parquet file: {first_line(exc)}") from exc


def _arrow(source: BinaryIO, schema: FrameSchema | None) -> Iterator[tuple[pa.RecordBatch, bool]]:
    del schema
    try:
        try:
            reader: Any = pa.ipc.open_stream(source)
            batches: Iterable[pa.RecordBatch] = reader
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        for batch in _or_empty(map(_valid_text, batches), reader.schema):
            yield batch, False
    except _UNREADABLE as exc:
        raise InvalidFrame(f"could not read the Arrow IPC data: {first_line(exc)}") from exc


def _valid_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Parquet and Arrow hand bytes through as they came; text that is not UTF-8 makes
    DuckDB fail fatally (and invalidate its whole database), so it is refused here."""
    try:
        batch.validate(full=True)
    except pa.ArrowInvalid as exc:
        column = _invalid_column(batch)
        raise InvalidFrame(
            f"column {column!r}: not valid UTF-8 text ({first_line(exc)})",
            errors=[{"column": column, "reason": "not valid UTF-8 text"}],
        ) from exc
    return batch


def _invalid_column(batch: pa.RecordBatch) -> str:
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            column.validate(full=True)
        except pa.ArrowInvalid:
            return str(name)
    return "?"


def _or_empty(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The batches, or one empty batch of ``schema`` when there are none: a file with
    a header (or a schema) and no rows is an empty frame, not one without columns."""
    empty = True
    for batch in batches:
        empty = False
        yield batch
    if empty:
        yield pa.RecordBatch.from_pylist([], schema=schema)
