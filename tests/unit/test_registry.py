"""The pipeline registry: names, the same pipeline found twice, JSON Schemas."""

from __future__ import annotations

import duckdb
import pytest
from pydantic import BaseModel, ConfigDict

from service.pipelines import Context, Registry, pipeline


def _noop(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    return frame


def test_one_pipeline_found_twice_is_registered_once() -> None:
    """A module that imports another's pipeline (or names it twice) shows it again."""
    mine = pipeline("mine")(_noop)
    assert Registry([mine, mine]).names == {"mine"}


def test_two_pipelines_of_one_name_are_refused_naming_both() -> None:
    def other(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
        return frame

    with pytest.raises(ValueError, match=r"'mine'.*_noop.*other"):
        Registry([pipeline("mine")(_noop), pipeline("mine")(other)])


class Opaque:
    """A type pydantic can hold but not describe in JSON Schema."""


class OpaqueParams(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    helper: Opaque | None = None


def test_a_model_without_json_schema_shows_none(caplog: pytest.LogCaptureFixture) -> None:
    made = pipeline("opaque", params=OpaqueParams)(_noop)
    assert made.params_schema is None and made.input_schema is None
    assert "OpaqueParams has no JSON Schema" in caplog.text
