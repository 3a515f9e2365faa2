"""Typed settings, read from ``FRAMEJOBS_*`` environment variables.

The entry point (``cli.py`` or a test) builds one :class:`Settings` and passes it
down; nothing in the package reads the environment at import time.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.bounds import MAX_SLOTS

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Durations are finite: an infinite lease or grace would overflow the clock arithmetic.
Seconds = Annotated[float, Field(allow_inf_nan=False)]
HOUR, DAY = 3600.0, 86400.0
WEEK, YEAR = 7 * DAY, 365.25 * DAY
# Standard Webhooks' suggested schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)


def _default_workers() -> int:
    return os.cpu_count() or 1


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# What DuckDB's memory_limit parser takes: a number and a unit (decimal or binary
# bytes, long or short, any case), or a share of the machine's memory.
# Loops that wake this often or more spin a core for nothing (1e-9 s: 77 % of one).
MIN_TICK_S = 0.01
MIN_DUCKDB_MEMORY = 64 * 1000**2
_MEMORY = re.compile(
    r"\s*(\d+(?:\.\d+)?)\s*(%|(k|m|g|t)i?b|(kilo|mega|giga|tera)?bytes?|b)\s*", re.IGNORECASE
)


class Settings(BaseSettings):
    """Every knob of the service. See docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="FRAMEJOBS_", extra="ignore")

    database_url: str = "sqlite:///./data/framejobs.db"
    data_dir: Path = Path("./data")
    pipelines: Annotated[list[str], NoDecode] = Field(default_factory=list)
    sql_pipeline_enabled: bool = True

    max_upload_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_json_bytes: int = Field(default=64 * 1024**2, gt=0)
    max_frame_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_frame_columns: int = Field(default=10_000, ge=1)
    max_result_bytes: int = Field(default=4 * 1024**3, gt=0)
    payload_chunk_bytes: int = Field(default=4 * 1024**2, ge=1024, le=256 * 1024**2)

    # FULL: a commit (and so a 202) survives power loss; NORMAL: only a process crash.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    db_pool_size: int = Field(default=10, ge=1, le=1000)
    db_max_overflow: int = Field(default=20, ge=0, le=1000)
    prune_after_s: Seconds | None = Field(default=None, gt=0, le=100 * YEAR)
    prune_interval_s: Seconds = Field(default=3600.0, ge=MIN_TICK_S, le=WEEK)

    workers: int = Field(default_factory=_default_workers, ge=0, le=MAX_SLOTS)
    claim_batch: int = Field(default=4, ge=1, le=100)
    lease_s: Seconds = Field(default=30.0, gt=0, le=DAY)
    heartbeat_s: Seconds = Field(default=10.0, ge=MIN_TICK_S, le=DAY)
    poll_interval_s: Seconds = Field(default=0.5, ge=MIN_TICK_S, le=HOUR)
    rescue_interval_s: Seconds = Field(default=5.0, ge=MIN_TICK_S, le=DAY)
    rescue_dead_local: bool = True
    progress_interval_s: Seconds = Field(default=0.25, ge=MIN_TICK_S, le=HOUR)
    shutdown_grace_s: Seconds = Field(default=30.0, ge=0, le=DAY)

    default_max_attempts: int = Field(default=3, ge=1, le=1000)
    retry_base_s: Seconds = Field(default=1.0, ge=0, le=DAY)
    retry_max_s: Seconds = Field(default=300.0, ge=0, le=WEEK)

    duckdb_threads: int = Field(default_factory=_default_workers, ge=1, le=1024)
    duckdb_memory_limit: str = "1GB"
    duckdb_temp_directory: Path | None = None

    webhook_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_timeout_s: Seconds = Field(default=15.0, gt=0, le=HOUR)
    webhook_retry_schedule: Annotated[list[Seconds], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE), min_length=1, max_length=100
    )
    webhook_retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    webhook_max_retry_after_s: Seconds = Field(default=86400.0, gt=0, le=WEEK)
    webhook_allow_networks: Annotated[list[IPNetwork], NoDecode] = Field(default_factory=list)
    webhook_concurrency: int = Field(default=16, ge=1, le=256)
    webhook_poll_interval_s: Seconds = Field(default=1.0, ge=MIN_TICK_S, le=HOUR)
    webhook_dispatch: bool = True

    long_poll_max_s: Seconds = Field(default=60.0, gt=0, le=HOUR)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        size = _MEMORY.fullmatch(value)
        if size is None:
            raise ValueError("must be a size DuckDB reads, such as 4GB, 512MiB or 80%")
        if _approx_bytes(size) < MIN_DUCKDB_MEMORY:
            # accepted by DuckDB, but then every job of any size fails "Out of Memory"
            raise ValueError("must be at least 64MB (or a share of memory, such as 80%)")
        return value.strip()

    @field_validator("duckdb_temp_directory")
    @classmethod
    def _a_folder(cls, value: Path | None) -> Path | None:
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError(
                "must be sqlite:///path/to/file.db or postgresql+psycopg://user@host/db"
            )
        try:
            make_url(value)
        except (ArgumentError, ValueError):
            # never the value in the message: it may hold a password
            raise ValueError(
                "is not a URL SQLAlchemy can read (check the port, and the brackets "
                "around an IPv6 address)"
            ) from None
        if value.startswith("sqlite:") and _sqlite_path(value) in ("", ":memory:"):
            raise ValueError(
                "names no file: an in-memory SQLite database loses every job when the "
                "process ends; give one, as in sqlite:///./data/framejobs.db"
            )
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _positive_delays(cls, value: list[float]) -> list[float]:
        if any(not 0 < delay <= WEEK for delay in value):
            raise ValueError("each retry delay must be more than 0 and at most a week")
        return value

    @field_validator("webhook_allow_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        # ipaddress says why ("has host bits set"); pydantic's own message does not.
        if not isinstance(value, str):
            return value
        return [ipaddress.ip_network(v.strip()) for v in value.split(",") if v.strip()]

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper_sync(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("pipelines", "webhook_secrets", "webhook_retry_schedule", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_look_right(cls, value: list[str]) -> list[str]:
        for secret in value:
            body = secret.removeprefix("whsec_")
            if not secret.startswith("whsec_") or len(body) < 24:
                raise ValueError("each webhook secret must be whsec_ followed by base64")
            try:
                key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
            except ValueError as exc:
                raise ValueError("a webhook secret is not valid base64") from exc
            if len(key) < 16:
                raise ValueError("a webhook secret must hold at least 16 bytes")
        return value

    @field_validator("heartbeat_s")
    @classmethod
    def _heartbeat_shorter_than_lease(cls, value: float, info: object) -> float:
        lease = getattr(info, "data", {}).get("lease_s")
        if lease is not None and value >= lease:
            raise ValueError("heartbeat_s must be shorter than lease_s")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database's file; None for PostgreSQL, memory and URI names."""
        if not self.is_sqlite:
            return None
        name = make_url(self.database_url).database
        if not name or name == ":memory:" or name.startswith("file:"):
            return None
        return Path(name)

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"


def _sqlite_path(url: str) -> str:
    try:
        return make_url(url).database or ""
    except ArgumentError:
        return ""


def _approx_bytes(size: re.Match[str]) -> float:
    """A size _MEMORY matched, in bytes (a share of this machine's memory too)."""
    number, unit = float(size.group(1)), size.group(2).lower()
    if unit == "%":
        return number / 100 * _physical_memory()
    return number * {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}.get(unit[0], 1.0)


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):  # not known here: any share counts as enough
        return float("inf")
