"""The innermost safety net (service/api/problems.py): an unexpected error is answered
with one 500 problem and not raised on to the server (which would log it again and
drop the keep-alive connection); a client that went away is not an error."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import anyio
import pytest
from openapi_spec_validator import validate
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from service.api.app import create_app
from service.api.problems import SafetyNet
from service.config import Settings
from service.negotiation import MEDIA_TYPES

SCOPE: Scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""}


def call(app: Any) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(SafetyNet(app), SCOPE, receive, send)
    return sent


def test_an_unexpected_error_is_answered_once_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("kaboom")

    with caplog.at_level(logging.ERROR):
        sent = call(failing)
    start, body = sent[0], sent[1]
    assert start["status"] == 500
    assert (b"content-type", b"application/problem+json") in start["headers"]
    problem = json.loads(body["body"])
    assert problem["status"] == 500 and "kaboom" not in json.dumps(problem)
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] and len(caplog.records) == 1


def test_a_client_that_went_away_is_logged_as_info(caplog: pytest.LogCaptureFixture) -> None:
    async def reading(scope: Scope, receive: Receive, send: Send) -> None:
        raise ClientDisconnect()

    with caplog.at_level(logging.INFO):
        assert call(reading) == []
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_an_error_after_the_answer_began_goes_to_the_server() -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-body")

    with pytest.raises(RuntimeError, match="mid-body"):
        call(half)


def _openapi() -> dict[str, Any]:
    settings = Settings(database_url="sqlite:///unused.db")
    return create_app(settings).openapi()


def test_the_openapi_document_is_valid_and_every_ref_resolves() -> None:
    """SDK generators refuse a document with a dangling $ref (the submit body's was)."""
    document = _openapi()
    validate(document)
    schemas = document["components"]["schemas"]
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document))
    assert refs and not set(refs) - set(schemas)
    assert "pipeline" in schemas["JobSpec"]["properties"]


def test_the_openapi_document_describes_errors_as_problems() -> None:
    paths = _openapi()["paths"]
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"] == problem, (method, path, status)
    submit = paths["/jobs"]["post"]["responses"]
    assert {"202", "404", "413", "415", "422", "503"} <= set(submit)
    assert set(submit["202"]["headers"]) == {"Location", "Retry-After"}
    result = paths["/jobs/{job_id}/result"]["get"]
    assert set(result["responses"]["200"]["content"]) == set(MEDIA_TYPES.values())
    assert {"404", "406", "409"} <= set(result["responses"])
    assert "accept" not in {p["name"].lower() for p in result["parameters"]}
    assert "304" in paths["/jobs/{job_id}"]["get"]["responses"]
