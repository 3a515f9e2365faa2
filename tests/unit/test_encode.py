"""encode: Accept negotiation, the JSON value of each Arrow type, CSV text, paging and
streaming. No database."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service import encode
from service.encode import json_values
from service.errors import NotAcceptable
from service.negotiation import negotiate


@pytest.mark.parametrize(
    ("accept", "fmt", "expected"),
    [
        (None, None, "json"),
        ("", None, "json"),
        ("text/csv", "parquet", "parquet"),  # ?format= wins
        ("text/csv", None, "csv"),
        ("TEXT/CSV; charset=utf-8", None, "csv"),
        ("application/x-ndjson", None, "ndjson"),
        ("application/jsonl", None, "ndjson"),
        ("application/vnd.apache.parquet", None, "parquet"),
        ("application/x-parquet", None, "parquet"),
        ("application/vnd.apache.arrow.stream", None, "arrow"),
        ("application/vnd.apache.arrow.file", None, "arrow"),
        ("*/*", None, "json"),
        ("application/*", None, "json"),
        ("text/*", None, "csv"),
        ("text/csv;q=0.5, application/x-ndjson", None, "ndjson"),
        ("text/csv, application/x-ndjson", None, "csv"),  # equal q: the client's order
        ("application/json;q=0, text/csv;q=0.1", None, "csv"),
        ("image/png, */*;q=0.1", None, "json"),
        ("text/csv;q=zero, application/json;q=0.2", None, "json"),
        ("text/html, text/csv", None, "csv"),
        ("application/json;q=0, */*", None, "ndjson"),  # a refusal beats the wildcard
        ("text/csv;Q=0, text/*, application/json;q=0.1", None, "json"),
        ("text/csv;q=2, application/json;q=0.5", None, "json"),  # q above 1 is invalid
        ("text/csv;q=inf, application/json;q=0.5", None, "json"),
        ("text/csv; q = 0.500, application/json;q=0.4", None, "csv"),
        # the most specific range sets a type's quality (RFC 9110 12.5.1)
        ("application/json;q=0.1, */*;q=0.5", None, "ndjson"),
        ("application/*;q=0.9, application/json;q=0.1", None, "ndjson"),
        ("text/*;q=0.2, */*;q=0.9", None, "json"),
        ("*/*;q=0.9, text/*;q=0.2, text/csv", None, "csv"),
        (", ,", None, "json"),  # only empty elements: as if there were no Accept
    ],
)
def test_negotiate(accept: str | None, fmt: str | None, expected: str) -> None:
    assert negotiate(accept, fmt) == expected


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (None, "xml"),
        (None, ""),
        ("text/html", None),
        ("application/json;q=0", None),
        ("image/*", None),
        ("text/csv;q=0, text/*", None),
    ],
)
def test_not_acceptable(accept: str | None, fmt: str | None) -> None:
    with pytest.raises(NotAcceptable):
        negotiate(accept, fmt)


# (array, JSON values): the JSON value of each Arrow type (docs/formats.md)
RENDERINGS: dict[str, tuple[pa.Array, list[Any]]] = {
    "int64": (pa.array([-(2**63), 2**63 - 1, None]), [-(2**63), 2**63 - 1, None]),
    "uint64": (pa.array([2**64 - 1], pa.uint64()), [2**64 - 1]),
    "double": (
        pa.array([math.nan, math.inf, -math.inf, -0.0, 5e-324, None]),
        ["NaN", "Infinity", "-Infinity", -0.0, 5e-324, None],
    ),
    "float": (pa.array([0.1], pa.float32()), [0.10000000149011612]),
    "bool": (pa.array([True, False, None]), [True, False, None]),
    "string": (pa.array(["", "😀", None]), ["", "😀", None]),
    "large_string": (pa.array(["a"], pa.large_string()), ["a"]),
    "dictionary": (pa.array(["a", None, "a"]).dictionary_encode(), ["a", None, "a"]),
    "decimal": (
        pa.array(
            [Decimal("0"), Decimal("1E-9"), Decimal("-1.5"), Decimal("1E+20"), None],
            pa.decimal128(38, 9),
        ),
        ["0.000000000", "0.000000001", "-1.500000000", "100000000000000000000.000000000", None],
    ),
    "decimal(5, 0)": (pa.array([Decimal("12")], pa.decimal128(5, 0)), ["12"]),
    "binary": (pa.array([b"", b"\x00\xff", None]), ["", "AP8=", None]),
    "fixed_size_binary": (pa.array([b"ab"], pa.binary(2)), ["YWI="]),
    "date32": (
        pa.array([dt.date(1, 1, 1), dt.date(9999, 12, 31), None]),
        ["0001-01-01", "9999-12-31", None],
    ),
    "date32 beyond": (
        pa.array([-719_163, -719_529, 2_932_897, 2**31 - 1], pa.date32()),
        ["0000-12-31", "-000001-12-31", "+010000-01-01", "+5881580-07-11"],
    ),
    "date64": (pa.array([86_400_000], pa.date64()), ["1970-01-02"]),
    "time32[s]": (pa.array([1], pa.time32("s")), ["00:00:01"]),
    "time32[ms]": (pa.array([1], pa.time32("ms")), ["00:00:00.001"]),
    "time64[us]": (pa.array([86_399_999_999], pa.time64("us")), ["23:59:59.999999"]),
    "time64[ns]": (pa.array([1], pa.time64("ns")), ["00:00:00.000000001"]),
    "timestamp[s]": (pa.array([-1], pa.timestamp("s")), ["1969-12-31T23:59:59"]),
    "timestamp[ms]": (pa.array([1], pa.timestamp("ms")), ["1970-01-01T00:00:00.001"]),
    "timestamp[us]": (
        pa.array([dt.datetime(2024, 2, 29, 12, 0), None], pa.timestamp("us")),
        ["2024-02-29T12:00:00.000000", None],
    ),
    "timestamp[ns]": (pa.array([-1], pa.timestamp("ns")), ["1969-12-31T23:59:59.999999999"]),
    "timestamp UTC": (pa.array([0], pa.timestamp("us", "UTC")), ["1970-01-01T00:00:00.000000Z"]),
    "timestamp New York": (  # written in UTC
        pa.array([0], pa.timestamp("s", "America/New_York")),
        ["1970-01-01T00:00:00Z"],
    ),
    "timestamp beyond": (
        pa.array([2**63 - 1, -(2**62), 253_402_300_800], pa.timestamp("us")),
        [
            "+294247-01-10T04:00:54.775807",
            "-144169-06-28T09:59:32.612096",
            "1970-01-03T22:23:22.300800",
        ],
    ),
    "timestamp[s] beyond": (
        pa.array([253_402_300_800, -62_135_596_801], pa.timestamp("s", "UTC")),
        ["+010000-01-01T00:00:00Z", "0000-12-31T23:59:59Z"],
    ),
    "duration": (pa.array([1, -5, None], pa.duration("ns")), [1, -5, None]),
    "interval": (
        pa.array([pa.MonthDayNano([1, 2, 3]), None], pa.month_day_nano_interval()),
        [{"months": 1, "days": 2, "nanoseconds": 3}, None],
    ),
    "list": (
        pa.array([[1.5, math.nan, None], [], None], pa.list_(pa.float64())),
        [[1.5, "NaN", None], [], None],
    ),
    "large_list": (pa.array([[b"\x00"]], pa.large_list(pa.binary())), [["AA=="]]),
    "fixed_size_list": (
        pa.array([[Decimal("1.5"), None]], pa.list_(pa.decimal128(5, 2), 2)),
        [["1.50", None]],
    ),
    "struct": (
        pa.array(
            [{"t": dt.datetime(2024, 1, 1), "f": -math.inf}, {"t": None, "f": None}, None],
            pa.struct([("t", pa.timestamp("us", "UTC")), ("f", pa.float64())]),
        ),
        [{"t": "2024-01-01T00:00:00.000000Z", "f": "-Infinity"}, {"t": None, "f": None}, None],
    ),
    "map": (
        pa.array([[("k", dt.date(2024, 1, 1))]], pa.map_(pa.string(), pa.date32())),
        [[["k", "2024-01-01"]]],
    ),
    "null": (pa.nulls(2), [None, None]),
}


@pytest.mark.parametrize("name", RENDERINGS)
def test_json_values(name: str) -> None:
    array, expected = RENDERINGS[name]
    got = json_values(array)
    assert json.dumps(got) == json.dumps(expected)  # text: -0.0 != 0.0


@pytest.mark.parametrize("name", ["list", "large_list", "struct", "decimal", "timestamp beyond"])
def test_json_values_of_slices(name: str) -> None:
    """json_page slices batches: nested and patched columns must honour the offset."""
    array, expected = RENDERINGS[name]
    for start in range(len(array)):
        got = json_values(array.slice(start, 2))
        assert json.dumps(got) == json.dumps(expected[start : start + 2])


def test_expanded_dates_agree_with_the_calendar() -> None:
    epoch = dt.date(1970, 1, 1)
    for days in range(-719_162, 2_932_897, 997):
        assert encode._expanded_date(days) == (epoch + dt.timedelta(days=days)).isoformat()


def write(tmp_path: Path, table: pa.Table, row_group_size: int | None = None) -> Path:
    path = tmp_path / "result.parquet"
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


CSV_TABLE = pa.table(
    {
        "i": pa.array([1, None, -3]),
        "f": pa.array([0.1, None, math.nan]),
        "flag": pa.array([True, None, False]),
        "s": pa.array(['a "q", b', None, ""]),
        "d": pa.array([Decimal("0"), None, Decimal("-1.25")], pa.decimal128(10, 2)),
        "ts": pa.array([0, None, 1], pa.timestamp("ms", "UTC")),
        "xs": pa.array([[1, None], None, []]),
        "b": pa.array([b"\x00", None, b""]),
    }
)


def test_csv_text(tmp_path: Path) -> None:
    body = b"".join(encode.csv_chunks(write(tmp_path, CSV_TABLE))).decode()
    assert body == (
        '"i","f","flag","s","d","ts","xs","b"\n'
        '1,0.1,true,"a ""q"", b","0.00","1970-01-01T00:00:00.000Z","[1,null]","AA=="\n'
        ",,,,,,,\n"
        '-3,nan,false,"","-1.25","1970-01-01T00:00:00.001Z","[]",""\n'
    )


def test_csv_header_once_over_many_batches_and_for_no_rows(tmp_path: Path) -> None:
    rows = encode.STREAM_ROWS * 2 + 5
    path = write(tmp_path, pa.table({"n": pa.array(range(rows))}))
    body = b"".join(encode.csv_chunks(path)).decode()
    assert body.count('"n"') == 1 and body.splitlines()[-1] == str(rows - 1)
    empty = write(tmp_path, CSV_TABLE.slice(0, 0))
    assert b"".join(encode.csv_chunks(empty)) == b'"i","f","flag","s","d","ts","xs","b"\n'


def test_json_pages_across_batches(tmp_path: Path) -> None:
    rows = encode.STREAM_ROWS + 10
    path = write(tmp_path, pa.table({"n": pa.array(range(rows))}), row_group_size=1000)
    page = encode.json_page(path, offset=encode.STREAM_ROWS - 2, limit=5)
    assert [r["n"] for r in page["rows"]] == list(range(rows - 12, rows - 7))
    assert page["total"] == rows and page["next_offset"] == rows - 7
    last = encode.json_page(path, offset=rows - 3, limit=10)
    assert len(last["rows"]) == 3 and last["next_offset"] is None
    assert encode.json_page(path, offset=rows + 5, limit=10)["rows"] == []


def test_ndjson_and_arrow_streams(tmp_path: Path) -> None:
    path = write(tmp_path, CSV_TABLE)
    lines = b"".join(encode.ndjson_chunks(path)).decode().splitlines()
    assert json.loads(lines[0])["ts"] == "1970-01-01T00:00:00.000Z"
    assert json.loads(lines[2])["f"] == "NaN" and json.loads(lines[1])["s"] is None
    table = pa.ipc.open_stream(io.BytesIO(b"".join(encode.arrow_chunks(path)))).read_all()
    assert table.schema == CSV_TABLE.schema
    assert table.slice(0, 2).equals(CSV_TABLE.slice(0, 2))
