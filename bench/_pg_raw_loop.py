"""The ceiling for bench/pg_drain.py: one process, one psycopg connection, a loop that
only claims a job (the claim's CTE shape: due queued jobs in priority order, LIMIT 1,
FOR UPDATE SKIP LOCKED, then UPDATE ... RETURNING) and completes it (fenced by worker
and attempt), each statement its own transaction, until nothing is left to claim.

    python -m bench._pg_raw_loop <libpq url> <worker name> <pipeline>[,<pipeline>...]

Prints one line of JSON: jobs done, the process's CPU seconds and its backend's.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg

CLAIM = """
WITH due AS (
    SELECT id FROM job
    WHERE status = 'queued' AND run_after <= %(now)s AND pipeline = ANY(%(pipelines)s)
    ORDER BY priority DESC, run_after, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE job SET status = 'running', worker_id = %(worker)s, attempt = job.attempt + 1,
    lease_expires_at = %(lease)s, started_at = %(now)s, updated_at = %(now)s,
    version = job.version + 1
FROM due WHERE job.id = due.id AND job.status = 'queued'
RETURNING job.id, job.attempt
"""

COMPLETE = """
UPDATE job SET status = 'completed', finished_at = %(now)s, updated_at = %(now)s,
    worker_id = NULL, lease_expires_at = NULL, progress_percent = 100,
    version = version + 1
WHERE id = %(id)s AND status = 'running' AND worker_id = %(worker)s AND attempt = %(attempt)s
"""


def backend_cpu_s(pid: int) -> float:
    from bench.harness import cpu_seconds

    try:
        return cpu_seconds(pid)
    except OSError:
        return float("nan")


def main(url: str, worker: str, pipelines: list[str]) -> None:
    done = 0
    with psycopg.connect(url, autocommit=True) as conn:
        backend = conn.info.backend_pid
        while True:
            now = datetime.now(UTC)
            params = {
                "now": now,
                "pipelines": pipelines,
                "worker": worker,
                "lease": now + timedelta(seconds=30),
            }
            row = conn.execute(CLAIM, params).fetchone()
            if row is None:
                break
            job_id, attempt = row
            end = {"now": datetime.now(UTC), "id": job_id, "worker": worker, "attempt": attempt}
            if conn.execute(COMPLETE, end).rowcount != 1:
                raise RuntimeError(f"job {job_id}: lost before it was completed")
            done += 1
        report = {
            "done": done,
            "cpu_s": time.process_time(),
            "backend_cpu_s": backend_cpu_s(backend),
        }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(","))
