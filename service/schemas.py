"""Wire shapes: what clients send and receive. Never tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import RowMapping

Status = Literal["queued", "running", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


EventType = Literal["job.completed", "job.failed", "job.cancelled"]


def _all_events() -> list[EventType]:
    return ["job.completed", "job.failed", "job.cancelled"]


class WebhookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)
    events: list[EventType] = Field(default_factory=lambda: _all_events(), min_length=1)


class JobSpec(BaseModel):
    """The JSON submit body (or the ``spec`` part of a multipart submit)."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] | None = None
    frame: Any = Field(default=None, description='{"columns": {...}} or {"rows": [...]}')
    # Strict: `true` is no number of attempts, "3" no integer, NaN no timeout.
    priority: int = Field(
        default=0, ge=-1000, le=1000, strict=True, description="Higher runs first."
    )
    run_after: AwareDatetime | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100, strict=True)
    timeout_s: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, strict=True, allow_inf_nan=False
    )
    validation: Literal["strict", "coerce"] | None = None
    webhook: WebhookSpec | None = None

    @field_validator("run_after", mode="before")
    @classmethod
    def _time_as_text(cls, value: object) -> object:
        """ISO 8601 text only: pydantic would read a bare number as Unix seconds."""
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("run_after is a date-time with a time zone, as text")
        return value

    @field_validator("run_after")
    @classmethod
    def _storable_time(cls, value: datetime | None) -> datetime | None:
        """Stored in UTC: a time whose UTC reading falls off the calendar is refused."""
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("run_after is out of range once converted to UTC") from None


class ColumnOut(BaseModel):
    name: str
    type: str
    nullable: bool = True


class FrameOut(BaseModel):
    rows: int
    columns: list[ColumnOut]
    bytes: int
    url: str | None = None


class ProgressOut(BaseModel):
    percent: float | None
    message: str | None
    updated_at: datetime | None


class ErrorOut(BaseModel):
    type: str
    message: str


class JobOut(BaseModel):
    id: str
    pipeline: str
    status: Status
    progress: ProgressOut
    attempt: int
    max_attempts: int
    cancel_requested: bool
    priority: int
    params: dict[str, Any] | None
    created_at: datetime
    run_after: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timeout_s: float | None
    input: FrameOut
    result: FrameOut | None
    error: ErrorOut | None
    webhook: dict[str, Any] | None
    links: dict[str, str]


class JobPage(BaseModel):
    items: list[JobOut]
    next_page_token: str | None = None


class PipelineOut(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any] | None
    params_schema: dict[str, Any] | None
    max_attempts: int | None
    timeout_s: float | None
    validation: str


def _webhook(row: RowMapping) -> dict[str, Any] | None:
    if not row["webhook_url"]:
        return None
    return {
        "url": row["webhook_url"],
        "events": row["webhook_events"],
        "state": row["webhook_state"] or "pending",
        "attempts": row["webhook_attempts"],
    }


def _float(value: float | None) -> float | None:
    return float(value) if value is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_body(row: RowMapping) -> dict[str, Any]:
    """The job as clients see it (a plain dict: this is the hot path of every poll)."""
    job_id = row["id"]
    base = f"/jobs/{job_id}"
    completed = row["status"] == "completed"
    return {
        "id": job_id,
        "pipeline": row["pipeline"],
        "status": row["status"],
        "progress": {
            "percent": _float(row["progress_percent"]),
            "message": row["progress_message"],
            "updated_at": _iso(row["progress_updated_at"]),
        },
        "attempt": row["attempt"],
        "max_attempts": row["max_attempts"],
        "cancel_requested": row["cancel_requested"],
        "priority": row["priority"],
        "params": row["params"],
        "created_at": _iso(row["created_at"]),
        "run_after": _iso(row["run_after"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "timeout_s": _float(row["timeout_s"]),
        "input": {
            "rows": row["input_rows"],
            "columns": row["input_columns"] or [],
            "bytes": row["input_bytes"],
            "url": None,
        },
        "result": {
            "rows": row["result_rows"],
            "columns": row["result_columns"] or [],
            "bytes": row["result_bytes"],
            "url": f"{base}/result",
        }
        if completed
        else None,
        "error": {"type": row["error_type"], "message": row["error_message"] or ""}
        if row["error_type"]
        else None,
        "webhook": _webhook(row),
        "links": {
            "self": base,
            "events": f"{base}/events",
            "result": f"{base}/result",
            "cancel": f"{base}/cancel",
        },
    }
