"""A pipeline's result as Arrow batches that hold its values exactly.

DuckDB's Arrow export is lossy for a few types: HUGEINT and UHUGEINT become
``decimal128(38, 0)`` and silently wrap past 38 digits, BIGNUM (VARINT) becomes an
opaque blob of DuckDB's internal bytes (so does BIT), and TIME WITH TIME ZONE drops
its offset.
Top-level columns of these types are cast in DuckDB first (to DECIMAL(38,0), which
fails loudly on overflow, or to their text); inside lists, structs and maps they make
the job fail with a clear error instead of storing wrong values. Repeated column
names are refused too: JSON rows (and most readers) keep only one of them.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
from duckdb.sqltypes import DuckDBPyType

from service.errors import PipelineError

BATCH_ROWS = 64 * 1024

# DuckDB type id -> the type to cast a top-level column to before export.
_EXACT = {
    "hugeint": "DECIMAL(38,0)",
    "uhugeint": "DECIMAL(38,0)",
    "bignum": "VARCHAR",
    "varint": "VARCHAR",
    "time with time zone": "VARCHAR",
    "bit": "VARCHAR",  # else exported as DuckDB's bytes: '101' as b"\x05\xfd"
}
_NESTED = {"list", "array", "struct", "map", "union"}


def result_reader(result: Any) -> pa.RecordBatchReader:
    """The result (a DuckDB relation or an Arrow table or reader) as a batch reader."""
    if isinstance(result, duckdb.DuckDBPyRelation):
        return _exact(result).to_arrow_reader(BATCH_ROWS)  # names checked there
    if isinstance(result, pa.Table):
        reader = result.to_reader()
    elif isinstance(result, pa.RecordBatchReader):
        reader = result
    else:
        raise PipelineError(
            "a pipeline must return a DuckDB relation or an Arrow table, "
            f"not {type(result).__name__}"
        )
    _check_names(reader.schema.names)
    return reader


def _check_names(names: list[str]) -> None:
    if not names:
        # Rows without columns: no format can show them (JSON would say 0 rows)
        raise PipelineError("the result has no columns; return at least one")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PipelineError(
            f"the result repeats column names {repeated}; give each column its own name "
            "(select 1 as a, 2 as b)"
        )


def _exact(relation: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    _check_names(relation.columns)
    columns, cast = [], False
    for name, kind in zip(relation.columns, relation.types, strict=True):
        quoted = '"' + name.replace('"', '""') + '"'
        target = _EXACT.get(kind.id)
        if target is not None:
            columns.append(f"CAST({quoted} AS {target}) AS {quoted}")
            cast = True
        elif _holds_inexact(kind):
            raise PipelineError(
                f"result column {name!r} is {kind}: a HUGEINT, UHUGEINT, BIGNUM, BIT or TIME "
                "WITH TIME ZONE inside a list, struct or map cannot be exported exactly; cast "
                "it in the query (e.g. to DECIMAL(38,0) or VARCHAR)"
            )
        else:
            columns.append(quoted)
    return relation.project(", ".join(columns)) if cast else relation


def _holds_inexact(kind: DuckDBPyType) -> bool:
    if kind.id in _EXACT:
        return True
    if kind.id not in _NESTED:
        return False
    return any(
        isinstance(child, DuckDBPyType) and _holds_inexact(child) for _, child in kind.children
    )
