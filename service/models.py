"""Database tables. The ``job`` row is kept small and hot; blobs live in ``payload``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (naive text) as on PostgreSQL (timestamptz)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, _dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(nullable: bool = True, **kw: Any) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, **kw)


def _json() -> Any:
    return Field(default=None, sa_type=sa.JSON, nullable=True)


class Job(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (
        # The claim reads only queued rows; a partial index keeps it cheap however
        # many finished jobs the table holds.
        sa.Index(
            "ix_job_queued",
            sa.text("priority DESC"),
            "run_after",
            "id",
            postgresql_where=sa.text("status = 'queued'"),
            sqlite_where=sa.text("status = 'queued'"),
        ),
        sa.Index(
            "ix_job_running_lease",
            "lease_expires_at",
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        ),
        sa.Index("ix_job_status_id", "status", "id"),
        sa.Index("ix_job_pipeline_id", "pipeline", "id"),
    )

    id: str = Field(primary_key=True, max_length=26)
    pipeline: str = Field(max_length=200)
    params: dict[str, Any] | None = _json()
    status: str = Field(max_length=16)
    priority: int = 0
    run_after: datetime = _ts(nullable=False)
    attempt: int = 0
    max_attempts: int = 1
    timeout_s: float | None = None
    cancel_requested: bool = False
    worker_id: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = _ts()
    progress_percent: float | None = None
    progress_message: str | None = None
    progress_updated_at: datetime | None = _ts()
    version: int = 1
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    input_rows: int = Field(default=0, sa_type=sa.BigInteger)
    input_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    input_columns: list[dict[str, Any]] | None = _json()
    result_rows: int | None = Field(default=None, sa_type=sa.BigInteger)
    result_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    result_columns: list[dict[str, Any]] | None = _json()
    error_type: str | None = Field(default=None, max_length=200)
    error_message: str | None = None
    idempotency_key: str | None = Field(default=None, max_length=200, unique=True)
    request_hash: str | None = Field(default=None, max_length=64)


class JobEvent(SQLModel, table=True):
    """One row per status change, so an event stream can be resumed without loss."""

    __tablename__ = "job_event"

    job_id: str = Field(primary_key=True, max_length=26)
    version: int = Field(primary_key=True)
    status: str = Field(max_length=16)
    data: dict[str, Any] = Field(sa_type=sa.JSON, nullable=False)


class Payload(SQLModel, table=True):
    """Input and result Parquet files, in chunks, so neither side needs one whole in memory."""

    __tablename__ = "payload"

    job_id: str = Field(primary_key=True, max_length=26)
    kind: str = Field(primary_key=True, max_length=16)
    seq: int = Field(primary_key=True)
    data: bytes = Field(sa_type=sa.LargeBinary, nullable=False)


job_table: sa.Table = Job.__table__  # type: ignore[attr-defined]
event_table: sa.Table = JobEvent.__table__  # type: ignore[attr-defined]
payload_table: sa.Table = Payload.__table__  # type: ignore[attr-defined]
