"""PostgreSQL claim cost: the real ``service.claim.claim`` (limit 1, the worker's
pipeline filter) with 10,000 and with 1,000,000 finished jobs in the table and 5 queued ones.

Two databases (rows made by ``generate_series``, then VACUUM ANALYZE); rounds
alternate between them (A B A B ...) so that the machine's noise falls on both.
Reported: the client-side time of a claim transaction as the worker runs it
(``writing()`` + ``claim()``: the UPDATE over the SKIP LOCKED CTE, its event row and
NOTIFY, COMMIT; the job is put back afterwards, untimed), the server-side execution
time of the claim statement from EXPLAIN ANALYZE, the plan, and which plans the server used for the
statement once psycopg had prepared it (``pg_prepared_statements``).

    python -m bench.pg_claim [--quick]
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from bench import pg
from bench.report import header, ms, parse_args, table, verdict
from service.claim import claim
from service.config import Settings
from service.db import make_engine, writing
from service.pipelines import load_registry
from service.store import utcnow

FULL = {"finished": (10_000, 1_000_000), "queued": 5, "rounds": 5, "claims": 200, "explains": 50}
QUICK = {"finished": (1_000, 20_000), "queued": 5, "rounds": 2, "claims": 30, "explains": 5}
TARGET_RATIO = 1.2
WORKER = "bench-host:1:claim"

INPUT_COLUMNS = '[{"name": "user_id", "type": "int64"}, {"name": "amount", "type": "double"}]'
RESULT_COLUMNS = '[{"name": "count_star()", "type": "int64"}]'
# Finished jobs as the service leaves them: mostly completed, some failed or cancelled,
# over the last 30 days; ids in the id alphabet (hex digits), sorting by time.
FINISHED_SQL = f"""
INSERT INTO job (id, pipeline, params, status, priority, run_after, attempt, max_attempts,
    cancel_requested, version, created_at, updated_at, started_at, finished_at,
    progress_percent, progress_updated_at, input_rows, input_bytes, input_columns,
    result_rows, result_bytes, result_columns, error_type, error_message, webhook_attempts)
SELECT lpad(to_hex(g), 26, '0'), p.name, p.params, s.status, 0, t.ts, 1, 3,
    false, 4, t.ts, t.ts, t.ts, t.ts,
    100, t.ts, 10, 1234, '{INPUT_COLUMNS}'::json,
    1, 512, '{RESULT_COLUMNS}'::json, s.error_type, s.error_message, 0
FROM generate_series(1, %(n)s) g
CROSS JOIN LATERAL (SELECT now() - interval '30 days'
    + (g::float8 / %(n)s) * interval '29 days' AS ts) t
CROSS JOIN LATERAL (SELECT CASE WHEN g %% 2 = 0 THEN 'sql' ELSE 'billing_rollup' END AS name,
    CASE WHEN g %% 2 = 0 THEN '{{"query": "select count(*) from input"}}'::json
    ELSE '{{}}'::json END AS params) p
CROSS JOIN LATERAL (SELECT
    CASE WHEN g %% 20 = 0 THEN 'failed' WHEN g %% 20 = 1 THEN 'cancelled'
    ELSE 'completed' END AS status,
    CASE WHEN g %% 20 = 0 THEN 'QueryError' END AS error_type,
    CASE WHEN g %% 20 = 0 THEN 'bad query' END AS error_message) s
"""
QUEUED_SQL = f"""
INSERT INTO job (id, pipeline, params, status, priority, run_after, attempt, max_attempts,
    cancel_requested, version, created_at, updated_at, input_rows, input_bytes,
    input_columns, webhook_attempts)
SELECT 'z' || lpad(to_hex(g), 25, '0'), 'sql',
    '{{"query": "select count(*) from input"}}'::json, 'queued', 0, now(), 0, 3,
    false, 1, now(), now(), 10, 1234, '{INPUT_COLUMNS}'::json, 0
FROM generate_series(1, %(n)s) g
"""


@dataclass
class Table:
    finished: int
    dbname: str
    engine: sa.Engine
    seconds_to_fill: float
    claim_s: list[float] = field(default_factory=list)
    exec_ms: list[float] = field(default_factory=list)
    plan: str = ""
    plan_counts: tuple[int, int] | None = None  # generic, custom
    generic_plan: str = ""


@contextmanager
def filled(finished: int, queued: int) -> Iterator[Table]:
    with pg.database(f"claim_{finished}") as name:
        started = time.monotonic()
        with psycopg.connect(pg.libpq_url(name)) as conn:
            conn.execute(FINISHED_SQL, {"n": finished})
            conn.execute(QUEUED_SQL, {"n": queued})
        pg.vacuum_analyze(name)
        seconds = time.monotonic() - started
        engine = make_engine(Settings(database_url=pg.sqlalchemy_url(name)))
        try:
            yield Table(finished, name, engine, seconds)
        finally:
            engine.dispose()


def _claim_once(conn: sa.Connection, pipelines: frozenset[str]) -> int:
    return len(claim(conn, worker=WORKER, now=utcnow(), lease_s=30.0, limit=1, pipelines=pipelines))


RESTORE_SQL = """
UPDATE job SET status = 'queued', worker_id = NULL, lease_expires_at = NULL, started_at = NULL,
    attempt = attempt - 1
WHERE worker_id = %(worker)s AND status = 'running'
"""


def time_claims(tbl: Table, pipelines: frozenset[str], n: int) -> None:
    """``n`` claims as a worker makes them: ``writing()`` (pool checkout, BEGIN, the
    claim, COMMIT), timed; after each, the job is put back (not timed). Committed, not
    rolled back: psycopg forgets its prepared statements on ROLLBACK, and the worker's
    claim runs as a prepared statement after five uses."""
    with psycopg.connect(pg.libpq_url(tbl.dbname), autocommit=True) as restore:
        for _ in range(n):
            started = time.perf_counter()
            with writing(tbl.engine) as conn:
                got = _claim_once(conn, pipelines)
            tbl.claim_s.append(time.perf_counter() - started)
            if got != 1:
                raise RuntimeError(f"a claim returned {got} jobs, not 1")
            restore.execute(RESTORE_SQL, {"worker": WORKER})
            restore.execute("DELETE FROM job_event WHERE job_id LIKE 'z%%'")


def claim_statement(tbl: Table, pipelines: frozenset[str]) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of ``claim()``'s claim statement, as psycopg gets them."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def capture(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        seen.append((statement, dict(params)))

    sa.event.listen(tbl.engine, "before_cursor_execute", capture)
    try:
        with tbl.engine.connect() as conn:
            tx = conn.begin()
            _claim_once(conn, pipelines)
            tx.rollback()
    finally:
        sa.event.remove(tbl.engine, "before_cursor_execute", capture)
    return next(
        seen_one for seen_one in seen if seen_one[0].lstrip().upper().startswith(("WITH", "UPDATE"))
    )


def explain(tbl: Table, statement: str, params: dict[str, Any], n: int) -> None:
    """EXPLAIN ANALYZE of the claim statement (rolled back), ``n`` times: the plan of
    the last one and every execution time."""
    with psycopg.connect(pg.libpq_url(tbl.dbname)) as conn:
        for _ in range(n):
            rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params).fetchall()
            conn.rollback()
            text = "\n".join(r[0] for r in rows)
            found = re.search(r"Execution Time: ([\d.]+) ms", text)
            if found:
                tbl.exec_ms.append(float(found.group(1)))
            tbl.plan = text


def generic_plan(tbl: Table, statement: str, params: dict[str, Any]) -> str:
    """The plan PostgreSQL makes for the prepared statement when it may not look at
    the parameter values (plan_cache_mode = force_generic_plan)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    prepared = re.sub(r"%\((\w+)\)s", number, statement)
    with psycopg.connect(pg.libpq_url(tbl.dbname)) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE fj_claim AS {prepared}")
        args = sql.SQL(", ").join(sql.Literal(params[name]) for name in names)
        query = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) EXECUTE fj_claim({})").format(args)
        rows = conn.execute(query).fetchall()
        conn.rollback()
    return "\n".join(r[0] for r in rows)


def prepared_plan_counts(tbl: Table) -> tuple[int, int] | None:
    """Generic and custom plans the server made for the claim statement on the pooled
    connection the timing loop used (psycopg prepares a statement after 5 runs)."""
    with tbl.engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE 'WITH due AS%%'"
        ).first()
    return (int(row[0]), int(row[1])) if row else None


def _p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


def show(small: Table, large: Table) -> None:
    rows = []
    for tbl in (small, large):
        rows.append(
            [
                f"{tbl.finished:,} finished + queued",
                tbl.seconds_to_fill,
                len(tbl.claim_s),
                ms(statistics.median(tbl.claim_s)),
                ms(_p(tbl.claim_s, 99)),
                statistics.median(tbl.exec_ms),
                _p(tbl.exec_ms, 99),
                f"{tbl.plan_counts[0]} / {tbl.plan_counts[1]}" if tbl.plan_counts else "-",
            ]
        )
    table(
        (
            "table",
            "fill s",
            "claims",
            "claim txn p50 ms",
            "p99 ms",
            "EXPLAIN ANALYZE exec p50 ms",
            "p99 ms",
            "prepared: generic / custom plans",
        ),
        rows,
    )
    ratio = statistics.median(large.claim_s) / statistics.median(small.claim_s)
    exec_ratio = statistics.median(large.exec_ms) / statistics.median(small.exec_ms)
    print(
        f"\n  claim() p50, {large.finished:,} / {small.finished:,} finished: {ratio:.2f}x  "
        f"{verdict(ratio, TARGET_RATIO, at_most=True)}"
    )
    print(
        f"  claim statement execution p50 (server), same: {exec_ratio:.2f}x  "
        f"{verdict(exec_ratio, TARGET_RATIO, at_most=True)}"
    )
    uses = "ix_job_queued" in large.plan
    print(f"  plan uses the partial index ix_job_queued: {'yes' if uses else 'NO'}")
    print(f"\n  EXPLAIN (ANALYZE, BUFFERS), {large.finished:,} finished jobs:")
    print("\n".join("    " + line for line in large.plan.splitlines()))
    generic_uses = "ix_job_queued" in large.generic_plan
    print(
        f"\n  forced generic plan (plan_cache_mode = force_generic_plan), "
        f"{large.finished:,} finished jobs; uses ix_job_queued: {'yes' if generic_uses else 'no'}"
    )
    print("\n".join("    " + line for line in large.generic_plan.splitlines()))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    if not pg.available():
        print(pg.skip_message("pg_claim"))
        return
    sizes = QUICK if args.quick else FULL
    small_n, large_n = sizes["finished"]
    header(
        f"pg_claim: claim cost with {small_n:,} vs {large_n:,} finished jobs in the table "
        f"({sizes['queued']} queued)",
        args.quick,
    )
    pipelines = frozenset(load_registry(Settings()).names)
    with ExitStack() as stack:
        small = stack.enter_context(filled(small_n, sizes["queued"]))
        large = stack.enter_context(filled(large_n, sizes["queued"]))
        print(
            f"   {sizes['rounds']} alternating rounds of {sizes['claims']} claims per table "
            "(after a warm-up of 20), each claim put back; "
            f"{sizes['explains']} EXPLAIN ANALYZE runs per table"
        )
        for tbl in (small, large):
            time_claims(tbl, pipelines, 20)
            tbl.claim_s.clear()
        for _ in range(sizes["rounds"]):
            for tbl in (small, large):
                time_claims(tbl, pipelines, sizes["claims"])
        for tbl in (small, large):
            tbl.plan_counts = prepared_plan_counts(tbl)
            statement, params = claim_statement(tbl, pipelines)
            explain(tbl, statement, params, sizes["explains"])
            tbl.generic_plan = generic_plan(tbl, statement, params)
        show(small, large)


if __name__ == "__main__":
    main()
