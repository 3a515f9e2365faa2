"""frames: model -> Arrow schema, conform rules (strict vs coerce), row numbers,
storable stand-ins. No database."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Annotated, Any

import pyarrow as pa
import pytest
from pydantic import (
    AliasChoices,
    AliasPath,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NaiveDatetime,
    StrictInt,
    condecimal,
)

from service.errors import InvalidFrame
from service.frames import (
    INTERVAL,
    FrameSchema,
    Mode,
    conform_batch,
    schema_of,
    storable_batch,
)


class Inner(BaseModel):
    n: int | None = None
    s: str


class Everything(BaseModel):
    flag: bool
    i: int
    f: float
    s: str
    b: bytes
    day: dt.date
    clock: dt.time
    plain: dt.datetime
    naive: NaiveDatetime
    aware: AwareDatetime
    dec: Decimal
    money: Decimal = Field(max_digits=10, decimal_places=2)
    whole: Annotated[Decimal, Field(max_digits=12, decimal_places=0)]
    ints: list[int]
    inner: Inner
    maybe: int | None = None


def test_annotations_map_to_arrow_types() -> None:
    schema = schema_of(Everything)
    assert schema.arrow == pa.schema(
        [
            pa.field("flag", pa.bool_(), False),
            pa.field("i", pa.int64(), False),
            pa.field("f", pa.float64(), False),
            pa.field("s", pa.string(), False),
            pa.field("b", pa.binary(), False),
            pa.field("day", pa.date32(), False),
            pa.field("clock", pa.time64("us"), False),
            pa.field("plain", pa.timestamp("us"), False),
            pa.field("naive", pa.timestamp("us"), False),
            pa.field("aware", pa.timestamp("us", tz="UTC"), False),
            pa.field("dec", pa.decimal128(38, 9), False),
            pa.field("money", pa.decimal128(10, 2), False),
            pa.field("whole", pa.decimal128(12, 0), False),
            pa.field("ints", pa.list_(pa.int64()), False),
            # stored with nested fields nullable; what the model requires is checked
            pa.field(
                "inner",
                pa.struct([pa.field("n", pa.int64(), True), pa.field("s", pa.string(), True)]),
                False,
            ),
            pa.field("maybe", pa.int64(), True),
        ]
    )
    declared = {c.name: c.declared for c in schema.columns}
    assert declared["inner"] == pa.struct(
        [pa.field("n", pa.int64(), True), pa.field("s", pa.string(), False)]
    )
    assert declared["ints"] == pa.list_(pa.field("item", pa.int64(), False))
    assert declared["maybe"] is None  # nothing inside it to check
    required = {c.name: c.required for c in schema.columns}
    assert required["maybe"] is False and required["i"] is True
    assert schema.extra == "forbid"


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (int | str, "union"),
        (dict[str, int], "unsupported"),
        (Annotated[Decimal, Field(max_digits=5)], "decimal_places"),
        (Annotated[Decimal, Field(max_digits=40, decimal_places=2)], "38"),
        (Annotated[Decimal, Field(max_digits=3, decimal_places=5)], "decimal_places <="),
    ],
)
def test_unsupported_annotations_are_refused(annotation: Any, message: str) -> None:
    model = type("M", (BaseModel,), {"__annotations__": {"x": annotation}})
    with pytest.raises(TypeError, match=message):
        schema_of(model)


class Cents(BaseModel):
    due: condecimal(max_digits=6, decimal_places=2) | None = None


class DigitsEverywhere(BaseModel):
    maybe: condecimal(max_digits=6, decimal_places=2) | None = None
    annotated: Annotated[Decimal, Field(max_digits=6, decimal_places=2)] | None = None
    items: list[condecimal(max_digits=6, decimal_places=2)]
    inner: Cents


def test_decimal_digits_hold_under_optional_lists_and_structs() -> None:
    """max_digits/decimal_places shape the column wherever the Decimal sits: a value
    the model refuses (too many digits or places) must not fit the column either."""
    cents = pa.decimal128(6, 2)
    types = {f.name: f.type for f in schema_of(DigitsEverywhere).arrow}
    assert types["maybe"] == cents
    assert types["annotated"] == cents
    assert types["items"].value_type == cents
    assert types["inner"].field("due").type == cents
    errors = errors_of(
        lambda: conform(
            {
                "maybe": pa.array(["12.345"]),
                "items": pa.array([["1.5"]]),
                "inner": pa.array([{"due": "1.5"}]),
            },
            schema_of(DigitsEverywhere),
            mode="coerce",
            text=True,
        )
    )
    assert [e["column"] for e in errors] == ["maybe"]


class StrictColumns(BaseModel):
    marked: StrictInt
    field_strict: int | None = Field(default=None, strict=True)
    optional: StrictInt | None = None
    lax: int | None = None


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True)

    n: int


def test_strict_columns_are_strict_whatever_the_mode() -> None:
    """StrictInt, Field(strict=True) and a strict model_config were lost on frames: a
    coerce submit turned "1" into 1 where the model accepts ints only."""
    text = pa.array(["1"])
    errors = errors_of(
        lambda: conform(
            {"marked": text, "field_strict": text, "optional": text, "lax": text},
            schema_of(StrictColumns),
            mode="coerce",
        )
    )
    assert [e["column"] for e in errors] == ["marked", "field_strict", "optional"]
    errors = errors_of(lambda: conform({"n": text}, schema_of(StrictModel), mode="coerce"))
    assert [e["column"] for e in errors] == ["n"]


class Billing(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    user_id: int = Field(alias="userId")
    amount: float
    note: str | None = None


BILLING = schema_of(Billing)


def conform(
    columns: dict[str, pa.Array],
    schema: FrameSchema = BILLING,
    *,
    mode: Mode = "strict",
    text: bool = False,
    offset: int = 0,
) -> pa.RecordBatch:
    batch = pa.RecordBatch.from_pydict(columns)
    return conform_batch(batch, schema, mode=mode, text_source=text, row_offset=offset)


def errors_of(call: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidFrame) as caught:
        call()
    return caught.value.errors


def test_aliases_and_names_both_match() -> None:
    by_alias = conform({"userId": pa.array([1]), "amount": pa.array([1.5])})
    by_name = conform({"user_id": pa.array([1]), "amount": pa.array([1.5])})
    assert by_alias.schema.names == by_name.schema.names == ["user_id", "amount", "note"]
    assert by_alias.to_pydict() == {"user_id": [1], "amount": [1.5], "note": [None]}


class Chosen(BaseModel):
    user_id: int = Field(validation_alias=AliasChoices("userId", "uid"))


def test_alias_choices_each_name_the_column() -> None:
    schema = schema_of(Chosen)
    for given in ("userId", "uid", "user_id"):
        assert conform({given: pa.array([7])}, schema).to_pydict() == {"user_id": [7]}
    twice = errors_of(lambda: conform({"uid": pa.array([1]), "userId": pa.array([2])}, schema))
    assert "given twice" in twice[0]["reason"]


def test_an_alias_path_is_refused_at_load() -> None:
    class Pathed(BaseModel):
        city: str = Field(validation_alias=AliasPath("address", "city"))

    with pytest.raises(TypeError, match="AliasPath"):
        schema_of(Pathed)


def test_missing_extra_and_duplicate_columns() -> None:
    errors = errors_of(
        lambda: conform({"user_id": pa.array([1]), "userId": pa.array([2]), "other": pa.array([3])})
    )
    assert {"column": "userId", "reason": "column given twice (as 'user_id' and 'userId')"} in (
        errors
    )
    assert {"column": "other", "reason": "unexpected column"} in errors
    assert {"column": "amount", "reason": "missing column"} in errors
    missing_alias = errors_of(lambda: conform({"amount": pa.array([1.0])}))
    assert missing_alias == [{"column": "userId", "reason": "missing column"}]


def test_extra_columns_are_dropped_when_the_model_ignores_them() -> None:
    class Loose(BaseModel):
        model_config = ConfigDict(extra="ignore")
        a: int

    batch = conform({"a": pa.array([1]), "b": pa.array(["x"])}, schema_of(Loose))
    assert batch.to_pydict() == {"a": [1]}


def test_optional_columns_may_be_missing_and_null() -> None:
    batch = conform({"userId": pa.array([1, 2]), "amount": pa.array([1.0, 2.0])})
    assert batch.column("note").to_pylist() == [None, None]
    assert batch.schema.field("note").nullable


def test_nulls_in_a_required_column_are_reported_with_rows() -> None:
    columns = {"userId": pa.array([1, None, 3, None]), "amount": pa.array([1.0] * 4)}
    errors = errors_of(lambda: conform(columns, offset=100))
    assert errors == [
        {
            "column": "userId",
            "reason": "null in a column that does not allow nulls",
            "rows": [101, 103],
        }
    ]


def test_row_numbers_are_offset_and_capped_at_five() -> None:
    values = ["1"] * 10_000
    for bad in (3, 4500, 8191, 8192, 9000, 9999):
        values[bad] = "x"
    columns = {"userId": pa.array(values), "amount": pa.array([1.0] * 10_000)}
    errors = errors_of(lambda: conform(columns, mode="coerce", offset=70_000))
    assert errors[0]["column"] == "userId"
    assert errors[0]["rows"] == [70_003, 74_500, 78_191, 78_192, 79_000]


# (source array, target annotation, strict ok, coerce ok, value after conform)
CASES: list[tuple[str, pa.Array, Any, bool, bool, Any]] = [
    ("int into float", pa.array([2]), float, True, True, 2.0),
    ("big int into float", pa.array([2**53 + 1]), float, False, False, None),
    ("int into decimal", pa.array([7]), Decimal, True, True, Decimal("7.000000000")),
    ("int8 widens", pa.array([7], pa.int8()), int, True, True, 7),
    ("float into int", pa.array([2.0]), int, False, True, 2),
    ("fraction into int", pa.array([2.5]), int, False, False, None),
    ("float into decimal", pa.array([0.5]), Decimal, False, True, Decimal("0.500000000")),
    ("text into int", pa.array(["1"]), int, False, True, 1),
    ("text into date", pa.array(["2024-02-29"]), dt.date, True, True, dt.date(2024, 2, 29)),
    ("text into time", pa.array(["23:59:59.5"]), dt.time, True, True, dt.time(23, 59, 59, 500000)),
    ("text into decimal", pa.array(["1.25"]), Decimal, True, True, Decimal("1.250000000")),
    ("too many places", pa.array(["1.0000000001"]), Decimal, False, False, None),
    ("bool into int", pa.array([True]), int, False, True, 1),
    ("int into bool", pa.array([1]), bool, False, True, True),
    ("int into text", pa.array([1]), str, False, True, "1"),
    ("large text", pa.array(["a"], pa.large_string()), str, True, True, "a"),
    ("dictionary text", pa.array(["a"]).dictionary_encode(), str, True, True, "a"),
    ("fixed bytes", pa.array([b"ab"], pa.binary(2)), bytes, True, True, b"ab"),
    (
        "naive into aware",
        pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us")),
        AwareDatetime,
        False,
        True,  # coerce reads a naive timestamp as UTC
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    ),
    (
        "zone into UTC",
        pa.array([0], pa.timestamp("us", tz="America/New_York")),
        AwareDatetime,
        True,
        True,
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    ),
    (
        "ns into us",
        pa.array([1000], pa.timestamp("ns")),
        NaiveDatetime,
        True,
        True,
        dt.datetime(1970, 1, 1, 0, 0, 0, 1),
    ),
    ("sub-us into us", pa.array([1001], pa.timestamp("ns")), NaiveDatetime, False, False, None),
    ("ints into list[float]", pa.array([[1, 2]]), list[float], True, True, [1.0, 2.0]),
    ("ints into list[str]", pa.array([[1, 2]]), list[str], False, True, ["1", "2"]),
    ("struct by name", pa.array([{"s": "a", "n": 1}]), Inner, True, True, {"n": 1, "s": "a"}),
    ("struct field text", pa.array([{"n": "1", "s": "a"}]), Inner, False, True, {"n": 1, "s": "a"}),
]


@pytest.mark.parametrize("mode", ["strict", "coerce"])
@pytest.mark.parametrize(
    ("source", "annotation", "strict_ok", "coerce_ok", "value"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_strict_and_coerce(
    mode: Mode, source: pa.Array, annotation: Any, strict_ok: bool, coerce_ok: bool, value: Any
) -> None:
    schema = schema_of(type("M", (BaseModel,), {"__annotations__": {"x": annotation}}))
    accepted = strict_ok if mode == "strict" else coerce_ok
    if accepted:
        assert conform({"x": source}, schema, mode=mode).column(0).to_pylist() == [value]
    else:
        errors = errors_of(lambda: conform({"x": source}, schema, mode=mode))
        assert errors[0]["column"] == "x" and errors[0]["rows"] == [0]


def test_text_formats_may_spell_anything_in_strict_mode() -> None:
    """CSV fields are text: strict reads "1" as an int there (not in JSON)."""
    columns = {"userId": pa.array(["1"]), "amount": pa.array(["-inf"])}
    batch = conform(columns, text=True)
    assert batch.to_pydict() == {"user_id": [1], "amount": [float("-inf")], "note": [None]}
    errors = errors_of(lambda: conform(columns))
    assert errors[0]["reason"] == "expected int64, got string"


@pytest.mark.parametrize("text", ["24:00:00", "12:00:00+01:00", "12:00:00.1234567", "noon"])
def test_bad_times_of_day(text: str) -> None:
    schema = schema_of(type("M", (BaseModel,), {"__annotations__": {"t": dt.time}}))
    errors = errors_of(lambda: conform({"t": pa.array(["01:00", text])}, schema, text=True))
    assert errors[0]["rows"] == [1]
    assert "time of day HH:MM[:SS[.fraction]] with at most 6 decimals" in errors[0]["reason"]


def test_storable_stand_ins() -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "half": pa.array([1.5, None], pa.float16()),
            "wide": pa.array([Decimal("1.5"), None], pa.decimal256(20, 2)),
            "span": pa.array([pa.MonthDayNano([1, 2, 3]), None], pa.month_day_nano_interval()),
            "spans": pa.array([[pa.MonthDayNano([0, 1, 0])], None]),
            "runs": pa.RunEndEncodedArray.from_arrays([2], ["x"]),
            "ok": pa.array([1, 2]),
        }
    )
    stored = storable_batch(batch)
    assert stored.schema.types == [
        pa.float32(),
        pa.decimal128(20, 2),
        INTERVAL,
        pa.list_(INTERVAL),
        pa.string(),
        pa.int64(),
    ]
    assert stored.to_pylist()[0] == {
        "half": 1.5,
        "wide": Decimal("1.50"),
        "span": {"months": 1, "days": 2, "nanoseconds": 3},
        "spans": [{"months": 0, "days": 1, "nanoseconds": 0}],
        "runs": "x",
        "ok": 1,
    }
    unchanged = pa.RecordBatch.from_pydict({"ok": pa.array([1])})
    assert storable_batch(unchanged) is unchanged


def test_storable_refuses_what_has_no_exact_home() -> None:
    union = pa.UnionArray.from_sparse(pa.array([0], pa.int8()), [pa.array([1])])
    with pytest.raises(InvalidFrame, match="'u': sparse_union"):
        storable_batch(pa.RecordBatch.from_pydict({"u": union}))
    durations = pa.array([1000, 2001, 3000], pa.duration("ns"))
    errors = errors_of(
        lambda: storable_batch(pa.RecordBatch.from_pydict({"d": durations}), row_offset=10)
    )
    assert errors[0]["column"] == "d" and errors[0]["rows"] == [11]


def test_missing_columns_take_the_model_defaults() -> None:
    from pydantic import BaseModel, Field

    from service.frames import conform_batch, schema_of

    class WithDefaults(BaseModel):
        a: int
        b: int = 7
        c: str | None = None
        d: list[int] = Field(default_factory=list)

    batch = pa.record_batch({"a": [1, 2]})
    out = conform_batch(
        batch, schema_of(WithDefaults), mode="strict", text_source=False, row_offset=0
    )
    assert out.to_pylist() == [
        {"a": 1, "b": 7, "c": None, "d": []},
        {"a": 2, "b": 7, "c": None, "d": []},
    ]


def test_a_default_factory_is_called_for_each_row() -> None:
    """It was called once, at import: every row of every job got one uuid4 (or the
    process's start time, for datetime.now), where the model makes one per row."""
    counter = itertools.count(1)

    class Stamped(BaseModel):
        a: int
        seq: int = Field(default_factory=lambda: next(counter))

    schema = schema_of(Stamped)
    first = conform({"a": pa.array([1, 2])}, schema, mode="strict")
    second = conform({"a": pa.array([3])}, schema, mode="strict")
    seen = first.column("seq").to_pylist() + second.column("seq").to_pylist()
    assert len(set(seen)) == 3


def test_a_default_that_does_not_fit_its_column_is_refused_at_declaration() -> None:
    from pydantic import BaseModel

    from service.frames import schema_of

    class Bad(BaseModel):
        x: int = "zz"  # type: ignore[assignment]

    with pytest.raises(TypeError, match="default"):
        schema_of(Bad)


def test_empty_rows_frame_has_the_model_columns() -> None:
    from service.decode import json_frame_batches
    from service.frames import schema_of
    from service.pipelines.examples import BillingRow

    ((batch, _),) = list(json_frame_batches({"rows": []}, schema_of(BillingRow)))
    assert batch.num_rows == 0 and batch.schema.names == ["user_id", "amount"]
