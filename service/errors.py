"""The one exception tree of framejobs. Each error knows its HTTP status.

    FramejobsError
    ├── RequestError                 (4xx: the client can fix it)
    │   ├── NotFound                 404
    │   ├── Conflict                 409
    │   ├── PayloadTooLarge          413
    │   ├── UnsupportedMediaType     415
    │   └── InvalidInput             422  (carries ``errors[]``)
    │       ├── InvalidFrame         422  a frame that could not be read or does not fit
    │       └── IdempotencyMismatch  422
    ├── ServiceUnavailable           503
    └── JobError                     raised while a job runs; ends up in ``job.error``
        ├── PipelineError            the pipeline failed (not retried)
        │   └── TransientError       the pipeline asks for a retry
        ├── JobCancelled             the job was cancelled while running
        ├── JobTimeout               ``timeout_s`` ran out
        ├── Interrupted              shutdown interrupted it; it is retried
        └── LeaseExpired             its worker vanished and attempts are spent

Errors are mapped to problem+json once, in ``api/problems.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FramejobsError(Exception):
    """Root of every error the service raises on purpose."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    slug: ClassVar[str] = "internal"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class RequestError(FramejobsError):
    status = 400
    title = "Bad request"
    slug = "bad-request"


class NotFound(RequestError):
    status = 404
    title = "Not found"
    slug = "not-found"


class Conflict(RequestError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class PayloadTooLarge(RequestError):
    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


class UnsupportedMediaType(RequestError):
    status = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


class NotAcceptable(RequestError):
    status = 406
    title = "Not acceptable"
    slug = "not-acceptable"


class InvalidInput(RequestError):
    status = 422
    title = "Invalid input"
    slug = "invalid-input"


class InvalidFrame(InvalidInput):
    title = "Invalid frame"
    slug = "invalid-frame"


class IdempotencyMismatch(InvalidInput):
    title = "Idempotency key reused"
    slug = "idempotency-key-reused"


class ServiceUnavailable(FramejobsError):
    status = 503
    title = "Service unavailable"
    slug = "unavailable"


class StartupError(FramejobsError):
    """The process cannot start (settings, database, pipelines); said in one line."""

    title = "Cannot start"
    slug = "cannot-start"


def first_line(exc: BaseException) -> str:
    """An exception's first line: enough to say what failed, without a traceback."""
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


class JobError(FramejobsError):
    """Raised while a job runs; its class name becomes ``job.error.type``."""

    retryable: ClassVar[bool] = False


class PipelineError(JobError):
    title = "Pipeline failed"


class TransientError(PipelineError):
    """Raise from a pipeline to ask for a retry (with backoff)."""

    retryable = True


class JobCancelled(JobError):
    title = "Cancelled"


class JobTimeout(JobError):
    title = "Timed out"


class Interrupted(JobError):
    """Shutdown interrupted the job; it goes back to the queue without using an attempt."""

    retryable = True


class LeaseExpired(JobError):
    title = "Worker lost"
