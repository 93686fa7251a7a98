"""The Events API v2 at the root (``POST /v2/enqueue``, ``POST /v2/change/enqueue``), answering
as PagerDuty does so existing clients only change their URL, and ``GET /api/v1/alerts``.

The events endpoints take no bearer token: the routing key is the credential, as in PagerDuty.
Every answer is counted in ``syncd_events_total{outcome}``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from syncd.alerts import events
from syncd.alerts import service as alert_service
from syncd.alerts.intake import AlertIntake
from syncd.api.webhooks import read_body
from syncd.metrics import EVENTS
from syncd.store.db import transaction

INVALID = "Event object is invalid"


def _refused(status: int, outcome: str, body: dict[str, Any],
             headers: dict[str, str] | None = None) -> JSONResponse:
    EVENTS.labels(outcome).inc()
    return JSONResponse(body, status_code=status, headers=headers)


def _invalid(errors: list[str], outcome: str = "invalid") -> JSONResponse:
    return _refused(400, outcome, {"status": "invalid event", "message": INVALID,
                                   "errors": errors})


def events_router(intake: AlertIntake) -> APIRouter:
    router = APIRouter(tags=["events"])

    async def _event_body(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            return events.parse_body(await read_body(request, events.MAX_BODY_BYTES))
        except HTTPException:
            return _refused(413, "too_large", {
                "status": "invalid event",
                "message": f"Request body is larger than {events.MAX_BODY_BYTES // 1024} KB"})
        except events.InvalidEvent as invalid:
            return _invalid(invalid.errors)

    def _admit(routing_key: str):
        service = intake.service_for(routing_key)
        if service is None:
            return None, _invalid(["routing_key is not the key of any service: check the "
                                   "integration's key"], outcome="unknown_routing_key")
        if not intake.rate_limit.allow(routing_key, service.events_per_minute):
            return None, _refused(
                429, "rate_limited",
                {"status": "throttle event",
                 "message": "Requests for this service are arriving too quickly. "
                            "Please retry later."},
                headers={"Retry-After": str(intake.rate_limit.retry_after(
                    service.events_per_minute))})
        return service, None

    @router.post("/v2/enqueue", status_code=202)
    async def enqueue(request: Request) -> Any:
        body = await _event_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            event = events.alert_event(body)
        except events.InvalidEvent as invalid:
            return _invalid(invalid.errors)
        service, refusal = _admit(event.routing_key)
        if refusal is not None:
            return refusal
        applied = await run_in_threadpool(intake.enqueue, event, service)
        EVENTS.labels("dropped" if applied.outcome == "dropped" else "accepted").inc()
        return JSONResponse({"status": "success", "message": "Event processed",
                             "dedup_key": applied.dedup_key}, status_code=202)

    @router.post("/v2/change/enqueue", status_code=202)
    async def change_enqueue(request: Request) -> Any:
        body = await _event_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            event = events.change_event(body)
        except events.InvalidEvent as invalid:
            return _invalid(invalid.errors)
        service, refusal = _admit(event.routing_key)
        if refusal is not None:
            return refusal
        await run_in_threadpool(intake.change, event, service)
        EVENTS.labels("accepted").inc()
        return JSONResponse({"status": "success", "message": "Change event processed"},
                            status_code=202)

    return router


def alert_router(intake: AlertIntake, actor: Callable[..., str]) -> APIRouter:
    router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], dependencies=[Depends(actor)])

    @router.get("")
    def list_alerts(service: str | None = None,
                    status: Literal["triggered", "acknowledged", "resolved"] | None = None,
                    dedup_key: str | None = None, limit: int = 100,
                    offset: int = 0) -> dict[str, Any]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise HTTPException(400, "limit must be 1..1000 and offset >= 0")
        with transaction(intake.sessions, readonly=True) as session:
            rows = alert_service.list_alerts(session=session, service=service, status=status,
                                             dedup_key=dedup_key, limit=limit, offset=offset)
            return {"alerts": [alert_service.alert_json(row) for row in rows]}

    return router
