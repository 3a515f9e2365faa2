"""The floor for bench/pg_drain.py: the least a loop can do and still run each job
durably. Per job: the raw loop's claim; the input payload read; the job's query run on
DuckDB over it; the result encoded as Parquet; and one transaction that completes the
job (fenced by worker and attempt), stores the result and frees the input.

No events, NOTIFY, progress, heartbeats, leases renewed, timeouts, cancels, retries,
webhooks or validation: only what no job service can leave out. So a worker that does
all of that can come close to this loop, never past it.

    python -m bench._pg_floor_loop <libpq url> <worker name> <pipeline>[,<pipeline>...]

Prints one line of JSON, as bench/_pg_raw_loop.py.
"""

from __future__ import annotations

import io
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from bench._pg_raw_loop import CLAIM, COMPLETE, backend_cpu_s

CLAIMED = CLAIM.replace(
    "RETURNING job.id, job.attempt", "RETURNING job.id, job.attempt, job.params"
)
INPUT = "SELECT data FROM payload WHERE job_id = %s AND kind = 'input' ORDER BY seq"
STORE = "INSERT INTO payload (job_id, kind, seq, data) VALUES (%s, 'result', 0, %s)"
FREE = "DELETE FROM payload WHERE job_id = %s AND kind = 'input'"


def run(cursor: duckdb.DuckDBPyConnection, data: bytes, params: dict[str, Any]) -> bytes:
    cursor.register("input", pq.ParquetFile(io.BytesIO(data)).read(use_threads=False))
    try:
        result = cursor.sql(params["query"]).to_arrow_table()
    finally:
        cursor.unregister("input")
    sink = pa.BufferOutputStream()
    pq.write_table(result, sink)
    return bytes(sink.getvalue().to_pybytes())


def one_job(
    conn: psycopg.Connection[Any], cursor: duckdb.DuckDBPyConnection, worker: str, pipes: list[str]
) -> bool:
    now = datetime.now(UTC)
    claim = {"now": now, "pipelines": pipes, "worker": worker, "lease": now + timedelta(seconds=30)}
    row = conn.execute(CLAIMED, claim).fetchone()
    if row is None:
        return False
    job_id, attempt, params = row
    data = b"".join(chunk for (chunk,) in conn.execute(INPUT, (job_id,)).fetchall())
    result = run(cursor, data, params if isinstance(params, dict) else json.loads(params))
    end = {"now": datetime.now(UTC), "id": job_id, "worker": worker, "attempt": attempt}
    with conn.transaction():
        if conn.execute(COMPLETE, end).rowcount != 1:
            raise RuntimeError(f"job {job_id}: lost before it was completed")
        conn.execute(STORE, (job_id, result))
        conn.execute(FREE, (job_id,))
    return True


def main(url: str, worker: str, pipelines: list[str]) -> None:
    done = 0
    database = duckdb.connect(":memory:", config={"threads": 1})
    cursor = database.cursor()
    with psycopg.connect(url, autocommit=True) as conn:
        backend = conn.info.backend_pid
        while one_job(conn, cursor, worker, pipelines):
            done += 1
        report = {
            "done": done,
            "cpu_s": time.process_time(),
            "backend_cpu_s": backend_cpu_s(backend),
        }
    cursor.close()
    database.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(","))
