"""On call over HTTP: who is on call, schedule overrides (behind bearer tokens; the token's name is
the override's author), and the iCalendar feeds, which calendar clients poll with the signed key
in their URL instead of a token."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.oncall import calendar, service
from syncd.oncall.calendar import CalendarKeys
from syncd.oncall.models import ScheduleOverride
from syncd.oncall.schedules import OverrideSpan
from syncd.response_files import ResponseSet
from syncd.store.db import transaction
from syncd.store.errors import NotFound

CALENDAR_TYPE = "text/calendar; charset=utf-8"


class NewOverride(BaseModel):
    user: str
    starts_at: datetime
    ends_at: datetime


def override_json(override: ScheduleOverride) -> dict[str, Any]:
    return {"id": override.id, "schedule": override.schedule_id, "user": override.user_id,
            "starts_at": override.starts_at.isoformat(), "ends_at": override.ends_at.isoformat(),
            "created_by": override.created_by, "created_at": override.created_at.isoformat()}


def _refusals_as_http(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except NotFound as error:
        raise HTTPException(404, str(error)) from None
    except service.InvalidOverride as error:
        raise HTTPException(400, str(error)) from None


def _instant(name: str, text: str | None, default: datetime) -> datetime:
    if text is None:
        return default
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"{name}: expected an ISO 8601 time like 2026-11-02T09:00+01:00, "
                                 f"got {text!r}") from None
    if value.tzinfo is None:
        raise HTTPException(400, f"{name}: {text!r} has no UTC offset; add one, like +01:00 or Z")
    return value


def oncall_router(*, sessions: sessionmaker[Session], responses: Callable[[], ResponseSet],
                  clock: Clock, actor: Callable[..., str],
                  calendar_keys: CalendarKeys | None) -> APIRouter:
    """``responses`` is called per request, so a reload of the response files shows at once."""
    router = APIRouter(tags=["oncall"])
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(actor)])

    @api.get("/oncall")
    def who_is_on_call(schedule: str | None = None, at: str | None = None) -> dict[str, Any]:
        when = _instant("at", at, clock.now())
        current = responses()
        with transaction(sessions, readonly=True) as session:
            answers = _refusals_as_http(lambda: service.who_is_on_call(
                session=session, responses=current, at=when, schedule_id=schedule))
        return {"at": when.isoformat(),
                "schedules": [_on_call_json(answer, current, calendar_keys) for answer in answers]}

    @api.get("/schedules/{schedule_id}/overrides")
    def list_overrides(schedule_id: str, since: str | None = None) -> dict[str, Any]:
        """Overrides still running or ahead (at ``since``, default now)."""
        _refusals_as_http(lambda: service.schedule_named(responses(), schedule_id))
        with transaction(sessions, readonly=True) as session:
            rows = service.list_overrides(session=session, schedule_id=schedule_id,
                                          since=_instant("since", since, clock.now()))
            return {"overrides": [override_json(row) for row in rows]}

    @api.post("/schedules/{schedule_id}/overrides", status_code=201)
    def add_override(schedule_id: str, body: NewOverride,
                     who: str = Depends(actor)) -> dict[str, Any]:
        current = responses()
        _refusals_as_http(lambda: service.schedule_named(current, schedule_id))
        with transaction(sessions) as session:
            override = _refusals_as_http(lambda: service.add_override(
                session=session, responses=current, schedule_id=schedule_id, user_id=body.user,
                starts_at=body.starts_at, ends_at=body.ends_at, actor=who, now=clock.now()))
            return override_json(override)

    @api.delete("/schedules/{schedule_id}/overrides/{override_id}")
    def remove_override(schedule_id: str, override_id: int) -> dict[str, Any]:
        with transaction(sessions) as session:
            removed = _refusals_as_http(lambda: service.remove_override(
                session=session, override_id=override_id, schedule_id=schedule_id))
            return override_json(removed)

    feeds = APIRouter(prefix="/calendars")

    def checked(kind: str, id: str, key: str) -> None:
        if calendar_keys is None:
            raise HTTPException(404, "calendar feeds are off: set http.link_secret to sign them")
        if not calendar_keys.check(kind, id, key):
            raise HTTPException(403, f"the key does not open the calendar of {kind} {id!r}")

    @feeds.get("/schedules/{schedule_id}.ics", response_class=Response)
    def schedule_feed(schedule_id: str, key: str = "") -> Response:
        checked("schedule", schedule_id, key)
        current, now = responses(), clock.now()
        schedule = _refusals_as_http(lambda: service.schedule_named(current, schedule_id))
        overrides = _stored_overrides(sessions, now)
        body = calendar.schedule_calendar(
            schedule, calendar.feed_shifts(schedule, now, overrides.get(schedule_id, [])),
            current.users, generated_at=now)
        return Response(body, media_type=CALENDAR_TYPE)

    @feeds.get("/users/{user_id}.ics", response_class=Response)
    def user_feed(user_id: str, key: str = "") -> Response:
        checked("user", user_id, key)
        current, now = responses(), clock.now()
        user = current.users.get(user_id)
        if user is None:
            raise HTTPException(404, f"unknown user {user_id!r}")
        overrides = _stored_overrides(sessions, now)
        timelines = [(schedule, calendar.feed_shifts(schedule, now, overrides.get(schedule.id, [])))
                     for _, schedule in sorted(current.schedules.items())]
        return Response(calendar.user_calendar(user, timelines, generated_at=now),
                        media_type=CALENDAR_TYPE)

    router.include_router(api)
    router.include_router(feeds)
    return router


def _stored_overrides(sessions: sessionmaker[Session], now: datetime) -> dict[str, list[OverrideSpan]]:
    """What a feed at ``now`` needs: the overrides that reach into its look-back or later."""
    since = calendar.feed_window(now)[0] - calendar.FEED_AHEAD
    with transaction(sessions, readonly=True) as session:
        return service.overrides_by_schedule(session=session, since=since)


def _on_call_json(answer: service.OnCallNow, responses: ResponseSet,
                  keys: CalendarKeys | None) -> dict[str, Any]:
    def person(user_id: str | None) -> dict[str, str] | None:
        if user_id is None:
            return None
        user = responses.users.get(user_id)
        return {"id": user_id, "name": user.name if user else user_id}

    schedule = answer.schedule
    found: dict[str, Any] = {
        "id": schedule.id, "name": schedule.name, "time_zone": schedule.time_zone,
        "on_call": person(answer.user_id),
        "until": answer.until.isoformat() if answer.until else None,
        "next_handoffs": [{"at": h.at.isoformat(), "from": person(h.from_user),
                           "to": person(h.to_user)} for h in answer.next_handoffs]}
    if keys is not None:
        found["calendar"] = calendar.feed_path("schedule", schedule.id,
                                               keys.key_for("schedule", schedule.id))
    return found
