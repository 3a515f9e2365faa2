"""Fidelity matrix: values survive in -> DuckDB -> out exactly, for each input format
(JSON columns, JSON rows, NDJSON, CSV, Parquet, Arrow IPC) and each output format
(json, ndjson, csv, parquet, arrow).

Text inputs go through the typed ``identity`` pipeline (its model parses text into the
Arrow types), Parquet and Arrow through ``sql`` with ``select * from input`` (they
carry their own types). One job per input format; every output is fetched from it.
The text renderings below are the contract written down in docs/formats.md.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from tests.support.jobs import wait_status

UTC = dt.UTC
NAN, INF = math.nan, math.inf

SCHEMA = pa.schema(
    [
        ("i", pa.int64()),
        ("f", pa.float64()),
        ("dec", pa.decimal128(38, 9)),
        ("money", pa.decimal128(10, 2)),
        ("day", pa.date32()),
        ("clock", pa.time64("us")),
        ("ts", pa.timestamp("us")),
        ("tstz", pa.timestamp("us", tz="UTC")),
        ("flag", pa.bool_()),
        ("text", pa.string()),
        ("blob", pa.binary()),
        ("tags", pa.list_(pa.string())),
        ("point", pa.struct([("x", pa.float64()), ("label", pa.string())])),
    ]
)

# The values, one tuple per row, in SCHEMA's column order.
ROWS: list[tuple[Any, ...]] = [
    (
        -(2**63),
        -INF,
        Decimal("-99999999999999999999999999999.999999999"),
        Decimal("-99999999.99"),
        dt.date(1, 1, 1),
        dt.time(0, 0),
        dt.datetime(1, 1, 1),
        dt.datetime(1, 1, 1, tzinfo=UTC),
        False,
        "",
        b"",
        [],
        {"x": -0.0, "label": ""},
    ),
    (
        2**63 - 1,
        INF,
        Decimal("99999999999999999999999999999.999999999"),
        Decimal("99999999.99"),
        dt.date(9999, 12, 31),
        dt.time(23, 59, 59, 999999),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        True,
        'héllo, "wörld"\n😀 𝄞 中文\t',
        b"\x00\xff\x10\n",
        ["a", None, "", "😀"],
        {"x": NAN, "label": None},
    ),
    (
        0,
        NAN,
        Decimal("0E-9"),
        Decimal("0.00"),
        dt.date(1970, 1, 1),
        dt.time(12, 0, 0, 1),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
        dt.datetime(2024, 2, 29, 12, 34, 56, 123456, tzinfo=UTC),
        None,
        "NaN",
        b"any\x00bytes",
        None,
        None,
    ),
    (
        -1,
        0.1,
        Decimal("0.000000001"),
        Decimal("0.01"),
        dt.date(2024, 2, 29),
        dt.time(0, 0, 0, 1),
        dt.datetime(2024, 2, 29, 12, 34, 56, 1),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        True,
        "null",
        "😀".encode(),
        ["x"],
        {"x": None, "label": "é"},
    ),
    (
        1,
        -0.0,
        Decimal("-0.500000000"),
        Decimal("-0.01"),
        dt.date(1969, 12, 31),
        None,
        None,
        None,
        False,
        "NA",
        None,
        [None],
        {"x": 1.5, "label": "a,b"},
    ),
    (
        2**53 + 1,
        5e-324,
        Decimal("12345678901234567890.123456789"),
        Decimal("12345678.90"),
        None,
        dt.time(6, 7, 8),
        dt.datetime(2000, 1, 1),
        dt.datetime(2000, 1, 1, tzinfo=UTC),
        None,
        "line1\r\nline2",
        None,
        None,
        {"x": None, "label": None},
    ),
    (
        -(2**53 + 1),
        1.7976931348623157e308,
        Decimal("-0.000000001"),
        None,
        dt.date(2000, 1, 1),
        None,
        None,
        None,
        True,
        " padded \\N ",
        b"framejobs",
        ["😀", '"q"'],
        None,
    ),
    (
        None,
        1e16,
        None,
        Decimal("1.00"),
        None,
        None,
        None,
        None,
        None,
        "nul\x00char",
        None,
        None,
        None,
    ),
    (None,) * 13,
]

TRUTH = pa.Table.from_pylist([dict(zip(SCHEMA.names, row, strict=True)) for row in ROWS], SCHEMA)

# JSON (and NDJSON) rendering: decimals, dates, times, timestamps as strings with the
# unit's digits, timestamps with a time zone in UTC with "Z", bytes base64, non-finite
# floats as "NaN"/"Infinity"/"-Infinity", lists as arrays, structs as objects.
JSON_ROWS: list[dict[str, Any]] = [
    {
        "i": -9223372036854775808,
        "f": "-Infinity",
        "dec": "-99999999999999999999999999999.999999999",
        "money": "-99999999.99",
        "day": "0001-01-01",
        "clock": "00:00:00.000000",
        "ts": "0001-01-01T00:00:00.000000",
        "tstz": "0001-01-01T00:00:00.000000Z",
        "flag": False,
        "text": "",
        "blob": "",
        "tags": [],
        "point": {"x": -0.0, "label": ""},
    },
    {
        "i": 9223372036854775807,
        "f": "Infinity",
        "dec": "99999999999999999999999999999.999999999",
        "money": "99999999.99",
        "day": "9999-12-31",
        "clock": "23:59:59.999999",
        "ts": "9999-12-31T23:59:59.999999",
        "tstz": "9999-12-31T23:59:59.999999Z",
        "flag": True,
        "text": 'héllo, "wörld"\n😀 𝄞 中文\t',
        "blob": "AP8QCg==",
        "tags": ["a", None, "", "😀"],
        "point": {"x": "NaN", "label": None},
    },
    {
        "i": 0,
        "f": "NaN",
        "dec": "0.000000000",
        "money": "0.00",
        "day": "1970-01-01",
        "clock": "12:00:00.000001",
        "ts": "1969-12-31T23:59:59.999999",
        "tstz": "2024-02-29T12:34:56.123456Z",
        "flag": None,
        "text": "NaN",
        "blob": "YW55AGJ5dGVz",
        "tags": None,
        "point": None,
    },
    {
        "i": -1,
        "f": 0.1,
        "dec": "0.000000001",
        "money": "0.01",
        "day": "2024-02-29",
        "clock": "00:00:00.000001",
        "ts": "2024-02-29T12:34:56.000001",
        "tstz": "1969-12-31T23:59:59.999999Z",
        "flag": True,
        "text": "null",
        "blob": "8J+YgA==",
        "tags": ["x"],
        "point": {"x": None, "label": "é"},
    },
    {
        "i": 1,
        "f": -0.0,
        "dec": "-0.500000000",
        "money": "-0.01",
        "day": "1969-12-31",
        "clock": None,
        "ts": None,
        "tstz": None,
        "flag": False,
        "text": "NA",
        "blob": None,
        "tags": [None],
        "point": {"x": 1.5, "label": "a,b"},
    },
    {
        "i": 9007199254740993,
        "f": 5e-324,
        "dec": "12345678901234567890.123456789",
        "money": "12345678.90",
        "day": None,
        "clock": "06:07:08.000000",
        "ts": "2000-01-01T00:00:00.000000",
        "tstz": "2000-01-01T00:00:00.000000Z",
        "flag": None,
        "text": "line1\r\nline2",
        "blob": None,
        "tags": None,
        "point": {"x": None, "label": None},
    },
    {
        "i": -9007199254740993,
        "f": 1.7976931348623157e308,
        "dec": "-0.000000001",
        "money": None,
        "day": "2000-01-01",
        "clock": None,
        "ts": None,
        "tstz": None,
        "flag": True,
        "text": " padded \\N ",
        "blob": "ZnJhbWVqb2Jz",
        "tags": ["😀", '"q"'],
        "point": None,
    },
    {
        "i": None,
        "f": 1e16,
        "dec": None,
        "money": "1.00",
        "day": None,
        "clock": None,
        "ts": None,
        "tstz": None,
        "flag": None,
        "text": "nul\x00char",
        "blob": None,
        "tags": None,
        "point": None,
    },
    dict.fromkeys(SCHEMA.names),
]

# CSV rendering: null is an empty unquoted field; ints, floats and booleans are
# unquoted (floats in Arrow's shortest round-trip form, non-finite as nan/inf/-inf);
# every other value is quoted and holds the same text as in JSON (lists and structs
# as compact JSON).
CSV_TEXT = (
    '"i","f","dec","money","day","clock","ts","tstz","flag","text","blob","tags","point"\n'
    '-9223372036854775808,-inf,"-99999999999999999999999999999.999999999","-99999999.99",'
    '"0001-01-01","00:00:00.000000","0001-01-01T00:00:00.000000",'
    '"0001-01-01T00:00:00.000000Z",false,"","","[]","{""x"":-0.0,""label"":""""}"\n'
    '9223372036854775807,inf,"99999999999999999999999999999.999999999","99999999.99",'
    '"9999-12-31","23:59:59.999999","9999-12-31T23:59:59.999999",'
    '"9999-12-31T23:59:59.999999Z",true,"héllo, ""wörld""\n😀 𝄞 中文\t","AP8QCg==",'
    '"[""a"",null,"""",""😀""]","{""x"":""NaN"",""label"":null}"\n'
    '0,nan,"0.000000000","0.00","1970-01-01","12:00:00.000001","1969-12-31T23:59:59.999999",'
    '"2024-02-29T12:34:56.123456Z",,"NaN","YW55AGJ5dGVz",,\n'
    '-1,0.1,"0.000000001","0.01","2024-02-29","00:00:00.000001","2024-02-29T12:34:56.000001",'
    '"1969-12-31T23:59:59.999999Z",true,"null","8J+YgA==","[""x""]",'
    '"{""x"":null,""label"":""é""}"\n'
    '1,-0,"-0.500000000","-0.01","1969-12-31",,,,false,"NA",,"[null]",'
    '"{""x"":1.5,""label"":""a,b""}"\n'
    '9007199254740993,5e-324,"12345678901234567890.123456789","12345678.90",,'
    '"06:07:08.000000","2000-01-01T00:00:00.000000","2000-01-01T00:00:00.000000Z",,'
    '"line1\r\nline2",,,"{""x"":null,""label"":null}"\n'
    '-9007199254740993,1.7976931348623157e+308,"-0.000000001",,"2000-01-01",,,,true,'
    '" padded \\N ","ZnJhbWVqb2Jz","[""😀"",""\\""q\\""""]",\n'
    ',1e+16,,"1.00",,,,,,"nul\x00char",,,\n'
    ",,,,,,,,,,,,\n"
)

# Text formats through the typed pipeline; Parquet and Arrow both untyped (sql) and typed.
SOURCES = [
    "json-columns",
    "json-rows",
    "ndjson",
    "csv",
    "parquet",
    "arrow",
    "parquet-typed",
    "arrow-typed",
]
OUTPUTS = ["json", "ndjson", "csv", "parquet", "arrow"]
TYPED = {"pipeline": "identity", "validation": "strict"}
UNTYPED = {"pipeline": "sql", "params": {"query": "select * from input"}}


def _ipc_stream(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _ndjson(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _submit(client: TestClient, source: str, spec: dict[str, Any]) -> str:
    """Post the frame in ``source`` format; returns the job id."""
    if source.startswith("json-"):
        columns = {name: [row[name] for row in JSON_ROWS] for name in SCHEMA.names}
        frame = {"columns": columns} if source == "json-columns" else {"rows": JSON_ROWS}
        response = client.post("/jobs", json={**spec, "frame": frame})
    else:
        response = post_file(client, spec, *_upload(source.removesuffix("-typed")))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def post_file(client: TestClient, spec: dict[str, Any], name: str, data: bytes) -> Any:
    return client.post("/jobs", data={"spec": json.dumps(spec)}, files={"frame": (name, data)})


def _upload(fmt: str) -> tuple[str, bytes]:
    if fmt == "ndjson":
        return "frame.ndjson", _ndjson(JSON_ROWS).encode()
    if fmt == "csv":
        return "frame.csv", CSV_TEXT.encode()
    if fmt == "parquet":
        return "frame.parquet", _parquet(TRUTH)
    return "frame.arrows", _ipc_stream(TRUTH)


def _completed(client: TestClient, job_id: str) -> dict[str, Any]:
    done = wait_status(client, job_id)
    assert done["status"] == "completed", done["error"]
    return done


def _result(client: TestClient, job_id: str, output: str) -> Any:
    response = client.get(f"/jobs/{job_id}/result", params={"format": output, "limit": 100})
    assert response.status_code == 200, response.text
    return response


def _canonical(value: Any) -> str:
    """Equal texts <=> equal values, with NaN == NaN and -0.0 != 0.0."""
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def _same_table(got: pa.Table, expected: pa.Table) -> list[str]:
    # Type equality ignores a list's item name ("item" in Arrow, "element" in Parquet).
    problems = [] if got.schema.equals(expected.schema) else [f"schema {got.schema}"]
    got_rows, want_rows = got.to_pylist(), expected.to_pylist()
    for index, (a, b) in enumerate(zip(got_rows, want_rows, strict=False)):
        for name in expected.column_names:
            if repr(a.get(name)) != repr(b[name]):  # repr: NaN == NaN, -0.0 != 0.0
                problems.append(f"row {index} {name}: {a.get(name)!r} != {b[name]!r}")
    if len(got_rows) != len(want_rows):
        problems.append(f"{len(got_rows)} rows, expected {len(want_rows)}")
    return problems


def _check_output(client: TestClient, job_id: str, output: str) -> list[str]:
    response = client.get(f"/jobs/{job_id}/result", params={"format": output, "limit": 100})
    if response.status_code != 200:
        return [f"HTTP {response.status_code}: {response.text[:300]}"]
    if output == "json":
        return _check_json(response.json())
    if output == "ndjson":
        expected = _ndjson(JSON_ROWS)
        return [] if response.text == expected else [_diff(response.text, expected)]
    if output == "csv":
        return [] if response.text == CSV_TEXT else [_diff(response.text, CSV_TEXT)]
    if output == "parquet":
        return _same_table(pq.read_table(io.BytesIO(response.content)), TRUTH)
    return _same_table(pa.ipc.open_stream(response.content).read_all(), TRUTH)


def _check_json(page: dict[str, Any]) -> list[str]:
    problems = []
    types = [(c["name"], c["type"]) for c in page["columns"]]
    expected_types = [(f.name, str(f.type).replace("item", "element")) for f in SCHEMA]
    if types != expected_types:
        problems.append(f"column types {types}")
    for index, (got, want) in enumerate(zip(page["rows"], JSON_ROWS, strict=False)):
        if _canonical(got) != _canonical(want):
            problems.append(f"row {index}: {_canonical(got)} != {_canonical(want)}")
    if len(page["rows"]) != len(JSON_ROWS) or page["total"] != len(JSON_ROWS):
        problems.append(f"{len(page['rows'])} rows of {page['total']}")
    return problems


def _diff(got: str, expected: str) -> str:
    got_lines, want_lines = got.split("\n"), expected.split("\n")
    for index, (a, b) in enumerate(zip(got_lines, want_lines, strict=False)):
        if a != b:
            return f"line {index}: {a!r} != {b!r}"
    return f"{len(got_lines)} lines, expected {len(want_lines)}"


def test_truth_table_is_what_the_renderings_describe() -> None:
    """The fixtures agree with each other: JSON_ROWS and CSV_TEXT are of TRUTH."""
    assert TRUTH.num_rows == len(JSON_ROWS) == CSV_TEXT.count(",,,,,,,,,,,,\n") + 8
    assert math.isnan(TRUTH.column("f")[2].as_py())
    assert TRUTH.column("dec")[0].as_py() == Decimal(JSON_ROWS[0]["dec"])


@pytest.mark.parametrize("source", SOURCES)
def test_round_trip(client: TestClient, source: str) -> None:
    typed = not source.endswith(("parquet", "arrow"))
    job_id = _submit(client, source, TYPED if typed else UNTYPED)
    done = _completed(client, job_id)
    assert done["input"]["rows"] == done["result"]["rows"] == len(ROWS)
    problems = {output: _check_output(client, job_id, output) for output in OUTPUTS}
    if any(problems.values()):
        pytest.fail(json.dumps(problems, indent=1, ensure_ascii=False), pytrace=False)


@pytest.mark.parametrize("source", ["json-columns", "json-rows", "ndjson"])
def test_untyped_json_comes_back_as_it_went_in(client: TestClient, source: str) -> None:
    """Without a model, JSON values keep their JSON types (decimals, dates, bytes stay
    strings) and come back unchanged; "NaN" among numbers is a float."""
    done = _completed(client, _submit(client, source, UNTYPED))
    types = {c["name"]: c["type"] for c in done["result"]["columns"]}
    assert types["f"] == "double" and types["dec"] == types["ts"] == types["blob"] == "string"
    assert types["point"] == "struct<x: double, label: string>"
    assert _result(client, done["id"], "json").json()["rows"] == JSON_ROWS
    assert _result(client, done["id"], "ndjson").text == _ndjson(JSON_ROWS)


def test_untyped_csv_is_inferred(client: TestClient) -> None:
    """Without a model Arrow infers CSV types: leading zeros and decimal digits beyond
    a double's go; only an empty unquoted field is null ("NA", "null", "" are text)."""
    text = 'a,b,c,d,e,f\n007,0.1000000000000000055511151231257827,2024-02-29,"NA",,""\n'
    spec = {**UNTYPED, "validation": "strict"}
    done = _completed(client, post_file(client, spec, "f.csv", text.encode()).json()["id"])
    types = [c["type"] for c in done["result"]["columns"]]
    assert types == ["int64", "double", "date32[day]", "string", "null", "string"]
    row = {"a": 7, "b": 0.1, "c": "2024-02-29", "d": "NA", "e": None, "f": ""}
    assert _result(client, done["id"], "json").json()["rows"] == [row]


# Arrow types beyond the model's, sent as Parquet and Arrow IPC to `sql`: the values are
# exact; some types come back as the type DuckDB holds them in (see docs/formats.md).
# name: (input, output type, JSON values); the output values are the input cast to the
# output type unless given as a fourth element.
INTERVAL_STRUCT = pa.struct(
    [("months", pa.int32()), ("days", pa.int32()), ("nanoseconds", pa.int64())]
)
EXTRA: dict[str, tuple[pa.Array, pa.DataType, list[Any]] | tuple[Any, ...]] = {
    "u64": (pa.array([0, 2**64 - 1, None], pa.uint64()), pa.uint64(), [0, 2**64 - 1, None]),
    "i8": (pa.array([-128, 127, None], pa.int8()), pa.int8(), [-128, 127, None]),
    "f32": (
        pa.array([0.1, NAN, None], pa.float32()),
        pa.float32(),
        [0.10000000149011612, "NaN", None],
    ),
    "f16": (pa.array([1.5, -INF, None], pa.float16()), pa.float32(), [1.5, "-Infinity", None]),
    "big": (pa.array(["a", "", None], pa.large_string()), pa.string(), ["a", "", None]),
    "view": (pa.array(["a", "", None], pa.string_view()), pa.string(), ["a", "", None]),
    "dict": (pa.array(["a", "", None]).dictionary_encode(), pa.string(), ["a", "", None]),
    "lbin": (pa.array([b"a", b"", None], pa.large_binary()), pa.binary(), ["YQ==", "", None]),
    "fbin": (pa.array([b"ab", b"cd", None], pa.binary(2)), pa.binary(), ["YWI=", "Y2Q=", None]),
    "ns": (
        pa.array([1, -1, None], pa.timestamp("ns")),
        pa.timestamp("ns"),
        ["1970-01-01T00:00:00.000000001", "1969-12-31T23:59:59.999999999", None],
    ),
    "secs": (  # Parquet has no seconds unit
        pa.array([1, -1, None], pa.timestamp("s")),
        pa.timestamp("ms"),
        ["1970-01-01T00:00:01.000", "1969-12-31T23:59:59.000", None],
    ),
    "ny": (  # DuckDB keeps the instant, not the zone
        pa.array([0, 1, None], pa.timestamp("us", tz="America/New_York")),
        pa.timestamp("us", tz="UTC"),
        ["1970-01-01T00:00:00.000000Z", "1970-01-01T00:00:00.000001Z", None],
    ),
    "tns": (
        pa.array([1, 86_399_999_999_999, None], pa.time64("ns")),
        pa.time64("ns"),
        ["00:00:00.000000001", "23:59:59.999999999", None],
    ),
    "tms": (
        pa.array([1, 86_399_999, None], pa.time32("ms")),
        pa.time64("us"),
        ["00:00:00.001000", "23:59:59.999000", None],
    ),
    "d64": (
        pa.array([0, 86_400_000, None], pa.date64()),
        pa.date32(),
        ["1970-01-01", "1970-01-02", None],
    ),
    "far": (  # years outside 0001-9999: sign and six digits
        pa.array([-1_000_000, 2_932_897, None], pa.date32()),
        pa.date32(),
        ["-000768-02-04", "+010000-01-01", None],
    ),
    "farts": (  # 2**63 - 1 is DuckDB's infinity
        pa.array([-(2**62), 2**63 - 1, None], pa.timestamp("us")),
        pa.timestamp("us"),
        ["-144169-06-28T09:59:32.612096", "+294247-01-10T04:00:54.775807", None],
    ),
    "d32": (
        pa.array([Decimal("1.5"), Decimal("-0.01"), None], pa.decimal32(5, 2)),
        pa.decimal128(5, 2),
        ["1.50", "-0.01", None],
    ),
    "d256": (
        pa.array([Decimal("1E-9"), Decimal("-1"), None], pa.decimal256(20, 9)),
        pa.decimal128(20, 9),
        ["0.000000001", "-1.000000000", None],
    ),
    "llist": (
        pa.array([[1], [], None], pa.large_list(pa.int64())),
        pa.list_(pa.int64()),
        [[1], [], None],
    ),
    "pair": (
        pa.array([[1, 2], [3, None], None], pa.list_(pa.int64(), 2)),
        pa.list_(pa.int64(), 2),
        [[1, 2], [3, None], None],
    ),
    "map": (
        pa.array([[("a", 1)], [], None], pa.map_(pa.string(), pa.int64())),
        pa.map_(pa.string(), pa.int64()),
        [[["a", 1]], [], None],
    ),
    "uuid": (
        pa.array([b"0123456789abcdef", None, None], pa.uuid()),
        pa.string(),
        ["30313233-3435-3637-3839-616263646566", None, None],
        pa.array(["30313233-3435-3637-3839-616263646566", None, None]),
    ),
    "dur": (  # DuckDB reads durations as INTERVAL; Parquet stores that as a struct
        pa.array([1, -1, None], pa.duration("us")),
        INTERVAL_STRUCT,
        [
            {"months": 0, "days": 0, "nanoseconds": 1000},
            {"months": 0, "days": 0, "nanoseconds": -1000},
            None,
        ],
        pa.array(
            [
                {"months": 0, "days": 0, "nanoseconds": 1000},
                {"months": 0, "days": 0, "nanoseconds": -1000},
                None,
            ],
            INTERVAL_STRUCT,
        ),
    ),
    "none": (pa.nulls(3), pa.null(), [None, None, None]),
}
EXTRA_TABLE = pa.table({name: spec[0] for name, spec in EXTRA.items()})


def _expected_extra(name: str) -> pa.Array:
    spec = EXTRA[name]
    return spec[3] if len(spec) > 3 else spec[0].cast(spec[1])


def _same_array(got: pa.Array, expected: pa.Array) -> bool:
    """Equal types and values; floats compared by bits (NaN equals NaN)."""
    if got.type != expected.type:
        return False
    if pa.types.is_floating(got.type):
        bits = pa.int32() if got.type.bit_width == 32 else pa.int64()
        return bool(got.view(bits).equals(expected.view(bits)))
    return bool(got.equals(expected))


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_more_arrow_types(client: TestClient, fmt: str) -> None:
    data = _parquet(EXTRA_TABLE) if fmt == "parquet" else _ipc_stream(EXTRA_TABLE)
    response = post_file(client, UNTYPED, f"frame.{fmt}", data)
    assert response.status_code == 202, response.text
    job_id = _completed(client, response.json()["id"])["id"]
    problems = []
    for output in ("parquet", "arrow"):
        content = _result(client, job_id, output).content
        table = (
            pq.read_table(io.BytesIO(content))
            if output == "parquet"
            else (pa.ipc.open_stream(content).read_all())
        )
        for name in EXTRA:
            got = table.column(name).combine_chunks()
            if not _same_array(got, _expected_extra(name)):
                problems.append(f"{output} {name}: {got.type} {got.to_string()[:200]}")
    rows = _result(client, job_id, "json").json()["rows"]
    for name, spec in EXTRA.items():
        if [row[name] for row in rows] != spec[2]:
            problems.append(f"json {name}: {[row[name] for row in rows]}")
    assert not problems, "\n".join(problems)


def test_interval_results_are_structs(client: TestClient) -> None:
    """Parquet has no INTERVAL type: results store it as {months, days, nanoseconds}."""
    query = (
        "select interval 1 day + interval 1 microsecond as span, "
        "[interval 2 month, null] as spans, null::interval as nothing"
    )
    spec = {"pipeline": "sql", "params": {"query": query}, "frame": {"columns": {"a": [1]}}}
    job_id = client.post("/jobs", json=spec).json()["id"]
    done = _completed(client, job_id)
    assert done["result"]["columns"][0]["type"] == str(INTERVAL_STRUCT)
    day = {"months": 0, "days": 1, "nanoseconds": 1000}
    months = {"months": 2, "days": 0, "nanoseconds": 0}
    row = {"span": day, "spans": [months, None], "nothing": None}
    assert _result(client, job_id, "json").json()["rows"] == [row]
    assert _result(client, job_id, "csv").text == (
        '"span","spans","nothing"\n'
        '"{""months"":0,""days"":1,""nanoseconds"":1000}",'
        '"[{""months"":2,""days"":0,""nanoseconds"":0},null]",\n'
    )
    table = pq.read_table(io.BytesIO(_result(client, job_id, "parquet").content))
    assert table.to_pylist() == [row]


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        (pa.array([Decimal("1.5")], pa.decimal256(40, 2)), "cannot be stored"),
        (
            pa.UnionArray.from_sparse(pa.array([0], pa.int8()), [pa.array([1]), pa.array(["a"])]),
            "cannot be stored",
        ),
        (pa.array([1000, 1001], pa.duration("ns")), "cannot be stored exactly"),
    ],
    ids=["decimal256(40)", "union", "sub-microsecond duration"],
)
def test_types_without_an_exact_home_are_refused(
    api_only: TestClient, column: pa.Array, reason: str
) -> None:
    response = post_file(api_only, UNTYPED, "f.arrows", _ipc_stream(pa.table({"c": column})))
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"] and "'c'" in response.json()["detail"]
