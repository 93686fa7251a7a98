"""Custom Incident Actions over HTTP: what an incident offers, what ran, and running one. The
actor is the calling token's name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, StrictBool
from sqlalchemy.orm import Session, sessionmaker

from syncd.api.errors import refusals_as_http
from syncd.clock import Clock
from syncd.incidents import service as incident_service
from syncd.response import actions
from syncd.response_files import ResponseSet
from syncd.store.db import transaction


class RunAction(BaseModel):
    # Strictly true: "yes" or 1 must not confirm a call to another system.
    confirmed: StrictBool = False


def action_router(*, sessions: sessionmaker[Session], responses: Callable[[], ResponseSet],
                  clock: Clock, actor: Callable[..., str]) -> APIRouter:
    router = APIRouter(prefix="/api/v1/incidents", tags=["actions"], dependencies=[Depends(actor)])

    @router.get("/{incident_id}/actions")
    def list_actions(incident_id: int) -> dict[str, Any]:
        with transaction(sessions, readonly=True) as session:
            incident = refusals_as_http(lambda: incident_service.get_incident(
                session=session, incident_id=incident_id))
            offered = actions.available(responses(), incident.service)
            return {"actions": [{"id": a.id, "label": a.label, "description": a.description,
                                 "method": a.method, "confirm": a.confirm} for a in offered],
                    "runs": [actions.run_json(run) for run in actions.runs(
                        session=session, incident_id=incident_id)]}

    @router.post("/{incident_id}/actions/{action_id}")
    def run_action(incident_id: int, action_id: str, body: RunAction | None = None,
                   who: str = Depends(actor)) -> dict[str, Any]:
        try:
            run = refusals_as_http(lambda: actions.run_action(
                sessions=sessions, clock=clock, responses=responses(), action_id=action_id,
                incident_id=incident_id, actor=who, source="api",
                confirmed=bool(body and body.confirmed)))
        except actions.ActionRefused as refused:
            raise HTTPException(refused.status, str(refused)) from None
        return actions.run_json(run)

    return router
