"""Retry policy as a pure object: (attempt, error) -> seconds to wait, or None."""

from __future__ import annotations

import random
from dataclasses import dataclass

from service.errors import JobError


@dataclass(frozen=True)
class RetryStrategy:
    """Capped exponential backoff with +-``jitter`` spread, for retryable errors only."""

    base_s: float = 1.0
    max_s: float = 300.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(
        self,
        *,
        attempt: int,
        max_attempts: int,
        error: BaseException,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds until the next attempt, or None when the job must not be retried."""
        if not (isinstance(error, JobError) and error.retryable):
            return None
        if attempt >= max_attempts:
            return None
        raw = min(self.max_s, self.base_s * self.factor ** max(attempt - 1, 0))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, raw * (1.0 + spread))


@dataclass(frozen=True)
class WebhookRetry:
    """When to try a webhook delivery again: the schedule's n-th delay (+-jitter), or the
    receiver's ``Retry-After`` when it gives one (kept within 1 s and ``max_retry_after_s``).
    ``410 Gone`` and a spent schedule mean: stop."""

    schedule: tuple[float, ...]
    jitter: float = 0.2
    max_retry_after_s: float = 86400.0

    def delay(
        self,
        *,
        failures: int,
        status_code: int | None,
        retry_after: float | None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds until the next attempt after ``failures`` failed ones, or None."""
        if status_code == 410 or failures > len(self.schedule):
            return None
        if retry_after is not None:
            return min(max(retry_after, 1.0), self.max_retry_after_s)
        base = self.schedule[failures - 1]
        return max(0.0, base * (1.0 + (rng or random).uniform(-self.jitter, self.jitter)))
