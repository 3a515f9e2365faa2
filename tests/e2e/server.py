"""A real ``framejobs serve`` process on 127.0.0.1, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.waiting import wait_for

FAST_ENV = {
    "FRAMEJOBS_PIPELINES": "tests.support.pipelines",
    "FRAMEJOBS_WORKERS": "2",
    "FRAMEJOBS_LEASE_S": "3",
    "FRAMEJOBS_HEARTBEAT_S": "0.5",
    "FRAMEJOBS_POLL_INTERVAL_S": "0.05",
    "FRAMEJOBS_PROGRESS_INTERVAL_S": "0.05",
    "FRAMEJOBS_RESCUE_INTERVAL_S": "0.5",
    "FRAMEJOBS_SHUTDOWN_GRACE_S": "3",
    "FRAMEJOBS_RETRY_BASE_S": "0.05",
    "FRAMEJOBS_DUCKDB_THREADS": "2",
    "FRAMEJOBS_LOG_LEVEL": "warning",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, database_url: str, **env: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.extra_env = env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"process-{self.port}.log"

    def start(self, *args: str) -> Server:
        self._spawn("serve", "--port", str(self.port), *args)
        wait_for(self._ready, timeout=30, what="the server to be ready")
        return self

    def start_worker(self, *args: str) -> Server:
        """Run ``framejobs worker`` instead (no HTTP); ready once it has logged."""
        self._spawn("worker", *args)
        return self

    def _spawn(self, *command: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **FAST_ENV, **self.extra_env}
        env.update(FRAMEJOBS_DATA_DIR=str(self.data_dir), FRAMEJOBS_DATABASE_URL=self.database_url)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", *command], env=env, stdout=log, stderr=log
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"server exited with {self.process.returncode}: {self.log()}")
        try:
            return httpx.get(self.base_url + "/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, **{"timeout": 30, **kw})

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
