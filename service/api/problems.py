"""RFC 9457 problem+json for every error, mapped once here."""

from __future__ import annotations

import errno
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.methods import allowed_methods
from service.errors import FramejobsError

PROBLEM = "application/problem+json"
TYPE_BASE = "https://framejobs.dev/problems/"
log = logging.getLogger("framejobs.api")


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


def _framejobs_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, FramejobsError)
    headers = {"Retry-After": "5"} if exc.status == 503 else None
    return problem(
        exc.status, exc.title, exc.detail, slug=exc.slug, errors=exc.errors, headers=headers
    )


def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "", "reason": "invalid request"}
    return problem(
        422,
        "Invalid input",
        f"{first['field']}: {first['reason']}",
        slug="invalid-input",
        errors=errors,
    )


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return problem(
        exc.status_code,
        str(exc.detail),
        str(exc.detail),
        slug=f"http-{exc.status_code}",
        headers=headers,
    )


# A full disk (spooling an upload or a result) is the server's state, not a bug: 503.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def _os_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        log.error("no space left on a disk of this server: %s", exc)
        detail = "no space is left on this server's disk; try again later"
        return problem(
            503, "Service unavailable", detail, slug="unavailable", headers={"Retry-After": "30"}
        )
    return _unexpected(request, exc)


def _unexpected(_: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return problem(500, "Internal error", "the server failed; it has been logged", slug="internal")


class SafetyNet:
    """Innermost catch-all: an unexpected error becomes one logged 500 problem and the
    connection stays usable (Starlette's own last handler answers too, but re-raises to
    the server, which logs the error a second time and drops the connection). A client
    that went away while its body was read is not an error of ours."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            log.info("client went away during %s %s", scope["method"], scope["path"])
        except Exception as exc:
            if started:
                raise  # too late for a problem: the server logs it and ends the body
            await _unexpected(Request(scope), exc)(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_middleware(SafetyNet)
    app.add_exception_handler(FramejobsError, _framejobs_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unexpected)
