"""HTTP methods the routes do not declare themselves.

``HEAD`` is answered as ``GET`` without the body (RFC 9110 asks every general-purpose
server for it; load balancers and ``curl -I`` use it). FastAPI routes declare only
``GET``, so without this a ``HEAD /healthz`` was a 405. Once the headers are out the
request's work is cancelled: a ``HEAD`` of an event stream or a large result must not
run to the end for a body nobody reads.

A 405 names in ``Allow`` every method of every route on that path; the framework
names only those of the first route it tried (``/jobs`` said ``POST`` only). The
routes are read from the OpenAPI document, the public description of them (FastAPI's
router nests included routers in private classes).
"""

from __future__ import annotations

import re
from typing import Any

import anyio
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        with anyio.CancelScope() as request_work:

            async def headers_only(message: Message) -> None:
                if message["type"] == "http.response.start":
                    await send(message)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    request_work.cancel()

            await self.app({**scope, "method": "GET"}, receive, headers_only)


def allowed_methods(request: Request) -> str:
    """Every method the routes on this request's path answer, ``HEAD`` with ``GET``."""
    state = request.app.state
    if getattr(state, "path_methods", None) is None:
        state.path_methods = _path_methods(request.app.openapi())
    path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
    methods: set[str] = set()
    for pattern, answered in state.path_methods:
        if pattern.fullmatch(path):
            methods |= answered
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def _path_methods(openapi: dict[str, Any]) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    table = []
    for template, item in openapi.get("paths", {}).items():
        pattern, _, _ = compile_path(template)
        table.append((pattern, frozenset(m.upper() for m in item if m in _METHODS)))
    return table
