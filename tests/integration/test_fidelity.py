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

SOURCES = ["json-columns", "json-rows", "ndjson", "csv", "parquet", "arrow"]
OUTPUTS = ["json", "ndjson", "csv", "parquet", "arrow"]


def _ipc_stream(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _submit(client: TestClient, source: str) -> str:
    """Post the frame in ``source`` format; returns the job id."""
    typed = {"pipeline": "identity", "validation": "strict"}
    untyped = {"pipeline": "sql", "params": {"query": "select * from input"}}
    if source == "json-columns":
        columns = {name: [row[name] for row in JSON_ROWS] for name in SCHEMA.names}
        response = client.post("/jobs", json={**typed, "frame": {"columns": columns}})
    elif source == "json-rows":
        response = client.post("/jobs", json={**typed, "frame": {"rows": JSON_ROWS}})
    else:
        spec, name, data = _file(source, typed, untyped)
        response = client.post(
            "/jobs", data={"spec": json.dumps(spec)}, files={"frame": (name, data)}
        )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _file(source: str, typed: dict[str, Any], untyped: dict[str, Any]) -> tuple[dict, str, bytes]:
    if source == "ndjson":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in JSON_ROWS)
        return typed, "frame.ndjson", text.encode()
    if source == "csv":
        return typed, "frame.csv", CSV_TEXT.encode()
    if source == "parquet":
        return untyped, "frame.parquet", _parquet(TRUTH)
    return untyped, "frame.arrows", _ipc_stream(TRUTH)


def _canonical(value: Any) -> str:
    """Equal texts <=> equal values, with NaN == NaN and -0.0 != 0.0."""
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def _same_table(got: pa.Table, expected: pa.Table) -> list[str]:
    problems = []
    if not _same_types(got.schema, expected.schema):
        problems.append(f"schema {got.schema} != {expected.schema}")
    got_rows, want_rows = got.to_pylist(), expected.to_pylist()
    for index, (a, b) in enumerate(zip(got_rows, want_rows, strict=False)):
        for name in expected.column_names:
            if repr(a.get(name)) != repr(b[name]):
                problems.append(f"row {index} {name}: {a.get(name)!r} != {b[name]!r}")
    if len(got_rows) != len(want_rows):
        problems.append(f"{len(got_rows)} rows, expected {len(want_rows)}")
    return problems


def _same_types(got: pa.Schema, expected: pa.Schema) -> bool:
    """Equal types, but a list's item field may have any name (Parquet calls it
    "element", Arrow "item")."""
    return [(f.name, _unnamed(f.type)) for f in got] == [
        (f.name, _unnamed(f.type)) for f in expected
    ]


def _unnamed(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_list(kind):
        return pa.list_(_unnamed(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _unnamed(f.type)) for f in kind.fields])
    return kind


def _check_output(client: TestClient, job_id: str, output: str) -> list[str]:
    response = client.get(f"/jobs/{job_id}/result", params={"format": output, "limit": 100})
    if response.status_code != 200:
        return [f"HTTP {response.status_code}: {response.text[:300]}"]
    if output == "json":
        return _check_json(response.json())
    if output == "ndjson":
        expected = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in JSON_ROWS)
        return [] if response.text == expected else [_diff(response.text, expected)]
    if output == "csv":
        return [] if response.text == CSV_TEXT else [_diff(response.text, CSV_TEXT)]
    if output == "parquet":
        return _same_table(pq.read_table(io.BytesIO(response.content)), TRUTH)
    return _same_table(pa.ipc.open_stream(response.content).read_all(), TRUTH)


def _check_json(page: dict[str, Any]) -> list[str]:
    problems = []
    types = [(c["name"], c["type"]) for c in page["columns"]]
    expected_types = [(f.name, str(f.type)) for f in SCHEMA]
    if [(n, t.replace("element", "item")) for n, t in types] != expected_types:
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
    job_id = _submit(client, source)
    done = wait_status(client, job_id)
    assert done["status"] == "completed", done["error"]
    assert done["input"]["rows"] == done["result"]["rows"] == len(ROWS)
    problems = {output: _check_output(client, job_id, output) for output in OUTPUTS}
    if any(problems.values()):
        pytest.fail(json.dumps(problems, indent=1, ensure_ascii=False), pytrace=False)
