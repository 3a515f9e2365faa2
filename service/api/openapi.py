"""The OpenAPI document, as the server really answers: FastAPI's, completed.

FastAPI describes what it can see in the routes. It cannot see the JSON submit body
(read by hand, to stream multipart uploads), that every error is problem+json
(handlers in problems.py), nor the result's other formats; SDK generators build
clients from this document, so those are filled in here, once per app.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.negotiation import MEDIA_TYPES
from service.schemas import JobSpec

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "For 422: each refused field (or frame column) and why.",
            "items": {
                "type": "object",
                "required": ["reason"],
                "properties": {
                    "field": {"type": "string", "description": "a request field"},
                    "column": {"type": "string", "description": "a frame column"},
                    "reason": {"type": "string"},
                    "rows": {"type": "array", "items": {"type": "integer"}},
                },
            },
        },
    },
}
_WHY = {
    204: "The job has finished and the client has its last event: stop reconnecting",
    304: "Not modified: the ETag matches If-None-Match",
    404: "No such job (or pipeline, for a submit)",
    406: "None of the accepted media types can be produced",
    409: "The job is not in a state that allows this",
    413: "The body is larger than the limit",
    415: "The body's content type is not JSON or multipart",
    422: "The request is invalid: the problem names each field and why",
    503: "The database cannot be reached, or a disk of the server is full; retry later",
}
# (method, path) -> error statuses beyond 422 and 503, as docs/api.md lists them.
_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/jobs"): (404, 413, 415),
    ("get", "/jobs/{job_id}"): (304, 404),
    ("delete", "/jobs/{job_id}"): (404, 409),
    ("get", "/jobs/{job_id}/events"): (204, 404),
    ("get", "/jobs/{job_id}/result"): (304, 404, 406, 409),
    ("post", "/jobs/{job_id}/cancel"): (404, 409),
    ("get", "/jobs/{job_id}/webhook-deliveries"): (404,),
    ("post", "/jobs/{job_id}/webhook-deliveries/{delivery_id}/redeliver"): (404, 409),
}
_NO_DATABASE = {"/healthz", "/metrics"}
_HEADERS = {
    ("post", "/jobs", "202"): ("Location", "Retry-After"),
    ("get", "/jobs/{job_id}", "200"): ("ETag", "Retry-After"),
    ("get", "/jobs/{job_id}", "304"): ("ETag",),
    ("get", "/jobs/{job_id}/result", "200"): ("ETag",),
    ("get", "/jobs/{job_id}/result", "304"): ("ETag",),
}
_ALWAYS = {"503": ("Retry-After",)}


def install(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built on first request)."""
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cached:
            cached.update(document(app))
        return cached

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    _add_model(schemas, "JobSpec", JobSpec.model_json_schema(ref_template=_REF))
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            _complete(method, path, operation)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return spec


_REF = "#/components/schemas/{model}"


def _add_model(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    for child, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(child, definition)
    schemas[name] = schema


def _complete(method: str, path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status in sorted(_statuses(method, path, operation)):
        responses[str(status)] = {"description": _WHY[status]}
    for status, response in responses.items():
        if status.startswith(("4", "5")):
            response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
        for header in (*_HEADERS.get((method, path, status), ()), *_ALWAYS.get(status, ())):
            response.setdefault("headers", {})[header] = {"schema": {"type": "string"}}
    # OpenAPI ignores a header parameter named Accept; the result's content says it.
    params = [p for p in operation.get("parameters", []) if p["name"].lower() != "accept"]
    if params:
        operation["parameters"] = params
    _describe_content(path, responses.get("200", {}))


def _statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    statuses = set(_ERRORS.get((method, path), ()))
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(422)
    if path not in _NO_DATABASE:
        statuses.add(503)
    return statuses


def _describe_content(path: str, ok: dict[str, Any]) -> None:
    for media in ok.get("content", {}).values():
        # FastAPI describes an event stream with OpenAPI 3.2's itemSchema; the document
        # says 3.1, where validators refuse the key.
        if media.pop("itemSchema", None) is not None:
            media["schema"] = {"type": "string", "description": "server-sent events"}
    if path == "/jobs/{job_id}/result":
        ok["content"] = {media: {} for media in MEDIA_TYPES.values()}
