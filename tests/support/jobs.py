"""Small client helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

from typing import Any, Protocol

from tests.support.waiting import wait_for

TERMINAL = {"completed", "failed", "cancelled"}


class Client(Protocol):
    def get(self, url: str, **kw: Any) -> Any: ...
    def post(self, url: str, **kw: Any) -> Any: ...


def submit(
    client: Client, pipeline: str, frame: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    body = {"pipeline": pipeline, "frame": frame or {"columns": {"a": [1, 2, 3]}}, **spec}
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def job(client: Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_status(
    client: Client, job_id: str, statuses: set[str] | str = TERMINAL, timeout: float = 30.0
) -> dict[str, Any]:
    wanted = {statuses} if isinstance(statuses, str) else statuses

    def check() -> dict[str, Any] | None:
        body = job(client, job_id)
        return body if body["status"] in wanted else None

    return wait_for(check, timeout=timeout, what=f"job {job_id} to be {sorted(wanted)}")
