"""Settings that would start a broken service are refused when they are read."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("database_url", "sqlite://", "names no file"),
        ("database_url", "sqlite:///", "names no file"),
        ("database_url", "sqlite:///:memory:", "names no file"),
        ("duckdb_memory_limit", "0B", "at least 64MB"),
        ("duckdb_memory_limit", "1KB", "at least 64MB"),
        ("duckdb_memory_limit", "0%", "at least 64MB"),
        ("poll_interval_s", 1e-9, "greater than or equal to 0.01"),
        ("progress_interval_s", 0.001, "greater than or equal to 0.01"),
        ("webhook_poll_interval_s", 0, "greater than or equal to 0.01"),
    ],
)
def test_refused(field: str, value: object, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_a_temp_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ValidationError, match="is not a folder"):
        Settings(duckdb_temp_directory=tmp_path / "file")


@pytest.mark.parametrize("limit", ["64MB", "512MiB", "4GB", "80%", "2 gigabytes"])
def test_memory_limits_accepted(limit: str) -> None:
    assert Settings(duckdb_memory_limit=limit).duckdb_memory_limit == limit


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u:s3cret@db.internal:notaport/framejobs",
        "postgresql+psycopg://u:s3cret@[::1/framejobs",
    ],
)
def test_a_url_that_does_not_parse_is_a_setting_error(url: str) -> None:
    # SQLAlchemy only parses the URL when the engine is made: unchecked here, the
    # command ended in a traceback instead of a one-line settings error.
    with pytest.raises(ValidationError) as refused:
        Settings(database_url=url)
    (message,) = (e["msg"] for e in refused.value.errors(include_input=False))
    assert "not a URL" in message and "s3cret" not in message
