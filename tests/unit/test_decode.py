"""decode: format detection, JSON and CSV spellings, row numbers across batches, the
stored Parquet file. No database."""

from __future__ import annotations

import io
import json
import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel, ConfigDict, Field

from service import decode
from service.decode import file_batches, json_frame_batches, write_frame
from service.errors import InvalidFrame, UnsupportedMediaType
from service.formats import Format, detect_format
from service.frames import FrameSchema, Mode, schema_of


class Point(BaseModel):
    x: float | None = None


class Row(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    user_id: int = Field(alias="userId")
    amount: float | None = None
    note: str | None = None
    price: Decimal | None = Field(None, max_digits=10, decimal_places=2)
    blob: bytes | None = None
    xs: list[float | None] | None = None
    point: Point | None = None


ROW = schema_of(Row)


@pytest.mark.parametrize(
    ("content_type", "filename", "expected"),
    [
        ("text/csv; charset=utf-8", None, "csv"),
        ("TEXT/CSV", "frame.parquet", "csv"),  # the content type wins
        ("application/x-ndjson", None, "ndjson"),
        ("application/jsonl", None, "ndjson"),
        ("application/vnd.apache.parquet", None, "parquet"),
        ("application/vnd.apache.arrow.stream", None, "arrow"),
        ("application/vnd.apache.arrow.file", None, "arrow"),
        ("application/octet-stream", "frame.PARQUET", "parquet"),
        (None, "frame.jsonl", "ndjson"),
        (None, "frame.arrows", "arrow"),
        ("", "frame.feather", "arrow"),
    ],
)
def test_detect_format(content_type: str | None, filename: str | None, expected: str) -> None:
    assert detect_format(content_type, filename) == expected


@pytest.mark.parametrize(
    ("content_type", "filename"), [(None, None), ("application/json", "f.json")]
)
def test_unknown_formats_are_415(content_type: str | None, filename: str | None) -> None:
    with pytest.raises(UnsupportedMediaType, match="cannot tell the frame's format"):
        detect_format(content_type, filename)


def store(
    batches: Any, tmp_path: Path, schema: FrameSchema | None = ROW, mode: Mode = "strict"
) -> pa.Table:
    stored = write_frame(batches, schema, mode=mode, dest=tmp_path / "frame.parquet")
    table = pq.read_table(stored.path)
    assert stored.rows == table.num_rows
    return table


def from_json(frame: Any, tmp_path: Path, schema: FrameSchema | None = ROW) -> pa.Table:
    return store(json_frame_batches(frame, schema), tmp_path, schema)


def from_file(data: bytes, fmt: Format, tmp_path: Path, **kw: Any) -> pa.Table:
    schema = kw.pop("schema", ROW)
    return store(file_batches(io.BytesIO(data), fmt, schema), tmp_path, schema, **kw)


def errors_of(call: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidFrame) as caught:
        call()
    return caught.value.errors


# -- JSON --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [{}, {"columns": {}, "rows": []}, [], {"columns": []}, {"rows": {}}, {"rows": [1]}],
)
def test_malformed_json_frames(frame: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidFrame):
        from_json(frame, tmp_path)


def test_columns_of_different_lengths(tmp_path: Path) -> None:
    errors = errors_of(lambda: from_json({"columns": {"userId": [1, 2], "note": ["a"]}}, tmp_path))
    assert errors == [
        {"column": "userId", "reason": "2 values"},
        {"column": "note", "reason": "1 values"},
    ]


def test_json_spellings_at_any_depth(tmp_path: Path) -> None:
    rows = [
        {
            "userId": 1,
            "amount": "NaN",
            "price": 2,
            "blob": "AP8=",
            "xs": ["Infinity", 1],
            "point": {"x": "-Infinity"},
        },
        {"userId": 2, "amount": 1, "price": 1.5, "blob": "", "xs": [], "point": {}},
        {"userId": 3, "amount": None, "price": "0.01", "blob": None, "xs": None, "point": None},
    ]
    table = from_json({"rows": rows}, tmp_path)
    got = table.to_pylist()
    assert math.isnan(got[0]["amount"]) and got[1]["amount"] == 1.0
    assert [r["price"] for r in got] == [Decimal("2.00"), Decimal("1.50"), Decimal("0.01")]
    assert [r["blob"] for r in got] == [b"\x00\xff", b"", None]
    assert [r["xs"] for r in got] == [[math.inf, 1.0], [], None]
    assert [r["point"] for r in got] == [{"x": -math.inf}, {"x": None}, None]


def test_bad_base64_is_reported_with_rows(tmp_path: Path) -> None:
    frame = {"columns": {"userId": [1, 2, 3], "blob": ["AA==", "not base64!", "A"]}}
    errors = errors_of(lambda: from_json(frame, tmp_path))
    assert errors[0]["column"] == "blob" and errors[0]["rows"] == [1, 2]
    assert "base64" in errors[0]["reason"]


def test_json_values_of_the_wrong_type_name_their_rows(tmp_path: Path) -> None:
    frame = {"columns": {"userId": [1, "2", 3, True], "amount": [1.5, 2, "x", None]}}
    errors = errors_of(lambda: from_json(frame, tmp_path))
    assert [e["column"] for e in errors] == ["userId", "amount"]
    assert errors[0]["rows"] == [1, 3] and errors[1]["rows"] == [2]


def test_json_ints_beyond_int64(tmp_path: Path) -> None:
    errors = errors_of(lambda: from_json({"columns": {"userId": [1, 2**63]}}, tmp_path))
    assert errors[0]["column"] == "userId" and errors[0]["rows"] == [1]


def test_untyped_json_keeps_json_types(tmp_path: Path) -> None:
    columns = {
        "i": [-(2**63), 2**63 - 1, None],
        "f": [1.5, "NaN", "-Infinity"],  # non-finite spellings among numbers: floats
        "s": ["NaN", "1", ""],  # only text: stays text
        "nested": [{"x": 1.5}, {"x": "Infinity"}, None],
    }
    table = from_json({"columns": columns}, tmp_path, schema=None)
    assert table.schema.types == [
        pa.int64(),
        pa.float64(),
        pa.string(),
        pa.struct([("x", pa.float64())]),
    ]
    assert table.column("s").to_pylist() == ["NaN", "1", ""]
    assert table.column("nested").to_pylist()[1] == {"x": math.inf}


def test_untyped_mixed_values_name_the_odd_rows(tmp_path: Path) -> None:
    frame = {"rows": [{"a": 1}, {"a": 2}, {"a": "three"}, {"a": 4}]}
    errors = errors_of(lambda: from_json(frame, tmp_path, schema=None))
    assert errors == [
        {"column": "a", "reason": "values of different types in one column", "rows": [2]}
    ]


# -- CSV -----------------------------------------------------------------------------------


def test_csv_null_is_only_an_empty_unquoted_field(tmp_path: Path) -> None:
    text = 'userId,note\n1,\n2,""\n3,NA\n4,null\n5,NaN\n6,"N/A"\n7, \n'
    table = from_file(text.encode(), "csv", tmp_path)
    assert table.column("note").to_pylist() == [None, "", "NA", "null", "NaN", "N/A", " "]
    untyped = from_file(text.encode(), "csv", tmp_path, schema=None)
    assert untyped.column("note").to_pylist() == [None, "", "NA", "null", "NaN", "N/A", " "]


def test_csv_quoted_newlines_base64_and_json_text(tmp_path: Path) -> None:
    text = (
        "userId,amount,note,blob,xs,point\n"
        '1,nan,"two\r\nlines, ""quoted""",AP8=,"[1,""NaN"",null]","{""x"":-0.0}"\n'
        '2,-inf,"",,[],{}\n'
    )
    rows = from_file(text.encode(), "csv", tmp_path).to_pylist()
    assert rows[0]["note"] == 'two\r\nlines, "quoted"' and rows[1]["note"] == ""
    assert math.isnan(rows[0]["amount"]) and rows[1]["amount"] == -math.inf
    assert [r["blob"] for r in rows] == [b"\x00\xff", None]
    assert rows[0]["xs"][0] == 1.0 and math.isnan(rows[0]["xs"][1]) and rows[0]["xs"][2] is None
    assert rows[1]["xs"] == [] and rows[1]["point"] == {"x": None}
    assert math.copysign(1.0, rows[0]["point"]["x"]) == -1.0


def test_csv_bad_base64_and_bad_json_text(tmp_path: Path) -> None:
    text = "userId,blob,xs\n1,AA==,[1]\n2,%%%,[2\n3,,{}\n"
    errors = errors_of(lambda: from_file(text.encode(), "csv", tmp_path))
    assert [(e["column"], e["rows"]) for e in errors] == [("blob", [1]), ("xs", [1]), ("xs", [2])]
    assert errors[1]["reason"] == "expected JSON text (a list or an object)"
    assert errors[2]["reason"].startswith("cannot be read as list<item: double>")


def test_csv_that_does_not_parse(tmp_path: Path) -> None:
    with pytest.raises(InvalidFrame, match="could not read the CSV file"):
        from_file(b"userId,amount\n1,2,3\n", "csv", tmp_path)


@pytest.fixture(scope="module")
def big_csv() -> bytes:
    """About 9 MB: several 4 MiB blocks, so several batches."""
    pad = "p" * 40
    lines = [f"{i},{i}.5,{pad}\n" for i in range(180_000)]
    lines[5] = f"5,five,{pad}\n"
    lines[170_001] = f"170001,x,{pad}\n"
    return ("userId,amount,note\n" + "".join(lines)).encode()


def test_bad_values_in_later_csv_batches_are_numbered_over_the_whole_frame(
    big_csv: bytes, tmp_path: Path
) -> None:
    batches = list(file_batches(io.BytesIO(big_csv), "csv", ROW))
    assert len(batches) > 1
    errors = errors_of(lambda: from_file(big_csv, "csv", tmp_path))
    # The first bad batch stops the upload: row 5. Without it, row 170001 is reported.
    assert errors[0]["column"] == "amount" and errors[0]["rows"] == [5]
    fixed = big_csv.replace(b"5,five,", b"5,5.0,", 1)
    errors = errors_of(lambda: from_file(fixed, "csv", tmp_path))
    assert errors[0]["rows"] == [170_001]


def test_bad_values_in_later_ndjson_batches(tmp_path: Path) -> None:
    lines = [json.dumps({"userId": i, "amount": 1.0}) for i in range(decode.BATCH_ROWS + 10)]
    lines[decode.BATCH_ROWS + 7] = json.dumps({"userId": "x"})
    data = ("\n".join(lines) + "\n").encode()
    errors = errors_of(lambda: from_file(data, "ndjson", tmp_path))
    assert errors[0]["column"] == "userId" and errors[0]["rows"] == [decode.BATCH_ROWS + 7]


def test_ndjson_line_that_is_not_json(tmp_path: Path) -> None:
    data = b'{"userId": 1}\n\n{"userId": \n'
    errors = errors_of(lambda: from_file(data, "ndjson", tmp_path))
    assert errors[0]["rows"] == [1]


# -- the stored file -------------------------------------------------------------------


def test_column_types_that_change_between_batches(tmp_path: Path) -> None:
    rows = [{"a": 1}] * decode.BATCH_ROWS + [{"a": "one"}]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    with pytest.raises(InvalidFrame, match=f"change at row {decode.BATCH_ROWS}"):
        from_file(data, "ndjson", tmp_path, schema=None)


def test_duplicate_and_empty_names_are_refused(tmp_path: Path) -> None:
    for names, message in ((["a", "a"], "duplicate column names"), (["a", ""], "non-empty")):
        table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=names)
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        with pytest.raises(InvalidFrame, match=message):
            from_file(sink.getvalue(), "arrow", tmp_path, schema=None)


def test_duplicate_names_among_many_columns_are_found_at_once() -> None:
    """The check counted each name over the whole list: 40,000 columns with one
    duplicate (a 300 KB CSV header) held a request thread for half a minute."""
    names = [f"c{i}" for i in range(40_000)] + ["c7"]
    schema = pa.schema([(name, pa.int8()) for name in names])
    started = time.monotonic()
    with pytest.raises(InvalidFrame, match=r"duplicate column names: \['c7'\]$"):
        decode._check_names(schema)
    assert time.monotonic() - started < 2


def test_an_empty_frame_keeps_the_model_columns(tmp_path: Path) -> None:
    table = from_file(b"userId,amount\n", "csv", tmp_path)
    assert table.num_rows == 0 and table.schema.names == ROW.arrow.names


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_binary_formats_that_do_not_parse(fmt: Format, tmp_path: Path) -> None:
    with pytest.raises(InvalidFrame, match="could not read"):
        from_file(b"not a file at all", fmt, tmp_path)
