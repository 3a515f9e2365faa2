from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.server import Server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Servers on one SQLite file under tmp_path (several may share it, in turn)."""
    started: list[Server] = []
    url = f"sqlite:///{tmp_path / 'data' / 'framejobs.db'}"

    def make(**env: str) -> Server:
        server = Server(tmp_path / "data", url, **env)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def procs(tmp_path: Path, pg_url: str) -> Iterator[Callable[..., Server]]:
    """``framejobs serve``/``worker`` processes on the test's PostgreSQL database."""
    started: list[Server] = []

    def make(**env: str) -> Server:
        process = Server(tmp_path / "data", pg_url, **env)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()
