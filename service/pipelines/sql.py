"""The built-in ``sql`` pipeline: one client SELECT over the table ``input``.

It runs on the sandboxed DuckDB database (no file or network access, no extension
loading, configuration locked). DuckDB runs every statement of a string it is given,
so the query is split here first and must be exactly one SELECT.
"""

from __future__ import annotations

import hashlib

import duckdb
from pydantic import BaseModel, ConfigDict, Field

from service.errors import InvalidInput, first_line
from service.pipelines import Context, pipeline


class SqlParams(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    query: str = Field(min_length=1, max_length=100_000, description="One SELECT over `input`.")


# Digests of the queries found to be one SELECT: the worker checks each job's query
# again, and clients send the same ones a lot. Digests, not the queries: 1,024 queries
# of up to 100,000 characters kept 0.8 GB alive in every process (found in review).
_SINGLE_SELECTS: set[bytes] = set()
_KEPT = 1024


def single_select(query: str) -> str:
    """The query if it is exactly one SELECT statement, else InvalidInput."""
    digest = hashlib.blake2b(query.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    if digest not in _SINGLE_SELECTS:
        _check_single_select(query)
        if len(_SINGLE_SELECTS) >= _KEPT:
            _SINGLE_SELECTS.clear()
        _SINGLE_SELECTS.add(digest)
    return query


def _check_single_select(query: str) -> None:
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise InvalidInput(f"the query does not parse: {first_line(exc)}") from exc
    if len(statements) != 1:
        raise InvalidInput(f"the query must be exactly one statement, found {len(statements)}")
    kind = statements[0].type
    if kind == duckdb.StatementType.MULTI:  # PIVOT and the like: DuckDB runs several
        raise InvalidInput(
            "the query must be one SELECT; this one (a PIVOT, say) runs as several statements"
        )
    if kind != duckdb.StatementType.SELECT:
        raise InvalidInput(f"the query must be a SELECT, found {kind.name}")


def check_query(params: SqlParams, connection: duckdb.DuckDBPyConnection) -> None:
    """Bind the query against an empty ``input`` of the frame's columns: names,
    types and forbidden functions (file reads) are refused at submit, not at run."""
    single_select(params.query)
    try:
        connection.sql(params.query).columns  # noqa: B018  (binding is the check)
    except duckdb.Error as exc:
        raise InvalidInput(f"the query is not valid: {first_line(exc)}") from exc


@pipeline(
    "sql",
    params=SqlParams,
    description="Run one SELECT over the table `input` (sandboxed DuckDB).",
    sandboxed=True,
    check_params=check_query,
)
def sql(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    del frame  # the query names it as `input`
    return ctx.connection.sql(single_select(ctx.params.query))
