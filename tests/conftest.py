from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from service.api.app import create_app
from service.config import Settings
from service.db import make_engine, writing
from service.revisions import upgrade
from tests.support import databases

TEST_PIPELINES = ["tests.support.pipelines"]


def fast_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "pipelines": TEST_PIPELINES,
        "workers": 2,
        "lease_s": 3.0,
        "heartbeat_s": 0.5,
        "poll_interval_s": 0.05,
        "progress_interval_s": 0.05,
        "rescue_interval_s": 0.5,
        "shutdown_grace_s": 5.0,
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "duckdb_threads": 2,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_template() -> Iterator[databases.Clones]:
    databases.require_pg()
    databases.create_template()
    clones = databases.Clones()
    yield clones
    clones.close()
    databases.drop_template()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; each test gets a copy (migrating costs
    ~25 ms a test, copying nothing to speak of)."""
    path = tmp_path_factory.mktemp("template") / "framejobs.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
    upgrade(engine)
    engine.dispose()  # the last connection checkpoints: one file, no -wal
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database per test: a SQLite file, or a PostgreSQL clone."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    yield request.getfixturevalue("pg_url")


@pytest.fixture
def pg_url(pg_template: databases.Clones) -> Iterator[str]:
    """A fresh PostgreSQL database cloned from the migrated template."""
    name = pg_template.take()
    try:
        yield databases.sqlalchemy_url(name)
    finally:
        databases.wait_until_available()  # a test may have restarted the server
        pg_template.give_back(name)


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "framejobs.db"
    shutil.copyfile(sqlite_template, path)
    path.chmod(0o600)
    return f"sqlite:///{path}"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return fast_settings(database_url, tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def api_only(settings: Settings) -> Iterator[TestClient]:
    """The API with no worker threads: jobs stay queued."""
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


@pytest.fixture
def scratch_engine(sqlite_url: str) -> Iterator[Engine]:
    """An engine on a migrated SQLite file with a one-column table ``scratch``."""
    engine = make_engine(Settings(database_url=sqlite_url))
    with writing(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE scratch (n INTEGER)")
    yield engine
    engine.dispose()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB file system of its own (tmpfs): filling it fills nothing else."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Reports as text any process can take. Some tests handle lone surrogates (text no
    database stores, on purpose), in their logs and in a failure's diff; pytest-xdist
    sends reports between processes as UTF-8, which has none, and a report it cannot
    send is an internal error that drops the test: a failure could go unseen."""
    report = yield
    report.sections = [(name, _sendable(text)) for name, text in report.sections]
    if isinstance(getattr(report, "wasxfail", None), str):
        report.wasxfail = _sendable(report.wasxfail)
    if isinstance(report.longrepr, tuple):  # a skip's (path, line, reason)
        report.longrepr = tuple(
            _sendable(part) if isinstance(part, str) else part for part in report.longrepr
        )
    elif report.longrepr is not None:
        shown = str(report.longrepr)
        if _sendable(shown) != shown:  # its structure is lost, its text is not
            report.longrepr = _sendable(shown)
    return report


def _sendable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode()
