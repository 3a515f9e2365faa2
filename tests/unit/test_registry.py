"""The pipeline registry: names, the same pipeline found twice, JSON Schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import BaseModel, ConfigDict

from service.config import Settings
from service.errors import StartupError
from service.pipelines import Context, Registry, load_registry, pipeline


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


class Mapped(BaseModel):
    ok: int
    counts: dict[str, int]


def test_an_unsupported_column_type_names_the_pipeline_and_column() -> None:
    """The start fails in one line: it must say where to look among many modules."""
    with pytest.raises(TypeError, match=r"pipeline 'mapped'.*Mapped.*column 'counts'.*dict"):
        pipeline("mapped", input=Mapped)(_noop)


def test_a_module_that_fails_to_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fj_broken_ops.py").write_text("import fj_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = Settings(data_dir=tmp_path, pipelines=["fj_broken_ops"])
    with pytest.raises(StartupError, match=r"'fj_broken_ops'.*ModuleNotFoundError.*fj_no_such"):
        load_registry(settings)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("", {}, "name"),
        ("x" * 201, {}, "name"),
        ("ok", {"max_attempts": 0}, "max_attempts"),
        ("ok", {"max_attempts": "3"}, "max_attempts"),
        ("ok", {"max_attempts": True}, "max_attempts"),
        ("ok", {"timeout_s": -1}, "timeout_s"),
        ("ok", {"timeout_s": float("nan")}, "timeout_s"),
        ("ok", {"validation": "Strict"}, "validation"),
    ],
)
def test_pipeline_options_a_submit_could_not_send_are_refused_at_import(
    name: str, options: dict[str, Any], message: str
) -> None:
    """They were taken as given: 'Strict' validated strictly but showed as a mode no
    client can send, a timeout of -1 s timed jobs out at once, an empty name could
    not be submitted to."""
    with pytest.raises((TypeError, ValueError), match=message):
        pipeline(name, **options)(_noop)


class Row(BaseModel):
    a: int


class Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")

    a: int


def test_the_input_schema_refuses_extra_columns_when_submit_does() -> None:
    """Submit refuses columns a model does not name unless it says extra='ignore' (or
    'allow'); pydantic's schema left additionalProperties out, so a client checking
    rows by it sent extra columns and got a 422."""
    strict = pipeline("strict_rows", input=Row)(_noop).input_schema
    loose = pipeline("loose_rows", input=Loose)(_noop).input_schema
    assert strict is not None and strict["additionalProperties"] is False
    assert loose is not None and "additionalProperties" not in loose
