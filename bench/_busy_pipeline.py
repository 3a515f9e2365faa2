"""A pipeline that keeps its job busy: it reports progress until cancelled (or for
``seconds``), so the job's row changes every progress interval (bench/watchers.py)."""

from __future__ import annotations

import time

import duckdb
from pydantic import BaseModel

from service.pipelines import Context, pipeline


class BusyParams(BaseModel):
    seconds: float = 1e9  # until cancelled


@pipeline("busy", params=BusyParams, description="Reports progress until cancelled.")
def busy(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < ctx.params.seconds:
        # a new message four times a second: the row changes at every progress write
        ctx.progress(min(elapsed, 99.0), None, f"tick {int(elapsed * 4)}")  # raises once cancelled
        time.sleep(0.01)
    return frame
