"""Pipelines used by the tests (loaded through FRAMEJOBS_PIPELINES)."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NaiveDatetime,
    SecretStr,
    field_validator,
)

from service.errors import InvalidInput, TransientError
from service.pipelines import Context, pipeline


class SleepParams(BaseModel):
    seconds: float = 30.0


@pipeline("sleepy", params=SleepParams, description="Sleeps in Python, checking for cancel.")
def sleepy(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    deadline = time.monotonic() + ctx.params.seconds
    while time.monotonic() < deadline:
        left = deadline - time.monotonic()
        ctx.progress(ctx.params.seconds - left, ctx.params.seconds, "sleeping")
        time.sleep(0.01)
    return frame


class FlakyParams(BaseModel):
    failures: int
    marker_dir: str


@pipeline("flaky", params=FlakyParams, max_attempts=5)
def flaky(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """Fails with a transient error on its first ``failures`` attempts."""
    marker = Path(ctx.params.marker_dir) / f"{ctx.job_id}.attempts"
    seen = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(seen + 1))
    if seen < ctx.params.failures:
        raise TransientError(f"flaky failure {seen + 1}")
    return frame


@pipeline("boom")
def boom(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    raise ValueError("the pipeline broke")


@pipeline("unstorable_text")
def unstorable_text(ctx: Context, frame: duckdb.DuckDBPyRelation) -> pa.Table:
    """Text PostgreSQL cannot hold (NUL) and no UTF-8 column can (a lone surrogate),
    in a progress message and in the result's column names."""
    ctx.progress(50, 100, "half\x00way \ud800")
    return pa.table({"a\x00b": [1], "s": pa.array([{"x\x00": 1}])})


@pipeline("unstorable_error")
def unstorable_error(ctx: Context, frame: duckdb.DuckDBPyRelation) -> pa.Table:
    raise ValueError("bad\x00byte \udfff")


class EffectParams(BaseModel):
    log_dir: str
    seconds: float = 0.0


@pipeline("side_effect", params=EffectParams)
def side_effect(ctx: Context, frame: duckdb.DuckDBPyRelation) -> pa.Table:
    """Records each run as a file (one per job and attempt), so tests count runs."""
    if ctx.params.seconds:
        end = time.monotonic() + ctx.params.seconds
        while time.monotonic() < end:
            ctx.check_cancelled()
            time.sleep(0.01)
    path = Path(ctx.params.log_dir) / f"{ctx.job_id}.{ctx.attempt}.{os.getpid()}"
    path.write_text("ran")
    rows = frame.aggregate("count(*)").fetchall()[0][0]
    return pa.table({"job_id": [ctx.job_id], "rows": [rows], "pid": [os.getpid()]})


class EchoParams(BaseModel):
    max_rows: int = Field(5, alias="maxRows")
    n: int = 1

    @field_validator("n")
    @classmethod
    def doubled(cls, value: int) -> int:
        return value * 2


@pipeline("echo_params", params=EchoParams, description="Returns the params it was given.")
def echo_params(ctx: Context, frame: duckdb.DuckDBPyRelation) -> pa.Table:
    return pa.table({"max_rows": [ctx.params.max_rows], "n": [ctx.params.n]})


class WrapParams(BaseModel):
    query: str = ""
    raise_: str = Field("", alias="raise")


@pipeline("wrapper", params=WrapParams, max_attempts=3)
def wrapper(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """Runs ``query`` and wraps any error in a TransientError, as pipelines that call
    flaky services do; or raises what ``raise`` names, BaseExceptions included."""
    if ctx.params.raise_ == "exit":
        sys.exit(3)
    if ctx.params.raise_ == "keyboard":
        raise KeyboardInterrupt
    try:
        ctx.connection.sql(ctx.params.query).fetchall()
    except Exception as exc:
        raise TransientError(f"upstream hiccup: {exc}") from exc
    return frame


ODD_UUID = "6e2a9c1e-3f0b-4c55-9d1a-0c2b7f1e8a44"


@pipeline("odd_types")
def odd_types(ctx: Context, frame: duckdb.DuckDBPyRelation) -> pa.Table:
    """Arrow types a pipeline may return that JSON, CSV and DuckDB do not know as such."""
    views = pa.ListViewArray.from_arrays(
        pa.array([0, 1], pa.int32()), pa.array([1, 2], pa.int32()), pa.array([1, 2, 3])
    )
    return pa.table(
        {
            "id": pa.array([uuid.UUID(ODD_UUID).bytes, None], pa.uuid()),
            "text": pa.array(["a", None], pa.string_view()),
            "doc": pa.array(['{"k": 1}', None], pa.json_()),
            "views": views,
        }
    )


@pipeline("no_columns")
def no_columns(ctx: Context, frame: duckdb.DuckDBPyRelation) -> pa.Table:
    return pa.table({"a": [1, 2]}).drop_columns(["a"])  # two rows, no columns


class ProgressParams(BaseModel):
    done: Any = 1
    message: Any = None
    as_float: bool = False  # JSON has no NaN: send "nan" and this


@pipeline("bad_progress", params=ProgressParams)
def bad_progress(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    done = float(ctx.params.done) if ctx.params.as_float else ctx.params.done
    ctx.progress(done, 2, ctx.params.message)
    return frame


class Point(BaseModel):
    x: float | None = None
    label: str | None = None


class EveryType(BaseModel):
    """One column of each supported type, all optional: text formats (JSON, CSV,
    NDJSON) are parsed into these Arrow types (see docs/formats.md)."""

    i: int | None = None
    f: float | None = None
    dec: Decimal | None = Field(None, max_digits=38, decimal_places=9)
    money: Decimal | None = Field(None, max_digits=10, decimal_places=2)
    day: dt.date | None = None
    clock: dt.time | None = None
    ts: NaiveDatetime | None = None
    tstz: AwareDatetime | None = None
    flag: bool | None = None
    text: str | None = None
    blob: bytes | None = None
    tags: list[str | None] | None = None
    point: Point | None = None


@pipeline("identity", input=EveryType, description="Returns its typed input unchanged.")
def identity(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    return frame


class Reading(BaseModel):
    """An input model whose field constraints are checked on every frame."""

    sensor: str = Field(alias="sensorId", pattern=r"^s-\d+$", max_length=8)
    value: float = Field(ge=0, le=100, allow_inf_nan=False)
    unit: Literal["C", "F"] = "C"
    tags: list[str] | None = Field(default=None, max_length=3)


class Address(BaseModel):
    city: str
    zip: str | None = None


class Shipment(BaseModel):
    """Nested models and lists whose insides must not be null."""

    id: int
    to: Address | None = None
    stops: list[Address] | None = None
    codes: list[int] | None = None


@pipeline("shipments", input=Shipment)
def shipments(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    return frame


@pipeline("readings", input=Reading)
def readings(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    return frame


class Opaque:
    """A params field pydantic can hold but neither describe nor dump as JSON."""


class GuardedParams(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    token: SecretStr
    helper: Opaque = Field(default_factory=Opaque)


def check_token(params: GuardedParams, connection: duckdb.DuckDBPyConnection) -> None:
    token = params.token.get_secret_value()
    if token == "traceback":  # a library's error of many lines, not the pipeline's own
        raise ValueError("token store unreachable\n  at /srv/vault/client.py:12\n  retry later")
    if token != "open sesame":
        raise InvalidInput("wrong token")


@pipeline("guarded", params=GuardedParams, check_params=check_token)
def guarded(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    return frame


@pipeline("deaf", params=SleepParams)
def deaf(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """Python that never calls ctx.progress() or ctx.check_cancelled(): no stop reaches it."""
    deadline = time.monotonic() + ctx.params.seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return frame


REGIONS = {"eu": "eu-west-1"}


class RegionParams(BaseModel):
    region: str

    @field_validator("region")
    @classmethod
    def known(cls, value: str) -> str:
        return REGIONS[value]  # a KeyError, which pydantic does not turn into a 422


@pipeline("regional", params=RegionParams)
def regional(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    return frame
