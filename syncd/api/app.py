"""The HTTP face of the daemon: one router per domain, assembled here (FastAPI).

Health and metrics need no credentials; webhooks verify their connector's secret; everything under
``/api/v1`` needs a bearer token from ``http.api_tokens``, whose name is the actor of the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from fastapi import APIRouter, FastAPI

from syncd import __version__
from syncd.api.auth import ApiToken, bearer_actor
from syncd.api.dead_letters import dead_letter_router
from syncd.api.health import health_router
from syncd.api.incidents import incident_router
from syncd.api.webhooks import webhook_router
from syncd.engine.sync_engine import SyncEngine


@dataclass
class ApiSettings:
    api_tokens: list[ApiToken]
    max_body_bytes: int = 1024 * 1024
    readiness: Callable[[], dict[str, Any]] = field(default=lambda: {"ready": True})


def create_app(engine: SyncEngine, settings: ApiSettings,
               routers: Sequence[APIRouter] = ()) -> FastAPI:
    """``routers``: the domains' routers the daemon assembles with their own dependencies."""
    app = FastAPI(title="syncd", version=__version__,
                  description="Incident store, sync and response API of the syncd daemon.")
    actor = bearer_actor(settings.api_tokens)
    app.include_router(health_router(settings.readiness))
    app.include_router(webhook_router(engine, settings.max_body_bytes))
    app.include_router(incident_router(engine, actor))
    app.include_router(dead_letter_router(engine, actor))
    for router in routers:
        app.include_router(router)
    return app
