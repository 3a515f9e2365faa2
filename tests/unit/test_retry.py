"""Retry policies as pure functions: job retries (RetryStrategy) and webhook retries
(WebhookRetry). Jitter is checked with a seeded random.Random."""

from __future__ import annotations

import random

import pytest

from service.config import DEFAULT_RETRY_SCHEDULE, Settings
from service.errors import (
    Interrupted,
    JobCancelled,
    JobTimeout,
    PipelineError,
    TransientError,
)
from service.retry import RetryStrategy, WebhookRetry

# -- RetryStrategy (jobs) -----------------------------------------------------------------

NO_JITTER = RetryStrategy(base_s=1.0, max_s=300.0, factor=2.0, jitter=0.0)


def job_delay(strategy: RetryStrategy, attempt: int, error: BaseException, **kw: object) -> object:
    return strategy.delay(attempt=attempt, max_attempts=10, error=error, **kw)  # type: ignore[arg-type]


def test_exponential_backoff_capped() -> None:
    delays = [job_delay(NO_JITTER, n, TransientError("x")) for n in range(1, 10)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    capped = RetryStrategy(base_s=1.0, max_s=10.0, jitter=0.0)
    assert [job_delay(capped, n, TransientError("x")) for n in (3, 4, 5, 9)] == [4, 8, 10, 10]


def test_attempt_zero_waits_the_base() -> None:
    assert job_delay(NO_JITTER, 0, TransientError("x")) == 1.0


def test_other_factors_and_bases() -> None:
    strategy = RetryStrategy(base_s=0.5, max_s=100.0, factor=3.0, jitter=0.0)
    assert [job_delay(strategy, n, TransientError("x")) for n in (1, 2, 3)] == [0.5, 1.5, 4.5]


@pytest.mark.parametrize(
    "error",
    [
        PipelineError("bad input"),
        JobCancelled("cancelled"),
        JobTimeout("too slow"),
        ValueError("a bug"),
        RuntimeError("a bug"),
    ],
)
def test_non_retryable_errors_stop(error: BaseException) -> None:
    assert job_delay(NO_JITTER, 1, error) is None


@pytest.mark.parametrize("error", [TransientError("flaky"), Interrupted("shutdown")])
def test_retryable_errors_retry(error: BaseException) -> None:
    assert job_delay(NO_JITTER, 1, error) == 1.0


def test_last_attempt_stops() -> None:
    def delay(attempt: int) -> float | None:
        return NO_JITTER.delay(attempt=attempt, max_attempts=3, error=TransientError("x"))

    assert delay(2) == 2.0
    assert delay(3) is None
    assert delay(4) is None


def test_job_jitter_stays_within_bounds() -> None:
    strategy = RetryStrategy(base_s=10.0, max_s=1000.0, jitter=0.2)
    rng = random.Random(1234)
    delays = [
        strategy.delay(attempt=1, max_attempts=5, error=TransientError("x"), rng=rng)
        for _ in range(2000)
    ]
    assert all(d is not None and 8.0 <= d <= 12.0 for d in delays)
    values = [d for d in delays if d is not None]
    assert min(values) < 8.2 and max(values) > 11.8  # the spread is used, both ways
    assert len(set(values)) > 1900


def test_job_jitter_is_reproducible_with_a_seed() -> None:
    strategy = RetryStrategy(jitter=0.2)

    def run(seed: int) -> list[float | None]:
        rng = random.Random(seed)
        return [
            strategy.delay(attempt=n, max_attempts=9, error=TransientError("x"), rng=rng)
            for n in range(1, 6)
        ]

    assert run(7) == run(7) != run(8)


def test_job_jitter_never_negative() -> None:
    strategy = RetryStrategy(base_s=0.0, jitter=0.9)
    rng = random.Random(0)
    assert all(
        strategy.delay(attempt=1, max_attempts=2, error=TransientError("x"), rng=rng) == 0.0
        for _ in range(100)
    )


# -- WebhookRetry -------------------------------------------------------------------------

SCHEDULE = (5.0, 300.0, 1800.0, 7200.0)
EXACT = WebhookRetry(schedule=SCHEDULE, jitter=0.0)


def hook_delay(
    policy: WebhookRetry,
    failures: int,
    status_code: int | None = 500,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    return policy.delay(
        failures=failures, status_code=status_code, retry_after=retry_after, rng=rng
    )


def test_default_schedule_is_standard_webhooks() -> None:
    assert DEFAULT_RETRY_SCHEDULE == (
        5.0,
        5 * 60.0,
        30 * 60.0,
        2 * 3600.0,
        5 * 3600.0,
        10 * 3600.0,
        14 * 3600.0,
        20 * 3600.0,
        24 * 3600.0,
    )
    assert Settings().webhook_retry_schedule == list(DEFAULT_RETRY_SCHEDULE)


def test_schedule_in_order() -> None:
    assert [hook_delay(EXACT, n) for n in range(1, 5)] == list(SCHEDULE)


def test_full_default_schedule_then_stop() -> None:
    policy = WebhookRetry(schedule=DEFAULT_RETRY_SCHEDULE, jitter=0.0)
    delays = [hook_delay(policy, n) for n in range(1, 11)]
    assert delays == [*DEFAULT_RETRY_SCHEDULE, None]  # 1 attempt + 9 retries, then failed


def test_exhausted_schedule_stops() -> None:
    assert hook_delay(EXACT, len(SCHEDULE)) == SCHEDULE[-1]
    assert hook_delay(EXACT, len(SCHEDULE) + 1) is None
    assert hook_delay(EXACT, len(SCHEDULE) + 50) is None
    one = WebhookRetry(schedule=(0.05,), jitter=0.0)
    assert [hook_delay(one, 1), hook_delay(one, 2)] == [0.05, None]


def test_exhausted_schedule_stops_even_with_retry_after() -> None:
    assert hook_delay(EXACT, len(SCHEDULE) + 1, 503, retry_after=10) is None


@pytest.mark.parametrize("status", [None, 301, 302, 400, 401, 404, 408, 429, 500, 502, 503])
def test_everything_but_410_retries(status: int | None) -> None:
    assert hook_delay(EXACT, 1, status) == 5.0


def test_410_gone_stops_at_once() -> None:
    assert hook_delay(EXACT, 1, 410) is None
    assert hook_delay(EXACT, 2, 410, retry_after=5.0) is None


def test_webhook_jitter_stays_within_20_percent() -> None:
    policy = WebhookRetry(schedule=SCHEDULE, jitter=0.2)
    rng = random.Random(42)
    for n, base in enumerate(SCHEDULE, start=1):
        values = [hook_delay(policy, n, rng=rng) for _ in range(1000)]
        floats = [v for v in values if v is not None]
        assert len(floats) == 1000
        assert all(base * 0.8 <= v <= base * 1.2 for v in floats), n
        assert min(floats) < base * 0.82 and max(floats) > base * 1.18
        mean = sum(floats) / len(floats)
        assert abs(mean - base) < base * 0.02


def test_webhook_jitter_is_reproducible_with_a_seed() -> None:
    policy = WebhookRetry(schedule=SCHEDULE, jitter=0.2)

    def run(seed: int) -> list[float | None]:
        rng = random.Random(seed)
        return [hook_delay(policy, n, rng=rng) for n in range(1, 5)]

    assert run(3) == run(3) != run(4)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (0.0, 1.0),  # "now" still waits a second
        (0.2, 1.0),
        (1.0, 1.0),
        (42.0, 42.0),  # honoured as given, instead of the schedule's 5 s
        (3600.0, 3600.0),
        (86400.0, 86400.0),
        (10 * 86400.0, 86400.0),  # clamped to max_retry_after_s
    ],
)
def test_retry_after_is_honoured_within_bounds(retry_after: float, expected: float) -> None:
    assert hook_delay(EXACT, 1, 503, retry_after=retry_after) == expected


def test_retry_after_gets_no_jitter_and_its_own_cap() -> None:
    policy = WebhookRetry(schedule=SCHEDULE, jitter=0.2, max_retry_after_s=60.0)
    rng = random.Random(5)
    assert {hook_delay(policy, 2, 429, retry_after=30.0, rng=rng) for _ in range(50)} == {30.0}
    assert hook_delay(policy, 2, 429, retry_after=600.0) == 60.0


def test_schedule_setting_parses_comma_separated_seconds() -> None:
    settings = Settings(webhook_retry_schedule="0.05, 0.1,2", webhook_retry_jitter=0)  # type: ignore[arg-type]
    assert settings.webhook_retry_schedule == [0.05, 0.1, 2.0]
    policy = WebhookRetry(schedule=tuple(settings.webhook_retry_schedule), jitter=0.0)
    assert [hook_delay(policy, n) for n in (1, 2, 3, 4)] == [0.05, 0.1, 2.0, None]


def test_schedule_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMEJOBS_WEBHOOK_RETRY_SCHEDULE", "1,2,3")
    monkeypatch.setenv("FRAMEJOBS_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8, ::1/128")
    settings = Settings()
    assert settings.webhook_retry_schedule == [1.0, 2.0, 3.0]
    assert [str(n) for n in settings.webhook_allow_networks] == ["127.0.0.0/8", "::1/128"]


@pytest.mark.parametrize("value", ["", "a,b"])
def test_bad_schedule_setting_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="webhook_retry_schedule"):
        Settings(webhook_retry_schedule=value)  # type: ignore[arg-type]
