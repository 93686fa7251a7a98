"""Store reads and writes for on call: schedule overrides, and who is on call once the stored
overrides join the response files' schedules (the pure rules are in :mod:`syncd.oncall.schedules`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from syncd.oncall import schedules
from syncd.oncall.definitions import Schedule
from syncd.oncall.models import ScheduleOverride
from syncd.oncall.schedules import Handoff, OverrideSpan
from syncd.response_files import ResponseSet
from syncd.store.errors import NotFound
from syncd.yamlsource import did_you_mean

HANDOFFS_SHOWN = 3


class InvalidOverride(ValueError):
    """An override that cannot be stored, with what is wrong in words a person can act on."""


@dataclass(frozen=True)
class OnCallNow:
    """Who is on call in one schedule at an instant, until when, and the handoffs after."""

    schedule: Schedule
    at: datetime
    user_id: str | None
    until: datetime | None          # None: no change within schedules.HANDOFF_LOOKAHEAD
    next_handoffs: list[Handoff]


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    hint = did_you_mean(name, known) or (f"known: {', '.join(known)}" if known
                                         else f"no {kind} is defined")
    return f"unknown {kind} {name!r} ({hint})"


def schedule_named(responses: ResponseSet, schedule_id: str) -> Schedule:
    """The schedule, or NotFound saying which ones exist."""
    schedule = responses.schedules.get(schedule_id)
    if schedule is None:
        raise NotFound(_unknown("schedule", schedule_id, responses.schedules))
    return schedule


def add_override(*, session: Session, responses: ResponseSet, schedule_id: str, user_id: str,
                 starts_at: datetime, ends_at: datetime, actor: str,
                 now: datetime) -> ScheduleOverride:
    """Put ``user_id`` on call in ``schedule_id`` over every layer from ``starts_at`` to
    ``ends_at``; refuse with InvalidOverride what cannot be meant."""
    if schedule_id not in responses.schedules:
        raise InvalidOverride(_unknown("schedule", schedule_id, responses.schedules))
    if user_id not in responses.users:
        raise InvalidOverride(_unknown("user", user_id, responses.users))
    for name, instant in (("start", starts_at), ("end", ends_at)):
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise InvalidOverride(f"the override's {name} {instant.isoformat()} has no UTC "
                                  f"offset: write it like 2026-11-02T09:00+01:00 or ...Z")
    if ends_at <= starts_at:
        raise InvalidOverride(f"the override ends ({ends_at.isoformat()}) before it starts "
                              f"({starts_at.isoformat()})")
    if ends_at <= now:
        raise InvalidOverride(f"the override ends ({ends_at.isoformat()}) in the past (now is "
                              f"{now.isoformat()}): it would change nothing")
    override = ScheduleOverride(schedule_id=schedule_id, user_id=user_id, starts_at=starts_at,
                                ends_at=ends_at, created_by=actor, created_at=now)
    session.add(override)
    session.flush()
    return override


def remove_override(*, session: Session, override_id: int,
                    schedule_id: str | None = None) -> ScheduleOverride:
    """Delete an override (of ``schedule_id`` when given) and return what it was."""
    override = session.get(ScheduleOverride, override_id)
    if override is None or schedule_id is not None and override.schedule_id != schedule_id:
        where = f" in schedule {schedule_id!r}" if schedule_id is not None else ""
        raise NotFound(f"override {override_id} does not exist{where}")
    session.delete(override)
    session.flush()
    return override


def list_overrides(*, session: Session, schedule_id: str | None = None,
                   since: datetime | None = None) -> list[ScheduleOverride]:
    """Overrides in start order; with ``since``, only those still running or ahead at it."""
    query = select(ScheduleOverride).order_by(ScheduleOverride.starts_at, ScheduleOverride.id)
    if schedule_id is not None:
        query = query.where(ScheduleOverride.schedule_id == schedule_id)
    if since is not None:
        query = query.where(ScheduleOverride.ends_at > since)
    return list(session.scalars(query))


def override_spans(rows: Sequence[ScheduleOverride]) -> list[OverrideSpan]:
    """Stored overrides as the pure functions take them (the id breaks a tie in creation time)."""
    return [OverrideSpan(row.user_id, row.starts_at, row.ends_at, row.created_at)
            for row in sorted(rows, key=lambda row: (row.created_at, row.id))]


def overrides_by_schedule(*, session: Session, since: datetime) -> dict[str, list[OverrideSpan]]:
    """The overrides still running or ahead at ``since``, by schedule, as the pure functions
    take them."""
    rows: dict[str, list[ScheduleOverride]] = {}
    for row in list_overrides(session=session, since=since):
        rows.setdefault(row.schedule_id, []).append(row)
    return {schedule_id: override_spans(found) for schedule_id, found in rows.items()}


def who_is_on_call(*, session: Session, responses: ResponseSet, at: datetime,
                   schedule_id: str | None = None,
                   handoffs: int = HANDOFFS_SHOWN) -> list[OnCallNow]:
    """Per schedule (one, or all in id order): who is on call at ``at``, until when, and the
    next ``handoffs`` handoffs, overrides included."""
    chosen = ([schedule_named(responses, schedule_id)] if schedule_id is not None
              else [responses.schedules[key] for key in sorted(responses.schedules)])
    spans = overrides_by_schedule(session=session, since=at)
    answers = []
    for schedule in chosen:
        overrides = spans.get(schedule.id, [])
        coming = schedules.next_handoffs(schedule, at, max(handoffs, 1), overrides)
        answers.append(OnCallNow(schedule=schedule, at=at,
                                 user_id=schedules.on_call(schedule, at, overrides),
                                 until=coming[0].at if coming else None,
                                 next_handoffs=coming[:handoffs]))
    return answers


def schedules_used_by_services(responses: ResponseSet) -> list[str]:
    """The schedules some service pages through its escalation policy, in id order."""
    used = {target.schedule
            for service in responses.services.values()
            for rule in getattr(responses.escalation_policies.get(service.escalation_policy),
                                "rules", ())
            for target in rule.targets if target.schedule is not None}
    return sorted(used & set(responses.schedules))


def coverage_gaps(*, session: Session | None, responses: ResponseSet, start: datetime,
                  end: datetime) -> dict[str, list[tuple[datetime, datetime]]]:
    """The spans within [start, end) when a schedule some service pages has nobody on call, for
    the schedules that have any. Without a session (config check runs without a store) the
    stored overrides are not counted."""
    spans = {} if session is None else overrides_by_schedule(session=session, since=start)
    found = {}
    for schedule_id in schedules_used_by_services(responses):
        holes = schedules.gaps(responses.schedules[schedule_id], start, end,
                               spans.get(schedule_id, []))
        if holes:
            found[schedule_id] = holes
    return found


GAP_CHECK = timedelta(days=14)      # Grafana OnCall checks 30 days; two weeks is what people fix
GAPS_LISTED = 5


def coverage_warnings(*, session: Session | None, responses: ResponseSet,
                      now: datetime) -> list[str]:
    """One line per paged schedule with nobody on call at some instant of the next 14 days,
    naming the first gaps (for `syncd config check` and /readyz)."""
    warnings = []
    for schedule_id, holes in coverage_gaps(session=session, responses=responses, start=now,
                                            end=now + GAP_CHECK).items():
        shown = ", ".join(f"{start:%Y-%m-%d %H:%M}–{end:%Y-%m-%d %H:%M} UTC"
                          for start, end in holes[:GAPS_LISTED])
        more = f" and {len(holes) - GAPS_LISTED} more" if len(holes) > GAPS_LISTED else ""
        warnings.append(f"schedule {schedule_id}: nobody on call during {shown}{more} "
                        f"(next 14 days); pages to it then go to the next rule")
    return warnings
