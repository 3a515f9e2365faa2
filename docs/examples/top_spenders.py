"""Example operator pipeline for docs/pipelines.md.

Load it with (from the repository root):

    PYTHONPATH=docs/examples FRAMEJOBS_PIPELINES=top_spenders make run
"""

from __future__ import annotations

import logging

import duckdb
from pydantic import BaseModel, ConfigDict, Field

from service.errors import TransientError
from service.pipelines import Context, pipeline

log = logging.getLogger("top_spenders")


class Purchase(BaseModel):
    """One input row. Field names (or aliases) are the column names."""

    user_id: int = Field(alias="userId")
    amount: float
    country: str | None = None  # optional: the column may be missing or hold nulls


class TopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt param is an error, not ignored

    n: int = Field(default=3, ge=1, le=1000, description="How many users to return.")
    min_total: float = Field(default=0.0, description="Leave out users below this total.")
    fail_attempts: int = Field(
        default=0, ge=0, description="Demo only: raise TransientError on the first N attempts."
    )


@pipeline(
    "top_spenders",
    input=Purchase,
    params=TopParams,
    description="The n users with the largest total amount.",
    max_attempts=4,
    timeout_s=600,
)
def top_spenders(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    log.info("job %s: attempt %d over %d rows", ctx.job_id, ctx.attempt, len(frame))
    if ctx.attempt <= ctx.params.fail_attempts:
        raise TransientError(f"upstream not ready (attempt {ctx.attempt})")

    ctx.progress(0, 2, "summing per user")
    totals = ctx.connection.sql(
        "SELECT user_id, sum(amount) AS total, count(*) AS purchases,"
        " count(DISTINCT country) AS countries"
        " FROM input GROUP BY user_id"
    ).to_arrow_table()  # an Arrow table, materialised here
    ctx.check_cancelled()

    ctx.progress(1, 2, "ranking")
    ctx.connection.register("totals", totals)
    return ctx.connection.sql(  # a relation: the service streams it into the result
        "SELECT * FROM totals WHERE total >= $min_total ORDER BY total DESC, user_id LIMIT $n",
        params={"min_total": ctx.params.min_total, "n": ctx.params.n},
    )
