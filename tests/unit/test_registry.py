"""The pipeline registry: names, the same pipeline found twice, JSON Schemas."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from pydantic import BaseModel, ConfigDict

from service.config import Settings
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


def test_a_module_that_fails_to_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its own error names only what it lacked, not which of FRAMEJOBS_PIPELINES it was.
    (tmp_path / "fj_needs_a_dependency.py").write_text("import fj_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Exception, match="fj_needs_a_dependency") as refused:
        load_registry(Settings(pipelines=["fj_needs_a_dependency"]))
    assert "No module named 'fj_not_installed'" in str(refused.value)


class Opaque:
    """A type pydantic can hold but not describe in JSON Schema."""


class OpaqueParams(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    helper: Opaque | None = None


def test_a_model_without_json_schema_shows_none(caplog: pytest.LogCaptureFixture) -> None:
    made = pipeline("opaque", params=OpaqueParams)(_noop)
    assert made.params_schema is None and made.input_schema is None
    assert "OpaqueParams has no JSON Schema" in caplog.text
