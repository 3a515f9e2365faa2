"""constraints: a model's field constraints become Arrow checks; what cannot be
checked on a frame refuses to load instead of being ignored. No database."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Annotated, Any, Literal

import annotated_types as at
import pyarrow as pa
import pytest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, constr
from pydantic.types import FiniteFloat

from service.errors import InvalidFrame
from service.frames import conform_batch, schema_of


class Color(enum.Enum):
    RED = "r"
    BLUE = "b"


def model(annotation: Any, default: Any = ...) -> type[BaseModel]:
    namespace: dict[str, Any] = {"__annotations__": {"x": annotation}}
    if default is not ...:
        namespace["x"] = default
    return type("M", (BaseModel,), namespace)


def bad_rows(annotation: Any, values: list[Any], offset: int = 0) -> list[dict[str, Any]]:
    schema = schema_of(model(annotation))
    batch = pa.RecordBatch.from_pydict({"x": values})
    try:
        conform_batch(batch, schema, mode="coerce", text_source=False, row_offset=offset)
    except InvalidFrame as exc:
        return exc.errors
    return []


@pytest.mark.parametrize(
    ("annotation", "values", "reason", "rows"),
    [
        (Annotated[int, Field(gt=0)], [1, 0, -1], "must be > 0", [1, 2]),
        (Annotated[int, Field(ge=0)], [0, -1], "must be >= 0", [1]),
        (Annotated[int, Field(lt=5)], [4, 5], "must be < 5", [1]),
        (Annotated[int, Field(le=5)], [5, 6], "must be <= 5", [1]),
        (Annotated[int, at.Interval(gt=0, le=2)], [1, 3], "must be <= 2", [1]),
        (Annotated[int, Field(multiple_of=3)], [-9, 3, 0, -4, 7], "multiple of 3", [3, 4]),
        (Annotated[float, Field(allow_inf_nan=False)], [1.0, float("nan")], "finite", [1]),
        (FiniteFloat, [float("-inf"), 2.0], "finite", [0]),
        (Annotated[str, Field(min_length=2)], ["ab", "é", ""], "at least 2 characters", [1, 2]),
        (Annotated[str, Field(max_length=2)], ["éé", "abc"], "at most 2 characters", [1]),
        (Annotated[bytes, Field(max_length=1)], [b"a", b"ab"], "at most 1 bytes", [1]),
        (Annotated[list[int], Field(min_length=1)], [[1], []], "at least 1 items", [1]),
        (Annotated[str, at.Len(1, 2)], ["a", "abc"], "at most 2 characters", [1]),
        (Annotated[str, Field(pattern=r"^\d+$")], ["12", "1a"], "pattern", [1]),
        (Literal["a", "b"], ["a", "c"], "must be one of 'a', 'b'", [1]),
        (Literal[1, 2], [2, 3], "must be one of 1, 2", [1]),
        (Color, ["r", "g"], "must be one of 'r', 'b'", [1]),
        (
            Annotated[dt.date, Field(ge=dt.date(2020, 1, 1))],
            [dt.date(2019, 12, 31)],
            "2020-01-01",
            [0],
        ),
        (
            Annotated[Decimal, Field(max_digits=5, decimal_places=2, gt=0)],
            [Decimal("0")],
            "> 0",
            [0],
        ),
        (Annotated[int, Field(ge=0)] | None, [None, -1, 1], "must be >= 0", [1]),
        # a null is no value outside the choices (is_in says False for it, not null)
        (Literal["a", "b"] | None, [None, "c"], "must be one of 'a', 'b'", [1]),
        (Color | None, ["r", None, "g"], "must be one of 'r', 'b'", [2]),
        # None among the values makes the column nullable, as in pydantic
        (Literal["a", None], [None, "a", "b"], "must be one of 'a'", [2]),
    ],
)
def test_each_constraint_names_its_rows(
    annotation: Any, values: list[Any], reason: str, rows: list[int]
) -> None:
    errors = bad_rows(annotation, values)
    assert len(errors) == 1, errors
    assert errors[0]["column"] == "x" and reason in errors[0]["reason"], errors
    assert errors[0]["rows"] == rows


def test_rows_are_offset_and_nulls_are_not_checked() -> None:
    assert bad_rows(Annotated[int, Field(ge=0)] | None, [None, -1], offset=1000) == [
        {"column": "x", "reason": "must be >= 0", "rows": [1001]}
    ]
    assert bad_rows(Annotated[int, Field(ge=0)] | None, [None, None]) == []


def test_literal_and_enum_columns_take_the_type_of_their_values() -> None:
    assert schema_of(model(Literal["a", "b"])).arrow.field("x").type == pa.string()
    assert schema_of(model(Literal[1, 2] | None, None)).arrow.field("x").type == pa.int64()
    assert schema_of(model(Color)).arrow.field("x").type == pa.string()


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (Annotated[float, Field(multiple_of=0.5)], "multiple_of"),
        (Annotated[int, at.Predicate(lambda v: v > 0)], "cannot be checked"),
        (Annotated[str, at.LowerCase], "cannot be checked"),
        (Annotated[bool, Field(ge=1)], "cannot check"),
        (list[Annotated[int, Field(ge=0)]], "nested"),
        (Literal["a", 1], "all str"),
    ],
)
def test_constraints_that_cannot_be_checked_refuse_to_load(annotation: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        schema_of(model(annotation))


@pytest.mark.parametrize(
    "annotation",
    [
        constr(strip_whitespace=True, min_length=1),
        Annotated[str, StringConstraints(to_lower=True)],
        constr(to_upper=True) | None,
    ],
)
def test_string_transforms_refuse_to_load(annotation: Any) -> None:
    """The model would strip or recase each value; a frame is not changed, so '  ' got
    past min_length=1 and 'ABC' stayed 'ABC'. Nothing may be silently ignored."""
    with pytest.raises(TypeError, match="change values"):
        schema_of(model(annotation))


@pytest.mark.parametrize(
    "config",
    [
        {"str_strip_whitespace": True},
        {"str_to_lower": True},
        {"str_to_upper": True},
        {"str_min_length": 1},
        {"str_max_length": 3},
    ],
)
def test_string_rules_of_the_model_config_refuse_to_load(config: dict[str, Any]) -> None:
    """model_config's string rules hold for every str field: they were not applied."""
    made = type(
        "Configured",
        (BaseModel,),
        {"__annotations__": {"s": str}, "model_config": ConfigDict(**config)},  # type: ignore[typeddict-item]
    )
    with pytest.raises(TypeError, match=next(iter(config))):
        schema_of(made)
    nesting = type("Nesting", (BaseModel,), {"__annotations__": {"inner": made}})
    with pytest.raises(TypeError, match=next(iter(config))):
        schema_of(nesting)


def test_constraints_inside_a_nested_model_refuse_to_load() -> None:
    class Inner(BaseModel):
        n: int = Field(ge=0)

    with pytest.raises(TypeError, match="nested"):
        schema_of(model(Inner))


def test_validators_and_plain_metadata_are_not_constraints() -> None:
    annotation = Annotated[int, AfterValidator(lambda v: v), Field(description="d", strict=True)]
    assert bad_rows(annotation, [-5]) == []
