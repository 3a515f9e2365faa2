"""The framejobs app plus two bare routes, served by the same uvicorn process.

``POST /bare`` only parses the JSON body; ``GET /bare`` answers a small JSON object.
They are the baselines of the submit and poll benchmarks: same process, same
framework, same event loop, none of the service's work. ``POST /floor`` and
``POST /floor-group`` (bench/floor_app.py) are the floor of a durable submit. Settings come from the
``FRAMEJOBS_*`` environment, as for ``framejobs serve``. Run it with::

    uvicorn bench.bare_app:create --factory
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from starlette.responses import Response

from bench.floor_app import add_floor_routes
from service.api.app import create_app
from service.config import Settings
from service.logs import configure_logging

_SMALL = json.dumps({"id": "bare", "status": "completed", "progress": {"percent": 100.0}})


def create() -> FastAPI:
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings, migrate=settings.is_sqlite)

    @app.post("/bare", include_in_schema=False)
    async def bare_post(request: Request) -> Response:
        body = json.loads(await request.body())
        return Response(json.dumps({"keys": len(body)}), media_type="application/json")

    add_floor_routes(app, settings.data_dir)

    @app.get("/bare", include_in_schema=False)
    async def bare_get() -> Response:
        return Response(_SMALL, media_type="application/json")

    return app
