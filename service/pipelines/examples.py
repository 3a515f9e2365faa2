"""Worked example pipelines that ship with framejobs."""

from __future__ import annotations

import duckdb
from pydantic import BaseModel, ConfigDict, Field

from service.pipelines import Context, pipeline


class BillingRow(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    user_id: int = Field(alias="userId")
    amount: float


@pipeline(
    "billing_rollup",
    input=BillingRow,
    description="Sum and count of `amount` per `user_id`.",
    max_attempts=3,
)
def billing_rollup(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    ctx.progress(0, message="aggregating")
    return frame.aggregate("user_id, sum(amount) AS total, count(*) AS n", "user_id").order(
        "user_id"
    )
