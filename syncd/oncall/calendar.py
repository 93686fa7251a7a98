"""iCalendar feeds of on-call shifts, per schedule and per person, and the keys in their URLs.

Calendar clients poll one URL forever and cannot send a bearer token, so a feed's URL carries a
key: an itsdangerous signature of the feed's kind and id under ``http.link_secret``. It never
expires (a subscription must keep working); changing the link secret invalidates every key.

Each shift is one VEVENT whose UID hashes schedule, person and start, so regenerating a feed gives
a client the same events again, updated in place when a shift's end moves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from icalendar import Calendar, Event
from itsdangerous import Signer

from syncd.oncall import schedules
from syncd.oncall.definitions import Schedule, User
from syncd.oncall.schedules import OverrideSpan, Shift

PRODID = "-//syncd//on-call feed//EN"
FEED_KINDS = ("schedule", "user")
REFRESH = timedelta(hours=1)          # what the feed suggests to clients that honour it
FEED_PAST = timedelta(days=7)         # a feed shows last week's shifts too
FEED_AHEAD = timedelta(weeks=8)


class CalendarKeys:
    """Signs and checks the ``key=`` of feed URLs (kind "schedule" or "user", and an id)."""

    def __init__(self, secret: str):
        self._signer = Signer(secret, salt="calendar-feed", digest_method=hashlib.sha256)

    def key_for(self, kind: str, id: str) -> str:
        return self._signer.get_signature(_signed_value(kind, id)).decode()

    def check(self, kind: str, id: str, key: str) -> bool:
        return bool(key) and self._signer.verify_signature(_signed_value(kind, id), key)


def _signed_value(kind: str, id: str) -> str:
    if kind not in FEED_KINDS:
        raise ValueError(f"unknown feed kind {kind!r}: expected one of {', '.join(FEED_KINDS)}")
    return f"{kind}:{id}"


def feed_path(kind: str, id: str, key: str) -> str:
    """The feed's path under the public URL, e.g. /calendars/schedules/payments.ics?key=…"""
    return f"/calendars/{kind}s/{id}.ics?key={key}"


def feed_window(now: datetime) -> tuple[datetime, datetime]:
    """What a feed generated at ``now`` covers: last week and the next 8 weeks."""
    return now - FEED_PAST, now + FEED_AHEAD


def feed_shifts(schedule: Schedule, now: datetime,
                overrides: Sequence[OverrideSpan] = ()) -> list[Shift]:
    """The shifts a feed generated at ``now`` shows. The shift running at the window's start keeps
    its real start (the timeline is computed from further back), so its UID does not change as
    the window moves; only a shift longer than the look-back is cut at it."""
    start, end = feed_window(now)
    return [shift for shift in schedules.shifts(schedule, start - FEED_AHEAD, end, overrides)
            if shift.ends_at > start]


def schedule_calendar(schedule: Schedule, shifts: Iterable[Shift], users: Mapping[str, User], *,
                      generated_at: datetime) -> bytes:
    """Everyone's shifts in one schedule."""
    calendar = _calendar(f"On call: {schedule.name}", generated_at)
    for shift in shifts:
        calendar.add_component(_event(schedule, shift, users.get(shift.user_id), generated_at))
    return calendar.to_ical()


def user_calendar(user: User, shifts_by_schedule: Iterable[tuple[Schedule, Sequence[Shift]]], *,
                  generated_at: datetime) -> bytes:
    """One person's shifts across schedules (the shifts of others are left out)."""
    calendar = _calendar(f"On call: {user.name}", generated_at)
    for schedule, timeline in shifts_by_schedule:
        for shift in timeline:
            if shift.user_id == user.id:
                calendar.add_component(_event(schedule, shift, user, generated_at))
    return calendar.to_ical()


def _calendar(name: str, generated_at: datetime) -> Calendar:
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", name)
    calendar.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", REFRESH)
    return calendar


def shift_uid(schedule_id: str, shift: Shift) -> str:
    digest = hashlib.sha256(
        f"{schedule_id}\0{shift.user_id}\0{shift.starts_at.astimezone(UTC).isoformat()}".encode())
    return f"{digest.hexdigest()[:32]}@syncd"


def _event(schedule: Schedule, shift: Shift, user: User | None, generated_at: datetime) -> Event:
    event = Event()
    event.add("uid", shift_uid(schedule.id, shift))
    event.add("dtstamp", generated_at.astimezone(UTC))
    event.add("dtstart", shift.starts_at.astimezone(UTC))
    event.add("dtend", shift.ends_at.astimezone(UTC))
    event.add("summary", f"On call: {user.name if user else shift.user_id} ({schedule.name})")
    through = "an override" if shift.layer is None else f"layer {shift.layer}"
    event.add("description", f"{shift.user_id} on call in {schedule.id} through {through}")
    event.add("transp", "TRANSPARENT")        # being on call does not make a person busy
    return event
