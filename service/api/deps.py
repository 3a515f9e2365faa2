"""Request dependencies: the services the entry point built, and common parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.submit import Services


async def get_services(request: Request) -> Services:
    """Async on purpose: a plain def would cost every request a trip to the threadpool."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
