"""Who is on call when: pure functions over a schedule's layers, restrictions and overrides.

Data in, data out: no store, no clock. Every instant given must be timezone-aware; every instant
returned is UTC. The rules, chosen so that handoffs survive DST (GoAlert and Grafana OnCall have
open bugs where they move by an hour):

- **Rotation.** A layer's ``start`` is a wall-clock time in the schedule's zone. Turn k runs from
  the wall-clock time ``start + k × length`` to ``start + (k + 1) × length``, counted on the wall
  clock, for every kind of rotation: hourly is 1 hour, daily 1 day, weekly 7 days, and a duration
  (``12h``, ``3d``, ``90m``) that much wall-clock time. So a weekly 09:00 handoff is at 09:00 on both
  sides of a DST change, a 12h rotation started at 09:00 hands off at 09:00 and 21:00 every day,
  and ``3d`` is three calendar days. The price: the turn that spans a DST change is an hour
  shorter or longer in real time, and a turn that lies wholly inside the spring-forward gap (an
  hourly 02:00 turn) is empty, so that person is skipped that night.
- Turn k belongs to ``users[k mod n]``. Before the layer's start the layer has nobody.
- **Restrictions.** With restrictions, the layer is on call only inside their windows: on each
  listed day from ``from`` to ``to`` local time, or, when ``from`` ≥ ``to``, from ``from`` on the
  listed day to ``to`` the next day. Overlapping windows simply join.
- **Local time to UTC.** A wall-clock time that does not exist (spring forward) is the transition
  instant. An ambiguous one (fall back) is its first occurrence where something starts and its
  last where something ends. A handoff is both the end of one turn and the start of the next: it
  counts as a start, so consecutive turns meet at one instant and never overlap (the turn covering
  the repeated hour is the longer one). A restriction window's close is an end: the last occurrence.
- **Layers and overrides.** A later layer (in list order) wins wherever it has someone. An override
  active at an instant wins over every layer; of several, the one created last wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from syncd.oncall.definitions import ROTATIONS, WEEKDAYS, Layer, Schedule

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How far next_handoffs looks before it says there are no more (a one-person, all-week schedule
# never hands off).
HANDOFF_LOOKAHEAD = timedelta(days=366)


@dataclass(frozen=True)
class OverrideSpan:
    """``user_id`` on call over every layer from ``starts_at`` until ``ends_at``; ``created_at``
    decides between overlapping overrides (ties: the later one in the sequence wins)."""

    user_id: str
    starts_at: datetime
    ends_at: datetime
    created_at: datetime = EPOCH


@dataclass(frozen=True)
class Shift:
    """``user_id`` on call from ``starts_at`` until ``ends_at``, through ``layer`` (its name), or
    through an override when ``layer`` is None."""

    user_id: str
    starts_at: datetime
    ends_at: datetime
    layer: str | None


@dataclass(frozen=True)
class Handoff:
    """At ``at`` the person on call changes from ``from_user`` to ``to_user`` (None: nobody)."""

    at: datetime
    from_user: str | None
    to_user: str | None


# -- local time ----------------------------------------------------------------------------------

def zone_of(time_zone: str | ZoneInfo) -> ZoneInfo:
    return time_zone if isinstance(time_zone, ZoneInfo) else ZoneInfo(time_zone)


def wall_clock(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive local date and time ``instant`` shows in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None)


def start_to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a shift starting at local ``wall`` starts: the first occurrence of an
    ambiguous time, the transition instant for a time that does not exist."""
    return _local_to_utc(wall, zone, False)


def end_to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a shift ending at local ``wall`` ends: the last occurrence of an ambiguous
    time, the transition instant for a time that does not exist."""
    return _local_to_utc(wall, zone, True)


@lru_cache(maxsize=65536)
def _local_to_utc(wall: datetime, zone: ZoneInfo, ending: bool) -> datetime:
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    last = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if wall_clock(first, zone) != wall:           # in the spring-forward gap: no such local time
        return _transition(min(first, last), max(first, last), zone)
    return max(first, last) if ending else min(first, last)


def _transition(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant between ``before`` and ``after`` where the zone's UTC offset changes
    (zoneinfo does not expose its transitions; they fall on whole seconds)."""
    offset_before = before.astimezone(zone).utcoffset()
    second = timedelta(seconds=1)
    while after - before > second:
        middle = before + second * ((after - before) // second // 2)
        if middle.astimezone(zone).utcoffset() == offset_before:
            before = middle
        else:
            after = middle
    return after


def _require_aware(**instants: datetime) -> None:
    for name, instant in instants.items():
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, got the naive {instant.isoformat()}")


def _require_span(start: datetime, end: datetime) -> None:
    _require_aware(start=start, end=end)
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")


# -- one layer -----------------------------------------------------------------------------------

def turn_length(layer: Layer) -> timedelta:
    return ROTATIONS[layer.rotation] if isinstance(layer.rotation, str) else layer.rotation


def _turn_start(layer: Layer, zone: ZoneInfo, turn: int) -> datetime:
    return start_to_utc(layer.start + turn * turn_length(layer), zone)


def _turn_at(layer: Layer, zone: ZoneInfo, at: datetime) -> int | None:
    """The turn running at ``at`` (None before the layer's start). The wall clock gives a guess
    within a DST offset of the answer; the loops settle it on the real turn boundaries."""
    if at < _turn_start(layer, zone, 0):
        return None
    turn = max(0, (wall_clock(at, zone) - layer.start) // turn_length(layer))
    while turn > 0 and _turn_start(layer, zone, turn) > at:
        turn -= 1
    while _turn_start(layer, zone, turn + 1) <= at:
        turn += 1
    return turn


def _window_edges(layer: Layer, zone: ZoneInfo, day: date) -> Iterable[tuple[datetime, datetime]]:
    """The restriction windows that open on local ``day``, as UTC instants."""
    weekday = WEEKDAYS[day.weekday()]
    for restriction in layer.restrictions:
        if weekday not in restriction.days:
            continue
        closes_on = day if restriction.from_ < restriction.to else day + timedelta(days=1)
        opens = start_to_utc(datetime.combine(day, restriction.from_), zone)
        closes = end_to_utc(datetime.combine(closes_on, restriction.to), zone)
        if opens < closes:
            yield opens, closes


def _days_around(start: datetime, end: datetime, zone: ZoneInfo) -> Iterable[date]:
    """Every local day whose windows may touch [start, end]: a margin either side, because a
    window opens the day before it closes and a fall-back can move the wall clock across midnight."""
    day = wall_clock(start, zone).date() - timedelta(days=2)
    last = wall_clock(end, zone).date() + timedelta(days=1)
    while day <= last:
        yield day
        day += timedelta(days=1)


def _windows(layer: Layer, zone: ZoneInfo, start: datetime,
             end: datetime) -> list[tuple[datetime, datetime]]:
    """The restriction windows within [start, end), clipped, sorted and joined."""
    spans = sorted((max(opens, start), min(closes, end))
                   for day in _days_around(start, end, zone)
                   for opens, closes in _window_edges(layer, zone, day))
    joined: list[tuple[datetime, datetime]] = []
    for opens, closes in spans:
        if opens >= closes:
            continue
        if joined and opens <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], closes))
        else:
            joined.append((opens, closes))
    return joined


def _in_window(layer: Layer, zone: ZoneInfo, at: datetime) -> bool:
    if not layer.restrictions:
        return True
    return any(opens <= at < closes for day in _days_around(at, at, zone)
               for opens, closes in _window_edges(layer, zone, day))


def layer_on_call(layer: Layer, time_zone: str | ZoneInfo, at: datetime) -> str | None:
    """Who the layer has on call at ``at``, or None."""
    _require_aware(at=at)
    zone = zone_of(time_zone)
    turn = _turn_at(layer, zone, at)
    if turn is None or not _in_window(layer, zone, at):
        return None
    return layer.users[turn % len(layer.users)]


def layer_shifts(layer: Layer, time_zone: str | ZoneInfo, start: datetime,
                 end: datetime) -> list[Shift]:
    """The layer's shifts within [start, end), clipped to it, in order; a person's consecutive
    turns (a one-person rotation) join into one shift."""
    _require_span(start, end)
    zone = zone_of(time_zone)
    windows = _windows(layer, zone, start, end) if layer.restrictions else [(start, end)]
    turn = _turn_at(layer, zone, start) or 0
    turn_start = _turn_start(layer, zone, turn)
    pieces: list[Shift] = []
    first_window = 0
    while turn_start < end and first_window < len(windows):
        turn_end = _turn_start(layer, zone, turn + 1)
        user = layer.users[turn % len(layer.users)]
        while first_window < len(windows) and windows[first_window][1] <= turn_start:
            first_window += 1
        window = first_window
        while window < len(windows) and windows[window][0] < turn_end:
            opens, closes = windows[window]
            piece_start, piece_end = max(opens, turn_start, start), min(closes, turn_end)
            if piece_start < piece_end:
                pieces.append(Shift(user, piece_start, piece_end, layer.name))
            window += 1
        turn, turn_start = turn + 1, turn_end
    return _joined(pieces)


def _joined(pieces: Iterable[Shift]) -> list[Shift]:
    """Adjacent pieces of the same person through the same layer (or override) as one shift."""
    shifts: list[Shift] = []
    for piece in pieces:
        last = shifts[-1] if shifts else None
        if (last is not None and last.ends_at == piece.starts_at
                and (last.user_id, last.layer) == (piece.user_id, piece.layer)):
            shifts[-1] = Shift(last.user_id, last.starts_at, piece.ends_at, last.layer)
        else:
            shifts.append(piece)
    return shifts


# -- the schedule --------------------------------------------------------------------------------

def _by_precedence(overrides: Sequence[OverrideSpan]) -> list[OverrideSpan]:
    """Overrides from the weakest to the strongest: the one created last wins."""
    ordered = sorted(enumerate(overrides), key=lambda item: (item[1].created_at, item[0]))
    return [override for _, override in ordered]


def _override_at(ranked: Sequence[OverrideSpan], at: datetime) -> OverrideSpan | None:
    for override in reversed(ranked):
        if override.starts_at <= at < override.ends_at:
            return override
    return None


def on_call(schedule: Schedule, at: datetime,
            overrides: Sequence[OverrideSpan] = ()) -> str | None:
    """The user on call in ``schedule`` at ``at``, or None when nobody is."""
    _require_aware(at=at)
    override = _override_at(_by_precedence(overrides), at)
    if override is not None:
        return override.user_id
    zone = zone_of(schedule.time_zone)
    for layer in reversed(schedule.layers):
        user = layer_on_call(layer, zone, at)
        if user is not None:
            return user
    return None


def shifts(schedule: Schedule, start: datetime, end: datetime,
           overrides: Sequence[OverrideSpan] = ()) -> list[Shift]:
    """The schedule's final timeline within [start, end): who is on call when, after layers and
    overrides, in order; adjacent pieces of one person through one layer (or through overrides)
    join. Where nobody is on call there is no shift (see :func:`gaps`)."""
    _require_span(start, end)
    zone = zone_of(schedule.time_zone)
    ranked = [o for o in _by_precedence(overrides) if o.starts_at < end and o.ends_at > start]
    by_layer = [layer_shifts(layer, zone, start, end) for layer in schedule.layers]
    edges = {start, end}
    edges.update(max(o.starts_at, start) for o in ranked)
    edges.update(min(o.ends_at, end) for o in ranked)
    for layer in by_layer:
        edges.update(edge for shift in layer for edge in (shift.starts_at, shift.ends_at))
    cursors = [0] * len(by_layer)
    pieces: list[Shift] = []
    ordered = sorted(edges)
    for piece_start, piece_end in pairwise(ordered):
        override = _override_at(ranked, piece_start)
        if override is not None:
            pieces.append(Shift(override.user_id, piece_start, piece_end, None))
            continue
        for index in reversed(range(len(by_layer))):
            layer = by_layer[index]
            while cursors[index] < len(layer) and layer[cursors[index]].ends_at <= piece_start:
                cursors[index] += 1
            if cursors[index] < len(layer) and layer[cursors[index]].starts_at <= piece_start:
                pieces.append(Shift(layer[cursors[index]].user_id, piece_start, piece_end,
                                    layer[cursors[index]].layer))
                break
    return _joined(pieces)


def gaps(schedule: Schedule, start: datetime, end: datetime,
         overrides: Sequence[OverrideSpan] = ()) -> list[tuple[datetime, datetime]]:
    """The spans within [start, end) when nobody is on call, in order."""
    spans: list[tuple[datetime, datetime]] = []
    cursor = start
    for shift in shifts(schedule, start, end, overrides):
        if shift.starts_at > cursor:
            spans.append((cursor, shift.starts_at))
        cursor = shift.ends_at
    if cursor < end:
        spans.append((cursor, end))
    return spans


def next_handoffs(schedule: Schedule, at: datetime, count: int,
                  overrides: Sequence[OverrideSpan] = ()) -> list[Handoff]:
    """The next ``count`` instants after ``at`` when the person on call changes (to or from
    nobody too), looking at most HANDOFF_LOOKAHEAD ahead. A change of layer or an override for the
    person already on call is no handoff."""
    _require_aware(at=at)
    horizon = timedelta(days=1)
    while True:
        end = at + min(horizon, HANDOFF_LOOKAHEAD)
        found = _handoffs(shifts(schedule, at, end, overrides), at, end)
        if len(found) >= count or horizon >= HANDOFF_LOOKAHEAD:
            return found[:count]
        horizon *= 4


def _handoffs(timeline: Sequence[Shift], start: datetime, end: datetime) -> list[Handoff]:
    found: list[Handoff] = []
    current = timeline[0].user_id if timeline and timeline[0].starts_at == start else None
    cursor = start
    for shift in timeline:
        if shift.starts_at > cursor and current is not None:      # a gap opens at the cursor
            found.append(Handoff(cursor, current, None))
            current = None
        if shift.user_id != current and shift.starts_at > start:
            found.append(Handoff(shift.starts_at, current, shift.user_id))
        current, cursor = shift.user_id, shift.ends_at
    if cursor < end and current is not None:
        found.append(Handoff(cursor, current, None))
    return found

