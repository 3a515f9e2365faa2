"""The claim's plan on PostgreSQL does not depend on what the table holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service import claim
from service.api.app import create_app
from service.db import make_engine, writing
from service.store import utcnow
from tests.conftest import fast_settings
from tests.support.jobs import submit

pytestmark = pytest.mark.postgres
CLAIMS = 12  # psycopg prepares a statement at its fifth run


def test_every_claim_runs_the_generic_plan(pg_url: str, tmp_path: Path) -> None:
    """A custom plan is planned at each claim, against the whole table's statistics:
    with a million finished jobs PostgreSQL chose one every time, some runs and not
    others, and a claim cost 1.37x its cost beside 10,000 (bench/pg_claim.py)."""
    settings = fast_settings(pg_url, tmp_path / "data", db_pool_size=1, db_max_overflow=0)
    with TestClient(create_app(settings, workers=0)) as api:
        for _ in range(CLAIMS):
            submit(api, "sql", params={"query": "select 1"})
    engine = make_engine(settings)  # one connection: the one that prepares the claim
    try:
        for _ in range(CLAIMS):
            with writing(engine) as conn:
                assert len(claim.claim(conn, worker="w", now=utcnow(), lease_s=30)) == 1
        with writing(engine) as conn:
            plans = conn.exec_driver_sql(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%%SKIP LOCKED%%'"
            ).all()
    finally:
        engine.dispose()
    assert len(plans) == 1, "psycopg prepared the claim statement"
    generic, custom = plans[0]
    assert generic > 0 and custom == 0
