"""Small httpx helpers for setting a benchmark up and reading its outcome."""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL = {"completed", "failed", "cancelled"}


def submit(client: httpx.Client, body: bytes) -> dict[str, Any]:
    response = client.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    if response.status_code != 202:
        raise RuntimeError(f"submit answered {response.status_code}: {response.text[:500]}")
    return response.json()  # type: ignore[no-any-return]


def wait_terminal(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
        time.sleep(0.05)


def list_all(client: httpx.Client, status: str | None = None) -> list[dict[str, Any]]:
    """Every job (with ``status``), following the page tokens."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"page_size": 500}
    if status:
        params["status"] = status
    while True:
        page = client.get("/jobs", params=params).raise_for_status().json()
        items.extend(page["items"])
        token = page.get("next_page_token")
        if not token:
            return items
        params["page_token"] = token


def any_with(client: httpx.Client, status: str) -> bool:
    page = client.get("/jobs", params={"status": status, "page_size": 1}).raise_for_status()
    return bool(page.json()["items"])
