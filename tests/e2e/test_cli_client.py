"""The client commands against a real server: submit with a progress bar, jobs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.e2e.server import Server, free_port


def _cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "service.cli", *args, "--url", server.base_url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_submit_follows_and_saves_the_result(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory().start()
    frame = tmp_path / "bills.csv"
    frame.write_text("userId,amount\n1,2.5\n2,3\n1,1\n")
    out = tmp_path / "totals.csv"
    done = _cli(
        server, "submit", "billing_rollup", str(frame), "--out", str(out), "--format", "csv"
    )
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout + done.stderr
    assert out.read_text().splitlines() == ['"user_id","total","n"', "1,3.5,2", "2,3,1"]
    listed = _cli(server, "jobs", "list")
    assert listed.returncode == 0 and "billing_rollup" in listed.stdout


def test_submit_reports_refusals_and_failures(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory().start()
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,amount\n1,x\n")
    refused = _cli(server, "submit", "billing_rollup", str(bad))
    assert refused.returncode == 2 and "422" in refused.stderr
    frame = tmp_path / "a.csv"
    frame.write_text("a\n1\n")
    failed = _cli(server, "submit", "boom", str(frame))
    assert failed.returncode == 1 and "failed" in failed.stderr


def test_jobs_show_and_cancel(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    server = server_factory(FRAMEJOBS_WORKERS="0").start()
    frame = tmp_path / "a.csv"
    frame.write_text("a\n1\n")
    queued = _cli(
        server, "submit", "sql", str(frame), "--params", '{"query": "select 1"}', "--no-wait"
    )
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.split()[1]
    assert '"status": "queued"' in _cli(server, "jobs", "show", job_id).stdout
    assert _cli(server, "jobs", "cancel", job_id).stdout.strip() == f"job {job_id} cancelled"
    assert _cli(server, "jobs", "cancel", job_id).returncode == 2
    assert _cli(server, "jobs", "show", "nope").returncode == 2


def test_json_results_are_saved_whole(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory().start()
    frame = tmp_path / "bills.csv"
    frame.write_text("userId,amount\n" + "".join(f"{i},1\n" for i in range(2500)))
    out = tmp_path / "totals.json"
    # no --format: the .json extension asks for JSON
    done = _cli(server, "submit", "billing_rollup", str(frame), "--out", str(out))
    assert done.returncode == 0, done.stderr
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == 2500 and saved["rows"][-1]["user_id"] == 2499
    assert [c["name"] for c in saved["columns"]] == ["user_id", "total", "n"]


class _NotFramejobs(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>hello</html>")

    def log_message(self, *args: object) -> None:
        pass


def test_client_failures_are_one_line(tmp_path: Path) -> None:
    frame = tmp_path / "a.csv"
    frame.write_text("a\n1\n")
    nobody = f"http://127.0.0.1:{free_port()}"
    other = ThreadingHTTPServer(("127.0.0.1", 0), _NotFramejobs)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    stranger = f"http://127.0.0.1:{other.server_address[1]}"
    cases = [
        (["jobs", "list", "--url", nobody], 1, "cannot reach"),
        (["jobs", "list", "--url", stranger], 1, "did not answer as framejobs"),
        # POST: the stranger answers 501 with an HTML page, not a problem
        (["submit", "sql", str(frame), "--url", stranger], 1, "did not answer as framejobs"),
        (["jobs", "show", "x", "--url", "not-a-url"], 2, "not an http"),
        (["submit", "sql", str(frame), "--params", "{bad", "--url", nobody], 2, "--params"),
        (["submit", "sql", str(frame), "--out", "/no/such/dir/x", "--url", nobody], 2, "--out"),
        (["submit", "sql", str(frame), "--format", "xml", "--url", nobody], 2, "--format"),
    ]
    try:
        for args, code, needle in cases:
            command = [sys.executable, "-m", "service.cli", *args]
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert result.returncode == code, (args, result.stderr)
            assert needle in result.stderr and "Traceback" not in result.stderr, result.stderr
            if code == 1:
                assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    finally:
        other.shutdown()
        other.server_close()
