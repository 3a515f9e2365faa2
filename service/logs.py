"""Logging: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def worth_logging(failures: int, every: int = 100) -> bool:
    """For something that keeps failing (a database away for an hour): the first
    failure of a streak, then one in ``every``, not a line (or traceback) per try."""
    return failures == 1 or failures % every == 0


def log_streak(logger: logging.Logger, what: str, failures: int) -> None:
    """A loop's failure: the first of a streak with its traceback, then a count."""
    if failures == 1:
        logger.warning("%s failed; retrying", what, exc_info=True)
    elif worth_logging(failures):
        logger.warning("%s still failing (%d times in a row)", what, failures)
