"""Field constraints of an input model, checked on whole Arrow columns.

A pipeline's input model may say more than a column's type: ``Field(ge=0)``,
``max_length=``, ``pattern=``, ``Literal["a", "b"]``, an ``Enum``, ``FiniteFloat``.
Running pydantic per row would cost far more than the rest of a submit, so each
constraint becomes one vectorised Arrow comparison over the column. Null values are
never "bad" here: whether a column may hold nulls is the schema's business.

A constraint this module cannot check raises ``TypeError`` when the model is read
(the pipeline does not load), so none is silently ignored. Validators
(``@field_validator``, ``AfterValidator``) are Python code and are not run on frames.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import annotated_types as at
import pyarrow as pa
import pyarrow.compute as pc
from pydantic.types import AllowInfNan

MAX_BAD_ROWS = 5

Mask = Callable[[pa.Array], pa.Array]


@dataclass(frozen=True)
class Check:
    """One constraint: ``bad(array)`` is True where a value breaks it."""

    reason: str
    bad: Mask

    def rows(self, array: pa.Array, offset: int) -> list[int]:
        """The first few rows (0-based, plus ``offset``) that break the constraint."""
        mask = pc.fill_null(self.bad(array), False)
        if not pc.any(mask).as_py():
            return []
        first = pc.indices_nonzero(mask).slice(0, MAX_BAD_ROWS).to_pylist()
        return [i + offset for i in first]


def choices(annotation: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` or ``Enum`` annotation, else None."""
    if typing.get_origin(annotation) is typing.Literal:
        # None admits nulls (the column is nullable); it is no value to check
        return tuple(v for v in typing.get_args(annotation) if v is not None)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(member.value for member in annotation)
    return None


def choice_type(values: tuple[Any, ...], label: str) -> pa.DataType:
    """The column type of a set of allowed values: all text, all ints or all bools."""
    kinds = {type(v) for v in values}
    for python_type, arrow_type in ((str, pa.string()), (bool, pa.bool_()), (int, pa.int64())):
        if kinds == {python_type}:
            return arrow_type
    raise TypeError(f"{label}: the allowed values must be all str, all int or all bool")


def checks_for(
    annotation: Any, metadata: Iterable[Any], column_type: pa.DataType, label: str
) -> tuple[Check, ...]:
    """The checks of one column, each tried once on an empty column of its type."""
    try:
        found = [_check(item, column_type) for item in _flat(metadata)]
    except TypeError as exc:
        raise TypeError(f"{label}: {exc}") from exc
    allowed = choices(annotation)
    if allowed is not None:
        found.append(_one_of(allowed, column_type))
    checks = tuple(c for c in found if c is not None)
    for check in checks:
        try:
            check.bad(pa.array([], column_type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise TypeError(f"{label}: cannot check {check.reason!r} on {column_type}") from exc
    return checks


def has_constraints(metadata: Iterable[Any], annotation: Any) -> bool:
    """Whether a field carries anything this module checks: used for nested fields,
    where nothing is checked and a constraint must therefore be refused."""
    return choices(annotation) is not None or any(_is_constraint(m) for m in _flat(metadata))


def _flat(metadata: Iterable[Any]) -> Iterable[Any]:
    """Metadata items, unpacking groups and ``Annotated`` aliases (``at.LowerCase``)."""
    for item in metadata:
        if typing.get_origin(item) is typing.Annotated:
            yield from _flat(item.__metadata__)
        elif isinstance(item, at.GroupedMetadata):  # Interval(gt=, le=), Len(1, 5)
            yield from _flat(item)
        else:
            yield item


def _is_constraint(item: Any) -> bool:
    if isinstance(item, AllowInfNan):
        return not item.allow_inf_nan
    if isinstance(item, tuple(_BUILDERS)):
        return True
    return _pattern_of(item) is not None or bool(_transforms(item)) or _unknown(item)


def _check(item: Any, column_type: pa.DataType) -> Check | None:
    for kind, build in _BUILDERS.items():
        if isinstance(item, kind):
            return build(item, column_type)
    if changes := _transforms(item):
        raise TypeError(f"{' and '.join(changes)} {_CHANGE}")
    pattern = _pattern_of(item)
    if pattern is not None:
        return _pattern(pattern)
    if _unknown(item):
        raise TypeError(f"the constraint {item!r} cannot be checked on a frame")
    return None  # validators, Strict, decimal digits: not constraints on values here


def _pattern_of(item: Any) -> str | None:
    # pydantic keeps `pattern=` (and options such as strict or max_digits, which shape
    # the column's type or the mode) in a private metadata class.
    if type(item).__name__ != "_PydanticGeneralMetadata":
        return None
    pattern = getattr(item, "pattern", None)
    return pattern if isinstance(pattern, str) else None


# Pydantic's string rules that change a value rather than check it.
_STRING_TRANSFORMS = ("strip_whitespace", "to_lower", "to_upper")
_CHANGE = "change values, and a frame is not changed: do it in the pipeline"


def _transforms(item: Any) -> list[str]:
    if type(item).__name__ != "_PydanticGeneralMetadata":
        return []
    return [name for name in _STRING_TRANSFORMS if getattr(item, name, None)]


def config_rules(config: Any) -> None:
    """Refuse a model_config string rule: it applies to every str field, unchecked here."""
    rules = [
        key for key in ("str_strip_whitespace", "str_to_lower", "str_to_upper") if config.get(key)
    ]
    if rules:
        raise TypeError(f"model_config {' and '.join(rules)} {_CHANGE}")
    lengths = [key for key in ("str_min_length", "str_max_length") if config.get(key)]
    if lengths:
        raise TypeError(
            f"model_config {' and '.join(lengths)} is not checked on frames; give each "
            "column its own Field(min_length=..., max_length=...)"
        )


def _unknown(item: Any) -> bool:
    """An annotated-types constraint with no Arrow check here (Predicate, Timezone …)."""
    pydantic_own = type(item).__module__.startswith("pydantic")  # Strict, FieldInfo parts
    return (
        isinstance(item, at.BaseMetadata)
        and not isinstance(item, tuple(_BUILDERS))
        and not pydantic_own
    )


def _bound(sign: str, breaks: Callable[[Any, Any], Any], limit: Any) -> Check:
    """``breaks(value, limit)`` is True on the wrong side of the limit."""
    return Check(f"must be {sign} {_show(limit)}", lambda a: breaks(a, limit))


def _lengths(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.utf8_length(array)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pc.list_value_length(array)
    return pc.binary_length(array)


def _unit(column_type: pa.DataType) -> str:
    if pa.types.is_string(column_type) or pa.types.is_large_string(column_type):
        return "characters"
    return "bytes" if pa.types.is_binary(column_type) else "items"


def _length(least: int | None, most: int | None, column_type: pa.DataType) -> Check:
    def bad(array: pa.Array) -> pa.Array:
        lengths = _lengths(array)
        short = pc.less(lengths, least or 0)
        return short if most is None else pc.or_(short, pc.greater(lengths, most))

    if most is None:
        limits = f"at least {least}"
    elif not least:
        limits = f"at most {most}"
    else:
        limits = f"{least} to {most}"
    return Check(f"must have {limits} {_unit(column_type)}", bad)


def _multiple_of(step: Any, column_type: pa.DataType) -> Check:
    if not pa.types.is_integer(column_type) or not isinstance(step, int) or step == 0:
        raise TypeError("multiple_of is checked on int columns only, by a non-zero int")

    def bad(array: pa.Array) -> pa.Array:
        # Integer division truncates, so x - (x / step) * step is 0 exactly when step
        # divides x, whatever the signs; the product never exceeds |x|.
        return pc.not_equal(pc.subtract(array, pc.multiply(pc.divide(array, step), step)), 0)

    return Check(f"must be a multiple of {step}", bad)


def _finite(allowed: bool) -> Check | None:
    if allowed:
        return None
    reason = "must be a finite number (not NaN or infinite)"
    return Check(reason, lambda a: pc.invert(pc.is_finite(a)))


def _pattern(pattern: str) -> Check:
    def bad(array: pa.Array) -> pa.Array:
        return pc.invert(pc.match_substring_regex(array, pattern))

    try:  # Arrow's regular expressions (RE2) lack a few of Python's, e.g. lookaround
        bad(pa.array([""]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TypeError(f"the pattern {pattern!r} cannot be checked: {exc}") from exc
    return Check(f"must match the pattern {pattern!r}", bad)


def _one_of(allowed: tuple[Any, ...], column_type: pa.DataType) -> Check:
    values = pa.array(list(allowed), column_type)
    shown = ", ".join(_show(v) for v in allowed)
    # is_in says False for a null, not null: without the validity mask every null of
    # an optional Literal or Enum column was refused as a value outside the choices
    return Check(
        f"must be one of {shown}",
        lambda a: pc.and_(pc.is_valid(a), pc.invert(pc.is_in(a, value_set=values))),
    )


def _show(value: Any) -> str:
    if isinstance(value, (dt.date, dt.time, decimal.Decimal)):
        return str(value)
    return repr(value)


_BUILDERS: dict[type, Callable[[Any, pa.DataType], Check | None]] = {
    at.Gt: lambda item, _: _bound(">", pc.less_equal, item.gt),
    at.Ge: lambda item, _: _bound(">=", pc.less, item.ge),
    at.Lt: lambda item, _: _bound("<", pc.greater_equal, item.lt),
    at.Le: lambda item, _: _bound("<=", pc.greater, item.le),
    at.MinLen: lambda item, kind: _length(item.min_length, None, kind),
    at.MaxLen: lambda item, kind: _length(None, item.max_length, kind),
    at.MultipleOf: lambda item, kind: _multiple_of(item.multiple_of, kind),
    AllowInfNan: lambda item, _: _finite(item.allow_inf_nan),
}
