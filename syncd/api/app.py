"""The HTTP face of the daemon: health, metrics, webhooks and the REST API (FastAPI).

Webhooks only verify and enqueue hints (events are hints, invariant 7), so they answer fast; the
API needs a bearer token from ``http.api_tokens``.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, StringConstraints

from syncd import __version__
from syncd.connectors.base import WebhookRejected
from syncd.engine.runner import Engine
from syncd.metrics import REGISTRY
from syncd.store import service
from syncd.store.db import transaction


@dataclass
class ApiSettings:
    api_tokens: list[str]
    max_body_bytes: int = 1024 * 1024
    readiness: Callable[[], dict[str, Any]] = field(default=lambda: {"ready": True})


class DeliveryDeduper:
    """Remembers recent webhook delivery ids (Jira retries a delivery with the same identifier)."""

    def __init__(self, size: int = 10_000):
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str) -> bool:
        with self._lock:
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


NonBlank = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]
"""Text that must say something: empty or whitespace-only is refused with 422 naming the field."""


class CreateIncident(BaseModel):
    title: NonBlank
    description: str = ""
    priority: Literal["P1", "P2", "P3", "P4", "P5"] | None = None
    urgency: Literal["high", "low"] | None = None
    service: str | None = None
    group: str | None = None
    assignee: str | None = None


class Resolve(BaseModel):
    resolution: str | None = None


class Note(BaseModel):
    body: NonBlank
    visibility: Literal["internal", "public"] = "internal"


def create_app(engine: Engine, settings: ApiSettings) -> FastAPI:
    app = FastAPI(title="syncd", version=__version__,
                  description="Incident store, sync and response API of the syncd daemon.")
    deduper = DeliveryDeduper()
    tokens = [token.encode() for token in settings.api_tokens if token]

    # HTTPBearer parses the header and declares the scheme in the OpenAPI document; the token
    # check stays ours, so every refusal is a 401 with WWW-Authenticate.
    bearer_scheme = HTTPBearer(auto_error=False, description="a token from http.api_tokens")

    def bearer(credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> str:
        if credentials is None:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        offered = credentials.credentials.encode()
        # Compare against every token, always, so timing says nothing about which one nearly matched.
        matches = [hmac.compare_digest(offered, known) for known in tokens]
        if not any(matches):
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
        return "api"

    def actions_actor(request: Request) -> str:
        return request.headers.get("x-syncd-actor", "api")

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> JSONResponse:
        report = settings.readiness()
        return JSONResponse(report, status_code=200 if report.get("ready") else 503)

    @app.get("/metrics", tags=["operations"])
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.post("/webhooks/{connector}", status_code=202, tags=["webhooks"])
    async def webhook(connector: str, request: Request) -> dict[str, Any]:
        runtime = engine.runtimes.get(connector)
        if runtime is None:
            raise HTTPException(404, f"no connector named {connector!r}")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise HTTPException(413, f"body larger than {settings.max_body_bytes} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise HTTPException(413, f"body larger than {settings.max_body_bytes} bytes")
        try:
            remote_ids = runtime.connector.parse_webhook(dict(request.headers), body)
        except WebhookRejected as rejected:
            raise HTTPException(rejected.status, rejected.reason) from None
        delivery = request.headers.get("x-atlassian-webhook-identifier")
        if delivery and not deduper.first_time(f"{connector}:{delivery}"):
            return {"accepted": 0, "duplicate": True}
        for remote_id in remote_ids:
            engine.hint(connector, remote_id)
        return {"accepted": len(remote_ids)}

    api = Depends(bearer)

    @app.get("/api/v1/incidents", dependencies=[api], tags=["incidents"])
    def list_incidents(status: Literal["triggered", "acknowledged", "resolved"] | None = None,
                       limit: int = 100, offset: int = 0) -> dict[str, Any]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise HTTPException(400, "limit must be 1..1000 and offset >= 0")
        with transaction(engine.sessions, readonly=True) as session:
            rows = service.list_incidents(session=session, status=status, limit=limit, offset=offset)
            return {"incidents": [_incident_summary(row) for row in rows]}

    @app.post("/api/v1/incidents", status_code=201, dependencies=[api], tags=["incidents"])
    def create_incident(body: CreateIncident, request: Request) -> dict[str, Any]:
        fields = {k: v for k, v in body.model_dump().items() if v is not None}
        incident = _guard(lambda: engine.incidents.create(fields, actor=actions_actor(request),
                                                          source="api"))
        engine.wake()
        return _incident_detail(engine, incident.id)

    @app.get("/api/v1/incidents/{incident_id}", dependencies=[api], tags=["incidents"])
    def get_incident(incident_id: int) -> dict[str, Any]:
        return _incident_detail(engine, incident_id)

    @app.post("/api/v1/incidents/{incident_id}/acknowledge", dependencies=[api], tags=["incidents"])
    def acknowledge(incident_id: int, request: Request) -> dict[str, Any]:
        _guard(lambda: engine.incidents.acknowledge(incident_id, actor=actions_actor(request),
                                                    source="api"))
        engine.wake()
        return _incident_detail(engine, incident_id)

    @app.post("/api/v1/incidents/{incident_id}/resolve", dependencies=[api], tags=["incidents"])
    def resolve(incident_id: int, request: Request, body: Resolve | None = None) -> dict[str, Any]:
        _guard(lambda: engine.incidents.resolve(incident_id, actor=actions_actor(request),
                                                source="api",
                                                resolution=body.resolution if body else None))
        engine.wake()
        return _incident_detail(engine, incident_id)

    @app.post("/api/v1/incidents/{incident_id}/notes", status_code=201, dependencies=[api],
              tags=["incidents"])
    def add_note(incident_id: int, body: Note, request: Request) -> dict[str, Any]:
        comment = _guard(lambda: engine.incidents.add_note(
            incident_id, body.body, author=actions_actor(request), source="api",
            visibility=body.visibility))
        engine.wake()
        return {"id": comment.id, "body": comment.body, "visibility": comment.visibility}

    @app.get("/api/v1/dead-letters", dependencies=[api], tags=["operations"])
    def dead_letters(connector: str | None = None) -> dict[str, Any]:
        with transaction(engine.sessions, readonly=True) as session:
            return {"dead_letters": [dead_letter_json(item) for item in
                                     service.dead_letters(session=session, connector=connector)]}

    @app.post("/api/v1/dead-letters/{item_id}/retry", dependencies=[api], tags=["operations"])
    def retry_dead_letter(item_id: int) -> dict[str, Any]:
        with transaction(engine.sessions) as session:
            item = _guard(lambda: service.retry_dead_letter(session=session, item_id=item_id,
                                                            now=engine.clock.now()))
            result = dead_letter_json(item)
        engine.wake()
        return result

    return app


def _guard(action: Callable[[], Any]) -> Any:
    """Store refusals become 404/409/400 with the store's own words."""
    try:
        return action()
    except service.NotFound as error:
        raise HTTPException(404, str(error)) from None
    except (service.VersionConflict, service.InvalidTransition) as error:
        raise HTTPException(409, str(error)) from None
    except service.StoreError as error:
        raise HTTPException(400, str(error)) from None


def _incident_summary(incident) -> dict[str, Any]:
    return {"id": incident.id, "number": incident.number, "title": incident.title,
            "status": incident.status, "priority": incident.priority,
            "updated_at": incident.updated_at.isoformat(), "version": incident.version}


def _incident_detail(engine: Engine, incident_id: int) -> dict[str, Any]:
    with transaction(engine.sessions, readonly=True) as session:
        incident = _guard(lambda: service.get_incident(session=session, incident_id=incident_id))
        return {
            **_incident_summary(incident),
            "fields": service.incident_fields(incident),
            "created_at": incident.created_at.isoformat(),
            "acknowledged_at": incident.acknowledged_at and incident.acknowledged_at.isoformat(),
            "resolved_at": incident.resolved_at and incident.resolved_at.isoformat(),
            "links": [{"connector": link.connector, "remote_key": link.remote_key,
                       "remote_id": link.remote_id, "url": link.remote_url}
                      for link in incident.links],
            "comments": [{"id": c.id, "body": c.body, "author": c.author,
                          "visibility": c.visibility, "origin": c.origin,
                          "created_at": c.created_at.isoformat()}
                         for c in service.comments(session=session, incident_id=incident_id)],
            "timeline": [{"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor,
                          "source": e.source, "data": json.loads(json.dumps(e.data, default=str))}
                         for e in service.timeline(session=session, incident_id=incident_id)],
        }


def dead_letter_json(item) -> dict[str, Any]:
    return {"id": item.id, "incident_id": item.incident_id, "connector": item.connector,
            "operation": item.operation, "fields": item.fields, "state": item.state,
            "attempts": item.attempts, "last_error": item.last_error,
            "updated_at": item.updated_at.isoformat()}
