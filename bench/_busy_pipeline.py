"""A pipeline that keeps its job busy: it reports progress until cancelled (or for
``seconds``), so the job's row changes every progress interval (bench/watchers.py)."""

from __future__ import annotations

import time

import duckdb
from pydantic import BaseModel

from service.pipelines import Context, pipeline


class BusyParams(BaseModel):
    seconds: float = 600.0


@pipeline("busy", params=BusyParams, description="Reports progress until cancelled.")
def busy(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < ctx.params.seconds:
        ctx.progress(elapsed, ctx.params.seconds, "busy")  # raises once cancelled
        time.sleep(0.01)
    return frame
