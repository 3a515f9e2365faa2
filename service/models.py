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
    webhook_url: str | None = Field(default=None, max_length=2000)
    webhook_events: list[str] | None = _json()
    webhook_state: str | None = Field(default=None, max_length=16)
    webhook_attempts: int = 0


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


class WebhookDelivery(SQLModel, table=True):
    """The outbox: one row per event to deliver, written with the job's final state."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        sa.Index(
            "ix_delivery_due",
            "next_attempt_at",
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        ),
        sa.Index("ix_delivery_job", "job_id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    job_id: str = Field(max_length=26)
    event_type: str = Field(max_length=40)
    url: str = Field(max_length=2000)
    payload: str = Field(sa_type=sa.Text, nullable=False)
    status: str = Field(max_length=16)
    attempts: int = 0
    cycle_attempts: int = 0
    next_attempt_at: datetime = _ts(nullable=False)
    claimed_by: str | None = Field(default=None, max_length=200)
    claimed_until: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)
    last_attempt_at: datetime | None = _ts()
    delivered_at: datetime | None = _ts()


class WebhookAttempt(SQLModel, table=True):
    """The attempt log: every POST made for a delivery."""

    __tablename__ = "webhook_attempt"

    delivery_id: str = Field(primary_key=True, max_length=40)
    n: int = Field(primary_key=True)
    at: datetime = _ts(nullable=False)
    duration_ms: float = 0.0
    status_code: int | None = None
    response: str | None = None
    error: str | None = None


class ServiceSecret(SQLModel, table=True):
    """Secrets the service generated itself (the webhook signing secret)."""

    __tablename__ = "service_secret"

    name: str = Field(primary_key=True, max_length=100)
    value: str = Field(max_length=500)
    created_at: datetime = _ts(nullable=False)


job_table: sa.Table = Job.__table__  # type: ignore[attr-defined]
event_table: sa.Table = JobEvent.__table__  # type: ignore[attr-defined]
payload_table: sa.Table = Payload.__table__  # type: ignore[attr-defined]
delivery_table: sa.Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
attempt_table: sa.Table = WebhookAttempt.__table__  # type: ignore[attr-defined]
secret_table: sa.Table = ServiceSecret.__table__  # type: ignore[attr-defined]
