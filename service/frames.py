"""Frame schemas and validation: a pipeline's input model becomes Arrow columns, and
every decoded batch is conformed to them (names and aliases, types, nullability).

Modes: ``strict`` accepts a value only when it already has the column's type (ints
widen and go into float and decimal columns when exact, and text formats may spell
dates, times, timestamps and decimals as strings; the same rules apply inside lists
and structs); ``coerce`` also converts wherever Arrow's safe cast is lossless
("1" -> 1, 2.0 -> 2, but never 2.5 -> 2). Errors name the column, the first bad rows
(0-based over the whole frame) and the reason.

Types Parquet or DuckDB cannot hold get exact stand-ins before storing
(:func:`storable_batch`): half floats widen, 256-bit decimals of up to 38 digits
narrow, intervals become structs; unions and wider decimals are refused.
"""

from __future__ import annotations

import datetime as dt
import decimal
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AliasChoices, AliasPath, AwareDatetime, BaseModel, NaiveDatetime, Strict
from pydantic.fields import FieldInfo

from service import constraints, nested
from service.constraints import MAX_BAD_ROWS, Check
from service.errors import InvalidFrame
from service.text import storable

Mode = Literal["strict", "coerce"]


@dataclass(frozen=True)
class Column:
    name: str
    aliases: tuple[str, ...]
    type: pa.DataType
    nullable: bool
    required: bool
    default: Any = None
    checks: tuple[Check, ...] = ()
    # The type with the model's nested nullability (``type`` is stored, relaxed):
    # set when something inside the column must not be null.
    declared: pa.DataType | None = None
    # StrictInt, Field(strict=True) or a strict model: strict whatever the job's mode
    strict: bool = False
    # A default_factory, called per row as the model would (a uuid4 or a time each)
    factory: Callable[[], Any] | None = None

    @property
    def label(self) -> str:
        """The name clients send (the alias when there is one), for error messages."""
        return self.aliases[0] if self.aliases else self.name

    def filler(self, rows: int) -> pa.Array:
        """The column a frame without it gets: its default in every row."""
        if self.factory is not None:
            return pa.array([self.factory() for _ in range(rows)], type=self.type)
        if self.default is None:
            return pa.nulls(rows, self.type)
        return pa.array([self.default] * rows, type=self.type)


@dataclass(frozen=True)
class FrameSchema:
    columns: tuple[Column, ...]
    extra: Literal["forbid", "ignore"]

    @property
    def arrow(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, c.nullable) for c in self.columns])


def schema_of(model: type[BaseModel]) -> FrameSchema:
    constraints.config_rules(model.model_config)
    strict = bool(model.model_config.get("strict"))
    columns = tuple(
        _column(name, field, strict=strict) for name, field in model.model_fields.items()
    )
    extra: Literal["forbid", "ignore"] = (
        "ignore" if model.model_config.get("extra") in ("ignore", "allow") else "forbid"
    )
    return FrameSchema(columns=columns, extra=extra)


def _column(name: str, field: FieldInfo, *, strict: bool) -> Column:
    try:
        declared, nullable = arrow_type_of(field.annotation, field.metadata)
    except TypeError as exc:
        raise TypeError(f"column {name!r}: {exc}") from exc
    arrow_type = nested.relaxed(declared)
    aliases = _aliases(name, field)
    required = field.is_required()
    default = None if required else field.get_default(call_default_factory=True)
    bare, inner = _unwrapped(field.annotation)
    checks = constraints.checks_for(bare, [*field.metadata, *inner], arrow_type, f"column {name!r}")
    column = Column(
        name,
        aliases,
        arrow_type,
        nullable,
        required,
        default,
        checks,
        declared=declared if declared != arrow_type else None,
        strict=_strict(strict, [*field.metadata, *inner]),
        factory=_factory(field) if not required else None,
    )
    try:
        column.filler(1)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise TypeError(f"column {name!r}: its default {default!r} is not a {arrow_type}") from exc
    return column


def _factory(field: FieldInfo) -> Callable[[], Any] | None:
    if field.default_factory is None:
        return None
    return lambda: field.get_default(call_default_factory=True)


def _strict(model_strict: bool, metadata: list[Any]) -> bool:
    """A field's own Strict wins over the model's, as in pydantic."""
    for item in metadata:
        if isinstance(item, Strict):
            return item.strict
    return model_strict


def _aliases(name: str, field: FieldInfo) -> tuple[str, ...]:
    """The names a frame may give the column: its alias, its validation alias or
    each of its ``AliasChoices``. A path into a nested value names no column."""
    found = [field.alias]
    given = field.validation_alias
    choices = given.choices if isinstance(given, AliasChoices) else [given]
    for choice in choices:
        if isinstance(choice, AliasPath):
            raise TypeError(f"column {name!r}: an AliasPath names no column of a frame")
        found.append(choice)
    return tuple(dict.fromkeys(a for a in found if isinstance(a, str)))


def _unwrapped(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under ``Annotated`` and ``| None``, and the metadata found on the way
    (``x: Annotated[int, Field(ge=0)] | None`` keeps ``ge`` there, not on the field)."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            for item in extra:
                metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, metadata
            annotation = args[0]
        else:
            return annotation, metadata


def _refuse_nested_constraints(annotation: Any, metadata: list[Any], where: str) -> None:
    bare, inner = _unwrapped(annotation)
    if constraints.has_constraints([*metadata, *inner], bare):
        raise TypeError(
            f"{where}: constraints inside lists and nested models are not checked on "
            "frames; check them in the pipeline, or constrain a top-level column"
        )


def arrow_type_of(annotation: Any, metadata: Sequence[Any] = ()) -> tuple[pa.DataType, bool]:
    """Arrow type of a Python annotation, and whether it admits None. ``metadata`` is
    the field's; ``Annotated`` adds its own on the way down, since pydantic lifts it
    onto the field only at the top (``condecimal(...) | None`` keeps its digits there)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        bare, *extra = typing.get_args(annotation)
        found = [
            m for item in extra for m in (item.metadata if isinstance(item, FieldInfo) else [item])
        ]
        return arrow_type_of(bare, [*metadata, *found])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union column type {annotation!r}")
        return arrow_type_of(args[0], metadata)[0], True
    if origin is typing.Literal and None in typing.get_args(annotation):
        return _scalar_type(annotation, metadata), True
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        _refuse_nested_constraints(item, [], f"list item {item!r}")
        item_type, item_nullable = arrow_type_of(item)
        return pa.list_(pa.field("item", item_type, item_nullable)), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        constraints.config_rules(annotation.model_config)
        for n, f in annotation.model_fields.items():
            _refuse_nested_constraints(f.annotation, f.metadata, f"field {n!r}")
        fields = [
            pa.field(n, *arrow_type_of(f.annotation, f.metadata))
            for n, f in annotation.model_fields.items()
        ]
        return pa.struct(fields), False
    return _scalar_type(annotation, metadata), False


_SCALARS: dict[Any, pa.DataType] = {
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    bytes: pa.binary(),
    dt.date: pa.date32(),
    dt.time: pa.time64("us"),
    dt.datetime: pa.timestamp("us"),
    NaiveDatetime: pa.timestamp("us"),
    AwareDatetime: pa.timestamp("us", tz="UTC"),
}


def _scalar_type(annotation: Any, metadata: Sequence[Any]) -> pa.DataType:
    if annotation is decimal.Decimal:
        return _decimal_type(metadata)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    allowed = constraints.choices(annotation)
    if allowed:
        return constraints.choice_type(allowed, f"{annotation!r}")
    raise TypeError(f"unsupported column type {annotation!r}")


def _decimal_type(metadata: Sequence[Any]) -> pa.DataType:
    """decimal128(max_digits, decimal_places); (38, 9) when the field sets neither."""
    limits = {"max_digits": None, "decimal_places": None}
    for meta in metadata:
        for key in limits:
            if getattr(meta, key, None) is not None:
                limits[key] = getattr(meta, key)
    digits, places = limits["max_digits"], limits["decimal_places"]
    if digits is None and places is None:
        return pa.decimal128(38, 9)
    if places is None:
        raise TypeError("a Decimal column with max_digits also needs decimal_places")
    digits = 38 if digits is None else digits
    if not 0 <= places <= digits <= 38:
        raise TypeError(
            f"a Decimal column needs 0 <= decimal_places <= max_digits <= 38 (DuckDB's "
            f"DECIMAL limit), not max_digits={digits}, decimal_places={places}"
        )
    return pa.decimal128(digits, places)


class FrameProblems:
    """Collects the problems of one frame; raises them together."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, column: str | None, reason: str, rows: list[int] | None = None) -> None:
        error: dict[str, Any] = {"column": column, "reason": reason}
        if rows is not None:
            error["rows"] = rows[:MAX_BAD_ROWS]
        self.errors.append(error)

    def raise_if_any(self) -> None:
        if self.errors:
            first = self.errors[0]
            where = f"column {first['column']!r}: " if first["column"] else ""
            rows = f" (rows {first['rows']})" if first.get("rows") else ""
            raise InvalidFrame(f"{where}{first['reason']}{rows}", errors=self.errors)


def conform_batch(
    batch: pa.RecordBatch,
    schema: FrameSchema,
    *,
    mode: Mode,
    text_source: bool,
    row_offset: int,
) -> pa.RecordBatch:
    """The batch with the schema's columns, names and types, or InvalidFrame."""
    problems = FrameProblems()
    by_name = _match_columns(batch.schema.names, schema, problems)
    arrays = []
    for column in schema.columns:
        source = by_name.get(column.name)
        if source is None:
            arrays.append(column.filler(batch.num_rows))
            continue
        array = batch.column(source)
        own = "strict" if column.strict else mode
        arrays.append(_conform_column(array, column, own, text_source, row_offset, problems))
    problems.raise_if_any()
    return pa.RecordBatch.from_arrays(arrays, schema=schema.arrow)


def _match_columns(
    names: list[str], schema: FrameSchema, problems: FrameProblems
) -> dict[str, int]:
    lookup = {}
    for column in schema.columns:
        for key in (column.name, *column.aliases):
            lookup[key] = column.name
    found: dict[str, int] = {}
    for index, name in enumerate(names):
        target = lookup.get(name)
        if target is None:
            if schema.extra == "forbid":
                problems.add(name, "unexpected column")
        elif target in found:
            problems.add(name, f"column given twice (as {names[found[target]]!r} and {name!r})")
        else:
            found[target] = index
    for column in schema.columns:
        if column.name not in found and column.required:
            problems.add(column.label, "missing column")
    return found


def _conform_column(
    array: pa.Array,
    column: Column,
    mode: Mode,
    text_source: bool,
    row_offset: int,
    problems: FrameProblems,
) -> pa.Array:
    target, label = column.type, column.label
    if array.type != target:
        if not _allowed(array.type, target, mode, text_source):
            rows = _non_null_rows(array, row_offset)
            problems.add(label, f"expected {_describe(target)}, got {_describe(array.type)}", rows)
            return pa.nulls(len(array), target)
        try:
            array = cast(array, target)
        except _CAST_ERRORS as exc:
            rows = _bad_cast_rows(array, target, row_offset)
            problems.add(label, f"cannot be read as {_describe(target)}: {_short(exc)}", rows)
            return pa.nulls(len(array), target)
    if not column.nullable and array.null_count:
        rows = [i + row_offset for i in _null_indices(array)]
        problems.add(label, "null in a column that does not allow nulls", rows)
        return array
    if column.declared is not None:
        for path, bad in nested.null_rows(array, column.declared, row_offset, MAX_BAD_ROWS):
            problems.add(label + path, "null in a field that does not allow nulls", bad)
    for check in column.checks:  # values of the column's type only, nulls skipped
        if bad := check.rows(array, row_offset):
            problems.add(label, check.reason, bad)
    return array


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def cast(array: pa.Array, target: pa.DataType) -> pa.Array:
    """Arrow's safe cast, plus text -> time of day (which Arrow lacks)."""
    if pa.types.is_time(target) and _is_text(array.type):
        return _time_from_text(array, target)
    return pc.cast(array, target, safe=True)


def _time_from_text(array: pa.Array, target: pa.DataType) -> pa.Array:
    # "HH:MM[:SS[.fraction]]" is read as the time of day of a timestamp on 1970-01-01.
    stamps = pc.binary_join_element_wise("1970-01-01T", array, "")
    try:
        return pc.cast(pc.cast(stamps, pa.timestamp(target.unit)), target)
    except pa.ArrowInvalid:
        digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[target.unit]
        raise pa.ArrowInvalid(
            f"expected a time of day HH:MM[:SS[.fraction]] with at most {digits} decimals"
        ) from None


def _is_text(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    )


def _allowed(source: pa.DataType, target: pa.DataType, mode: Mode, text_source: bool) -> bool:
    if mode == "coerce" or pa.types.is_null(source):
        return True
    if pa.types.is_dictionary(source):
        return _allowed(source.value_type, target, mode, text_source)
    if _is_text(source):
        return text_source or _parsed_from_text(target)
    if pa.types.is_integer(source):
        return bool(
            pa.types.is_integer(target)
            or pa.types.is_floating(target)
            or pa.types.is_decimal(target)
        )
    if _is_list(source) and _is_list(target):
        return _allowed(source.value_type, target.value_type, mode, text_source)
    if pa.types.is_struct(source) and pa.types.is_struct(target):
        return _allowed_fields(source, target, mode, text_source)
    return _same_kind(source, target)


def _is_binary(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
        or pa.types.is_binary_view(arrow_type)
    )


def _is_list(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


def _allowed_fields(
    source: pa.StructType, target: pa.StructType, mode: Mode, text_source: bool
) -> bool:
    """Strict applies inside structs too, field by field (fields match by name)."""
    names = {f.name for f in target}
    return all(
        _allowed(f.type, target.field(f.name).type, mode, text_source)
        for f in source
        if f.name in names
    )


def _parsed_from_text(target: pa.DataType) -> bool:
    # JSON has no date, timestamp or decimal type: strings are their strict spelling.
    return bool(
        pa.types.is_temporal(target)
        or pa.types.is_decimal(target)
        or pa.types.is_string(target)
        or pa.types.is_large_string(target)
    )


def _same_kind(source: pa.DataType, target: pa.DataType) -> bool:
    checks = (
        pa.types.is_floating,
        pa.types.is_decimal,
        pa.types.is_date,
        pa.types.is_time,
        _is_binary,
        pa.types.is_boolean,
    )
    if pa.types.is_timestamp(source) and pa.types.is_timestamp(target):
        return (source.tz is None) == (target.tz is None)
    return any(check(source) and check(target) for check in checks)


def _describe(arrow_type: pa.DataType) -> str:
    return str(arrow_type)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def _null_indices(array: pa.Array) -> list[int]:
    mask = pc.is_null(array)
    return pc.indices_nonzero(mask).slice(0, MAX_BAD_ROWS).to_pylist()  # type: ignore[no-any-return]


def _non_null_rows(array: pa.Array, offset: int) -> list[int]:
    mask = pc.is_valid(array)
    return [i + offset for i in pc.indices_nonzero(mask).slice(0, MAX_BAD_ROWS).to_pylist()]


def _bad_cast_rows(array: pa.Array, target: pa.DataType, offset: int) -> list[int]:
    """Row numbers of the first values that do not cast (slow path: errors only)."""
    bad: list[int] = []
    step = 4096
    for start in range(0, len(array), step):
        piece = array.slice(start, step)
        try:
            cast(piece, target)
            continue
        except _CAST_ERRORS:
            pass
        for i in range(len(piece)):
            try:
                cast(piece.slice(i, 1), target)
            except _CAST_ERRORS:
                bad.append(start + i + offset)
                if len(bad) >= MAX_BAD_ROWS:
                    return bad
    return bad


# -- storable types -------------------------------------------------------------------
# Some Arrow types cannot be written to Parquet or read by DuckDB. Frames and results
# are stored with exact stand-ins where one exists, else refused with a reason.

INTERVAL = pa.struct([("months", pa.int32()), ("days", pa.int32()), ("nanoseconds", pa.int64())])


# Levels of lists and structs a column may nest: Parquet readers give up at about 50
# (their schema depth limit of 100 nodes), and no frame of this service needs 16.
MAX_NESTING = 16


def storable_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [pa.field(f.name, _storable_type(f.type, f.name, 0), f.nullable) for f in schema]
    )


def _storable_type(kind: pa.DataType, name: str, depth: int) -> pa.DataType:
    if depth > MAX_NESTING:
        raise InvalidFrame(f"column {name!r} nests lists or structs more than {MAX_NESTING} deep")
    if pa.types.is_run_end_encoded(kind):
        return _storable_type(kind.value_type, name, depth)
    if isinstance(kind, pa.BaseExtensionType):
        # As their plain Arrow storage, which every reader knows; a UUID as its text
        if kind.extension_name == "arrow.uuid":
            return pa.string()
        return _storable_type(kind.storage_type, name, depth)
    if _is_list_view(kind):
        return _storable_type(pa.list_(kind.value_field), name, depth)
    if pa.types.is_dictionary(kind) and (depth > 0 or pa.types.is_nested(kind.value_type)):
        return _storable_type(kind.value_type, name, depth)  # Parquet writes flat ones only
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        item = kind.value_field
        child = item.with_type(_storable_type(item.type, name, depth + 1))
        return pa.list_(child) if pa.types.is_list(kind) else pa.large_list(child)
    if pa.types.is_struct(kind):
        _check_fields(kind, name)
        return pa.struct([f.with_type(_storable_type(f.type, name, depth + 1)) for f in kind])
    return _storable_scalar(kind, name)


def _check_fields(kind: pa.StructType, name: str) -> None:
    names = [f.name for f in kind]
    if not names:
        raise InvalidFrame(f"column {name!r}: a struct needs at least one field ({{}} has none)")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise InvalidFrame(f"column {name!r}: struct field names repeat: {repeated}")


def _storable_scalar(kind: pa.DataType, name: str) -> pa.DataType:
    if pa.types.is_float16(kind):
        return pa.float32()  # DuckDB has no 16-bit float
    if pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_binary_view(kind):
        return pa.binary()
    if pa.types.is_decimal256(kind) and kind.precision <= 38:
        return pa.decimal128(kind.precision, kind.scale)
    if pa.types.is_duration(kind) and kind.unit == "ns":
        return pa.duration("us")  # DuckDB keeps durations as microsecond intervals
    if kind == pa.month_day_nano_interval():
        return INTERVAL  # Parquet has no such type
    if pa.types.is_union(kind) or pa.types.is_decimal256(kind):
        raise InvalidFrame(
            f"column {name!r}: {kind} cannot be stored (unions and decimals of more "
            "than 38 digits have no Parquet or DuckDB equivalent)"
        )
    return kind


def storable_batch(batch: pa.RecordBatch, *, row_offset: int = 0) -> pa.RecordBatch:
    """The batch with the stand-ins of :func:`storable_schema`, or InvalidFrame."""
    schema = storable_schema(batch.schema)
    if schema.equals(batch.schema):
        return batch
    problems = FrameProblems()
    arrays = []
    for field, array in zip(schema, batch.columns, strict=True):
        try:
            arrays.append(_storable_array(array, field.type))
        except _CAST_ERRORS as exc:
            rows = _bad_cast_rows(array, field.type, row_offset)
            problems.add(field.name, f"cannot be stored exactly: {_short(exc)}", rows)
            arrays.append(pa.nulls(len(array), field.type))
    problems.raise_if_any()
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _storable_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    if pa.types.is_run_end_encoded(array.type):
        array = pc.run_end_decode(array)
    if isinstance(array.type, pa.BaseExtensionType):
        if array.type.extension_name == "arrow.uuid":
            return pa.array([None if u is None else str(u) for u in array.to_pylist()], target)
        array = array.storage
    if _has_list_view(array.type):
        # Arrow's own cast from list views gave invalid arrays here (pyarrow 26)
        return pa.array(array.to_pylist(), target)
    if pa.types.is_dictionary(array.type) and not pa.types.is_dictionary(target):
        array = array.dictionary_decode()
    if array.type == target:
        return array
    if _has_interval(array.type):
        return pa.array([_interval_parts(v) for v in array.to_pylist()], target)
    return pc.cast(array, target, safe=True)


def _is_list_view(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list_view(kind) or pa.types.is_large_list_view(kind))


def _has_list_view(kind: pa.DataType) -> bool:
    if _is_list(kind) or _is_list_view(kind):
        return _is_list_view(kind) or _has_list_view(kind.value_type)
    return pa.types.is_struct(kind) and any(_has_list_view(f.type) for f in kind)


def _has_interval(kind: pa.DataType) -> bool:
    if kind == pa.month_day_nano_interval():
        return True
    if _is_list(kind):
        return _has_interval(kind.value_type)
    return pa.types.is_struct(kind) and any(_has_interval(f.type) for f in kind)


def _interval_parts(value: Any) -> Any:
    if isinstance(value, pa.MonthDayNano):
        return {"months": value.months, "days": value.days, "nanoseconds": value.nanoseconds}
    if isinstance(value, list):
        return [_interval_parts(v) for v in value]
    if isinstance(value, dict):
        return {k: _interval_parts(v) for k, v in value.items()}
    return value


def columns_info(schema: pa.Schema) -> list[dict[str, Any]]:
    """The ``columns`` list of a job body: name and type of each column."""
    return [
        {"name": storable(f.name), "type": storable(str(f.type)), "nullable": f.nullable}
        for f in schema
    ]
