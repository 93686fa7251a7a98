"""The incident API: list, create, detail, and the commands (acknowledge, resolve, note). The actor
of every command is the calling token's name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, StringConstraints

from syncd.alerts.service import alert_json, incident_alerts
from syncd.api.errors import refusals_as_http
from syncd.engine.sync_engine import SyncEngine
from syncd.incidents import service as incident_service
from syncd.incidents.fields import PRIORITIES, incident_fields
from syncd.incidents.timeline import entry_json
from syncd.store.db import transaction

NonBlank = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]
"""Text that must say something: empty or whitespace-only is refused with 422 naming the field."""
Priority = Literal[PRIORITIES]  # type: ignore[valid-type]
Status = Literal["triggered", "acknowledged", "resolved"]


class CreateIncident(BaseModel):
    title: NonBlank
    description: str = ""
    priority: Priority | None = None
    urgency: Literal["high", "low"] | None = None
    service: str | None = None
    group: str | None = None
    assignee: str | None = None


class Resolve(BaseModel):
    resolution: str | None = None


class Note(BaseModel):
    body: NonBlank
    visibility: Literal["internal", "public"] = "internal"


def incident_router(engine: SyncEngine, actor: Callable[..., str]) -> APIRouter:
    # Every route needs a token; the commands also take its name as their actor.
    router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"], dependencies=[Depends(actor)])

    @router.get("")
    def list_incidents(status: Status | None = None, limit: int = 100,
                       offset: int = 0) -> dict[str, Any]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise HTTPException(400, "limit must be 1..1000 and offset >= 0")
        with transaction(engine.sessions, readonly=True) as session:
            rows = incident_service.list_incidents(session=session, status=status, limit=limit,
                                                   offset=offset)
            return {"incidents": [incident_summary(row) for row in rows]}

    @router.post("", status_code=201)
    def create_incident(body: CreateIncident, who: str = Depends(actor)) -> dict[str, Any]:
        fields = {k: v for k, v in body.model_dump().items() if v is not None}
        incident = refusals_as_http(lambda: engine.commands.create(fields, actor=who, source="api"))
        engine.wake()
        return incident_detail(engine, incident.id)

    @router.get("/{incident_id}")
    def get_incident(incident_id: int) -> dict[str, Any]:
        return incident_detail(engine, incident_id)

    @router.post("/{incident_id}/acknowledge")
    def acknowledge(incident_id: int, who: str = Depends(actor)) -> dict[str, Any]:
        refusals_as_http(lambda: engine.commands.acknowledge(incident_id, actor=who, source="api"))
        engine.wake()
        return incident_detail(engine, incident_id)

    @router.post("/{incident_id}/resolve")
    def resolve(incident_id: int, body: Resolve | None = None,
                who: str = Depends(actor)) -> dict[str, Any]:
        refusals_as_http(lambda: engine.commands.resolve(
            incident_id, actor=who, source="api", resolution=body.resolution if body else None))
        engine.wake()
        return incident_detail(engine, incident_id)

    @router.post("/{incident_id}/notes", status_code=201)
    def add_note(incident_id: int, body: Note, who: str = Depends(actor)) -> dict[str, Any]:
        comment = refusals_as_http(lambda: engine.commands.add_note(
            incident_id, body.body, author=who, source="api", visibility=body.visibility))
        engine.wake()
        return {"id": comment.id, "body": comment.body, "visibility": comment.visibility}

    return router


def incident_summary(incident) -> dict[str, Any]:
    return {"id": incident.id, "number": incident.number, "title": incident.title,
            "status": incident.status, "priority": incident.priority,
            "updated_at": incident.updated_at.isoformat(), "version": incident.version}


def incident_detail(engine: SyncEngine, incident_id: int) -> dict[str, Any]:
    with transaction(engine.sessions, readonly=True) as session:
        incident = refusals_as_http(lambda: incident_service.get_incident(
            session=session, incident_id=incident_id))
        return {
            **incident_summary(incident),
            "fields": incident_fields(incident),
            "created_at": incident.created_at.isoformat(),
            "acknowledged_at": incident.acknowledged_at and incident.acknowledged_at.isoformat(),
            "resolved_at": incident.resolved_at and incident.resolved_at.isoformat(),
            "links": [{"connector": link.connector, "remote_key": link.remote_key,
                       "remote_id": link.remote_id, "url": link.remote_url}
                      for link in incident.links],
            "comments": [{"id": c.id, "body": c.body, "author": c.author,
                          "visibility": c.visibility, "origin": c.origin,
                          "created_at": c.created_at.isoformat()}
                         for c in incident_service.comments(session=session,
                                                            incident_id=incident_id)],
            "timeline": [entry_json(e) for e in incident_service.timeline(
                session=session, incident_id=incident_id)],
            **paging_detail(session, incident_id),
            "alerts": [alert_json(alert) for alert in incident_alerts(session=session,
                                                                      incident_id=incident_id)],
        }


def paging_detail(session, incident_id: int) -> dict[str, Any]:
    """The escalation now (where it stands, when the next step is due) and every page."""
    from sqlalchemy import select

    from syncd.notify.models import Notification
    from syncd.oncall.models import Escalation
    escalation = session.scalars(select(Escalation).where(
        Escalation.incident_id == incident_id, Escalation.origin == "service")).one_or_none()
    pages = session.scalars(select(Notification).where(Notification.incident_id == incident_id)
                            .order_by(Notification.id))
    return {
        "escalation": None if escalation is None else {
            "state": escalation.state, "service": escalation.service_id,
            "policy": escalation.policy_id, "urgency": escalation.urgency,
            "rule": escalation.rule_index + 1, "rules": len(escalation.policy.get("rules", [])),
            "loop": escalation.loop + 1, "next_step_at": escalation.next_step_at
            and escalation.next_step_at.isoformat(), "reason": escalation.reason},
        "notifications": [{"id": row.id, "user": row.user_id, "contact": row.contact,
                           "kind": row.kind, "state": row.state, "due_at": row.due_at.isoformat(),
                           "sent_at": row.sent_at and row.sent_at.isoformat(),
                           "detail": row.detail} for row in pages],
    }
