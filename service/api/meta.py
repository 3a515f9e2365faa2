"""Service-level routes: pipelines, health, readiness, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response

from service.api.deps import ServicesDep
from service.db import reading
from service.errors import ServiceUnavailable
from service.revisions import check_schema
from service.schemas import PipelineOut

router = APIRouter(tags=["service"])


@router.get(
    "/pipelines", response_model=list[PipelineOut], summary="The pipelines this service runs"
)
def list_pipelines(services: ServicesDep) -> list[dict[str, Any]]:
    return [
        {
            "name": p.name,
            "description": p.description,
            "input_schema": p.input_schema,
            "params_schema": p.params_schema,
            "max_attempts": p.max_attempts,
            "timeout_s": p.timeout_s,
            "validation": p.validation,
        }
        for p in services.registry
    ]


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Database reachable and schema at head")
def readyz(services: ServicesDep) -> dict[str, str]:
    try:
        with reading(services.engine) as conn:
            conn.execute(text("SELECT 1"))
        check_schema(services.engine)
    except ServiceUnavailable:
        raise
    except Exception as exc:
        raise ServiceUnavailable(f"the database is not reachable: {type(exc).__name__}") from exc
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
