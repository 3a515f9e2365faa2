"""Starting and stopping a real server process for a benchmark, and reading its
resource use from /proc (Linux)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def temp_dir(prefix: str = "fj-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Server:
    url: str
    pid: int
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (all its threads)."""
        return cpu_seconds(self.pid)

    def status_kb(self, field: str) -> int:
        """A ``VmRSS``/``VmHWM``-style field of /proc/<pid>/status, in KiB."""
        return status_kb(self.pid, field)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a process's log, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # after "pid (comm)": state is field 0, utime 11, stime 12
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def server_command(kind: str, port: int) -> list[str]:
    """``bare``: uvicorn serving bench.bare_app; ``cli``: ``framejobs serve``."""
    if kind == "bare":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_app:create",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "5",
        ]
    framejobs = Path(sys.executable).parent / "framejobs"
    return [str(framejobs), "serve", "--host", "127.0.0.1", "--port", str(port)]


@contextmanager
def running_server(
    kind: str = "bare", *, workers: int | None = None, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A server on a free port with a fresh SQLite database in a temp dir; on exit the
    process is stopped (SIGTERM, then SIGKILL) and the directory removed."""
    with temp_dir() as tmp:
        port = free_port()
        server_env = _server_env(tmp, workers, env)
        log_path = tmp / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                server_command(kind, port),
                cwd=ROOT,
                env=server_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(f"http://127.0.0.1:{port}", proc.pid, proc, tmp, log_path)
        try:
            _wait_ready(server)
            yield server
        finally:
            _stop(proc)


def _server_env(tmp: Path, workers: int | None, extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEJOBS_")}
    env.update(
        FRAMEJOBS_DATABASE_URL=f"sqlite:///{tmp / 'fj.db'}",
        FRAMEJOBS_DATA_DIR=str(tmp / "data"),
        FRAMEJOBS_LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT),
    )
    if workers is not None:
        env["FRAMEJOBS_WORKERS"] = str(workers)
    env.update(extra or {})
    return env


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited at start:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready within {READY_TIMEOUT_S} s:\n{server.log_tail()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
