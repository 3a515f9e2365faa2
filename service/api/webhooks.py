"""Routes for a job's webhook deliveries: the log, and redelivery."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service import control, deliveries
from service.api.deps import ServicesDep
from service.db import reading, writing
from service.store import utcnow

router = APIRouter(tags=["webhooks"])


@router.get("/jobs/{job_id}/webhook-deliveries", summary="The job's webhook deliveries")
def list_deliveries(job_id: str, services: ServicesDep) -> dict[str, Any]:
    with reading(services.engine) as conn:
        control.require_job(conn, job_id)
        return {"items": deliveries.for_job(conn, job_id)}


@router.post(
    "/jobs/{job_id}/webhook-deliveries/{delivery_id}/redeliver",
    status_code=202,
    summary="Send a delivery again (same webhook-id)",
)
def redeliver(job_id: str, delivery_id: str, services: ServicesDep) -> dict[str, Any]:
    with writing(services.engine) as conn:
        control.require_job(conn, job_id)
        deliveries.redeliver(conn, job_id, delivery_id, now=utcnow())
        body = next(d for d in deliveries.for_job(conn, job_id) if d["id"] == delivery_id)
    services.hub.deliveries_due()
    services.hub.job_changed(job_id)
    return body
