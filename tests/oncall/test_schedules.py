"""Who is on call when, against hand-worked cases across the 2026 DST changes (US: Mar 8 and
Nov 1; EU: Mar 29 and Oct 25), and hypothesis properties over random schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.oncall.definitions import WEEKDAYS, Schedule
from syncd.oncall.schedules import (
    Handoff,
    OverrideSpan,
    Shift,
    end_to_utc,
    gaps,
    layer_on_call,
    layer_shifts,
    next_handoffs,
    on_call,
    shifts,
    start_to_utc,
    turn_length,
)

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")


def utc(text: str) -> datetime:
    """``"2026-03-08T07:00"`` as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule(time_zone: str, *layers: dict) -> Schedule:
    return Schedule.model_validate({"id": "payments-primary", "name": "Payments primary",
                                    "time_zone": time_zone, "layers": list(layers)})


def layer(start: str, rotation, users: list[str], restrictions=(), name: str = "primary") -> dict:
    return {"name": name, "start": start, "rotation": rotation, "users": users,
            "restrictions": list(restrictions)}


def timeline(result: list[Shift]) -> list[tuple[str, str, str]]:
    return [(s.user_id, s.starts_at.strftime("%m-%d %H:%M"), s.ends_at.strftime("%m-%d %H:%M"))
            for s in result]


# -- local time to UTC ---------------------------------------------------------------------------

def test_a_local_time_in_the_spring_forward_gap_is_the_transition_instant():
    # New York skips 02:00-03:00 on 2026-03-08 (07:00 UTC); Berlin 02:00-03:00 on 03-29 (01:00 UTC)
    assert start_to_utc(datetime(2026, 3, 8, 2, 30), NEW_YORK) == utc("2026-03-08T07:00")
    assert end_to_utc(datetime(2026, 3, 8, 2, 30), NEW_YORK) == utc("2026-03-08T07:00")
    assert start_to_utc(datetime(2026, 3, 29, 2, 0), BERLIN) == utc("2026-03-29T01:00")
    assert start_to_utc(datetime(2026, 3, 29, 2, 59), BERLIN) == utc("2026-03-29T01:00")


def test_an_ambiguous_local_time_starts_at_its_first_occurrence_and_ends_at_its_last():
    # 01:30 happens twice in New York on 2026-11-01 (EDT then EST), 02:30 twice in Berlin on 10-25
    assert start_to_utc(datetime(2026, 11, 1, 1, 30), NEW_YORK) == utc("2026-11-01T05:30")
    assert end_to_utc(datetime(2026, 11, 1, 1, 30), NEW_YORK) == utc("2026-11-01T06:30")
    assert start_to_utc(datetime(2026, 10, 25, 2, 30), BERLIN) == utc("2026-10-25T00:30")
    assert end_to_utc(datetime(2026, 10, 25, 2, 30), BERLIN) == utc("2026-10-25T01:30")


def test_an_ordinary_local_time_is_one_instant():
    assert start_to_utc(datetime(2026, 7, 1, 9), BERLIN) == end_to_utc(datetime(2026, 7, 1, 9),
                                                                        BERLIN) == utc("2026-07-01T07:00")


# -- rotations across DST ------------------------------------------------------------------------

def test_a_weekly_berlin_handoff_stays_at_nine_across_both_dst_changes():
    payments = schedule("Europe/Berlin", layer("2026-03-16T09:00", "weekly", ["alice", "bob"]))
    # Mar 23 09:00 CET is 08:00 UTC; Mar 30 09:00 CEST is 07:00 UTC: bob's week is 167 hours
    assert timeline(shifts(payments, utc("2026-03-23T00:00"), utc("2026-03-31T00:00"))) == [
        ("alice", "03-23 00:00", "03-23 08:00"), ("bob", "03-23 08:00", "03-30 07:00"),
        ("alice", "03-30 07:00", "03-31 00:00")]
    # 31 weeks on, Oct 19 09:00 CEST (07:00 UTC) to Oct 26 09:00 CET (08:00 UTC): 169 hours
    assert timeline(shifts(payments, utc("2026-10-19T00:00"), utc("2026-10-27T00:00"))) == [
        ("alice", "10-19 00:00", "10-19 07:00"), ("bob", "10-19 07:00", "10-26 08:00"),
        ("alice", "10-26 08:00", "10-27 00:00")]
    assert on_call(payments, utc("2026-03-30T06:59")) == "bob"
    assert on_call(payments, utc("2026-03-30T07:00")) == "alice"


def test_a_daily_new_york_handoff_stays_at_nine_across_both_dst_changes():
    spring = schedule("America/New_York", layer("2026-03-06T09:00", "daily", ["alice", "bob", "carol"]))
    assert timeline(shifts(spring, utc("2026-03-07T00:00"), utc("2026-03-10T00:00"))) == [
        ("alice", "03-07 00:00", "03-07 14:00"), ("bob", "03-07 14:00", "03-08 13:00"),
        ("carol", "03-08 13:00", "03-09 13:00"), ("alice", "03-09 13:00", "03-10 00:00")]
    autumn = schedule("America/New_York", layer("2026-10-30T09:00", "daily", ["alice", "bob", "carol"]))
    assert timeline(shifts(autumn, utc("2026-10-31T00:00"), utc("2026-11-03T00:00"))) == [
        ("alice", "10-31 00:00", "10-31 13:00"), ("bob", "10-31 13:00", "11-01 14:00"),
        ("carol", "11-01 14:00", "11-02 14:00"), ("alice", "11-02 14:00", "11-03 00:00")]


def test_a_0230_handoff_on_spring_forward_day_moves_to_the_transition_instant():
    nights = schedule("America/New_York", layer("2026-03-06T02:30", "daily", ["alice", "bob", "carol"]))
    assert timeline(shifts(nights, utc("2026-03-07T00:00"), utc("2026-03-10T00:00"))) == [
        ("alice", "03-07 00:00", "03-07 07:30"), ("bob", "03-07 07:30", "03-08 07:00"),
        ("carol", "03-08 07:00", "03-09 06:30"), ("alice", "03-09 06:30", "03-10 00:00")]
    assert next_handoffs(nights, utc("2026-03-07T12:00"), 2) == [
        Handoff(utc("2026-03-08T07:00"), "bob", "carol"),
        Handoff(utc("2026-03-09T06:30"), "carol", "alice")]


def test_a_handoff_at_an_ambiguous_time_happens_at_its_first_occurrence():
    # 01:30 on Nov 1 is EDT (05:30 UTC) first, EST (06:30 UTC) second: carol takes over at the first
    nights = schedule("America/New_York", layer("2026-10-30T01:30", "daily", ["alice", "bob", "carol"]))
    assert timeline(shifts(nights, utc("2026-10-31T00:00"), utc("2026-11-03T00:00"))) == [
        ("alice", "10-31 00:00", "10-31 05:30"), ("bob", "10-31 05:30", "11-01 05:30"),
        ("carol", "11-01 05:30", "11-02 06:30"), ("alice", "11-02 06:30", "11-03 00:00")]


def test_a_twelve_hour_rotation_hands_off_at_nine_and_nine_local_across_dst():
    halves = schedule("Europe/Berlin", layer("2026-03-28T09:00", "12h", ["alice", "bob"]))
    assert timeline(shifts(halves, utc("2026-03-28T08:00"), utc("2026-03-30T07:00"))) == [
        ("alice", "03-28 08:00", "03-28 20:00"), ("bob", "03-28 20:00", "03-29 07:00"),
        ("alice", "03-29 07:00", "03-29 19:00"), ("bob", "03-29 19:00", "03-30 07:00")]


def test_a_three_day_rotation_counts_calendar_days():
    long = schedule("America/New_York", layer("2026-03-06T09:00", "3d", ["alice", "bob"]))
    assert [s.starts_at for s in shifts(long, utc("2026-03-06T14:00"), utc("2026-03-13T00:00"))] == [
        utc("2026-03-06T14:00"), utc("2026-03-09T13:00"), utc("2026-03-12T13:00")]


def test_an_hourly_turn_inside_the_spring_forward_gap_is_empty():
    hourly = schedule("America/New_York", layer("2026-03-08T00:00", "hourly", ["a", "b", "c", "d"]))
    # turns: 00:00 a, 01:00 b, 02:00 c (no such hour), 03:00 d; the clock jumps at 07:00 UTC
    assert timeline(shifts(hourly, utc("2026-03-08T05:00"), utc("2026-03-08T09:00"))) == [
        ("a", "03-08 05:00", "03-08 06:00"), ("b", "03-08 06:00", "03-08 07:00"),
        ("d", "03-08 07:00", "03-08 08:00"), ("a", "03-08 08:00", "03-08 09:00")]


def test_nobody_is_on_call_in_a_layer_before_its_start():
    later = schedule("Europe/Berlin", layer("2026-11-02T09:00", "weekly", ["alice"]))
    assert on_call(later, utc("2026-11-02T07:59")) is None
    assert on_call(later, utc("2026-11-02T08:00")) == "alice"
    assert gaps(later, utc("2026-11-01T00:00"), utc("2026-11-03T00:00")) == [
        (utc("2026-11-01T00:00"), utc("2026-11-02T08:00"))]


# -- restrictions, layers, overrides -------------------------------------------------------------

WORKDAYS = {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "18:00"}
NIGHTS = {"days": list(WEEKDAYS), "from": "18:00", "to": "09:00"}


def office_and_nights() -> Schedule:
    return schedule("Europe/Berlin",
                    layer("2026-11-02T09:00", "weekly", ["alice", "bob"], [WORKDAYS], "weekdays"),
                    layer("2026-11-02T18:00", "daily", ["carol", "dave"], [NIGHTS], "nights"))


def test_a_weekday_restriction_keeps_the_layer_to_office_hours():
    weekdays = office_and_nights().layers[0]
    result = layer_shifts(weekdays, "Europe/Berlin", utc("2026-11-02T00:00"), utc("2026-11-10T00:00"))
    assert timeline(result) == [("alice", f"11-0{day} 08:00", f"11-0{day} 17:00") for day in range(2, 7)] + [
        ("bob", "11-09 08:00", "11-09 17:00")]


def test_an_overnight_restriction_runs_from_the_listed_day_into_the_next():
    nights = office_and_nights().layers[1]
    result = layer_shifts(nights, "Europe/Berlin", utc("2026-11-02T00:00"), utc("2026-11-04T12:00"))
    assert timeline(result) == [("carol", "11-02 17:00", "11-03 08:00"),
                                ("dave", "11-03 17:00", "11-04 08:00")]


def test_an_overnight_window_closing_at_an_ambiguous_time_closes_at_its_last_occurrence():
    late = schedule("America/New_York", layer(
        "2026-10-01T00:00", "weekly", ["alice"],
        [{"days": ["sat"], "from": "18:00", "to": "01:30"}]))
    # Saturday Oct 31 18:00 EDT to Sunday 01:30 EST: 22:00 to 06:30 UTC, eight and a half hours
    assert timeline(shifts(late, utc("2026-10-31T00:00"), utc("2026-11-02T00:00"))) == [
        ("alice", "10-31 22:00", "11-01 06:30")]


def test_office_hours_and_nights_leave_weekend_days_uncovered():
    assert gaps(office_and_nights(), utc("2026-11-06T00:00"), utc("2026-11-10T00:00")) == [
        (utc("2026-11-07T08:00"), utc("2026-11-07T17:00")),
        (utc("2026-11-08T08:00"), utc("2026-11-08T17:00"))]


def test_the_later_layer_wins_where_it_has_someone():
    lunch = {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "12:00", "to": "13:00"}
    covered = schedule("Europe/Berlin",
                       layer("2026-11-02T09:00", "weekly", ["alice", "bob"], name="base"),
                       layer("2026-11-02T00:00", "weekly", ["carol"], [lunch], "lunch"))
    assert timeline(shifts(covered, utc("2026-11-02T10:00"), utc("2026-11-02T13:00"))) == [
        ("alice", "11-02 10:00", "11-02 11:00"), ("carol", "11-02 11:00", "11-02 12:00"),
        ("alice", "11-02 12:00", "11-02 13:00")]
    assert [s.layer for s in shifts(covered, utc("2026-11-02T10:00"), utc("2026-11-02T13:00"))] == [
        "base", "lunch", "base"]
    assert on_call(covered, utc("2026-11-02T11:30")) == "carol"


def test_an_override_wins_over_every_layer_and_the_newest_override_wins():
    plan = office_and_nights()
    overrides = [
        OverrideSpan("erin", utc("2026-11-03T10:00"), utc("2026-11-03T20:00"), utc("2026-10-01T00:00")),
        OverrideSpan("frank", utc("2026-11-03T12:00"), utc("2026-11-03T14:00"), utc("2026-10-02T00:00")),
    ]
    assert timeline(shifts(plan, utc("2026-11-03T08:00"), utc("2026-11-03T22:00"), overrides)) == [
        ("alice", "11-03 08:00", "11-03 10:00"), ("erin", "11-03 10:00", "11-03 12:00"),
        ("frank", "11-03 12:00", "11-03 14:00"), ("erin", "11-03 14:00", "11-03 20:00"),
        ("dave", "11-03 20:00", "11-03 22:00")]
    assert on_call(plan, utc("2026-11-03T13:00"), overrides) == "frank"
    assert on_call(plan, utc("2026-11-03T13:00"), overrides[::-1]) == "frank"   # order of creation
    # an override fills a gap too
    weekend = [OverrideSpan("erin", utc("2026-11-07T00:00"), utc("2026-11-08T00:00"))]
    assert gaps(plan, utc("2026-11-07T00:00"), utc("2026-11-08T00:00"), weekend) == []


def test_next_handoffs_name_who_hands_to_whom_including_nobody():
    assert next_handoffs(office_and_nights(), utc("2026-11-06T12:00"), 4) == [
        Handoff(utc("2026-11-06T17:00"), "alice", "carol"),    # Friday 18:00: nights take over
        Handoff(utc("2026-11-07T08:00"), "carol", None),       # Saturday 09:00: nobody
        Handoff(utc("2026-11-07T17:00"), None, "dave"),
        Handoff(utc("2026-11-08T08:00"), "dave", None)]


def test_a_one_person_schedule_never_hands_off():
    alone = schedule("UTC", layer("2026-01-01T00:00", "weekly", ["alice"]))
    assert next_handoffs(alone, utc("2026-06-01T00:00"), 3) == []
    assert shifts(alone, utc("2026-06-01T00:00"), utc("2026-07-01T00:00")) == [
        Shift("alice", utc("2026-06-01T00:00"), utc("2026-07-01T00:00"), "primary")]


def test_naive_instants_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        on_call(office_and_nights(), datetime(2026, 11, 2, 9))


# -- properties ----------------------------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]  # Lord Howe: 30-min DST
ROTATION_CHOICES = ["hourly", "daily", "weekly", "12h", "8h", "3d", "90m"]
USERS = ["alice", "bob", "carol", "dave", "erin"]
BASE = datetime(2026, 1, 1, tzinfo=UTC)

clock_times = st.builds(lambda minutes: f"{minutes // 60:02d}:{minutes % 60:02d}",
                        st.integers(0, 47).map(lambda half_hours: half_hours * 30))
restrictions = st.builds(
    lambda days, start, end: {"days": days, "from": start, "to": end},
    st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True), clock_times,
    clock_times).filter(lambda r: r["from"] != r["to"])
layers = st.builds(
    lambda start, rotation, users, windows: layer(start.strftime("%Y-%m-%dT%H:%M"), rotation, users,
                                                  windows),
    st.datetimes(datetime(2026, 1, 1), datetime(2027, 6, 1)).map(
        lambda d: d.replace(minute=d.minute // 30 * 30, second=0, microsecond=0)),
    st.sampled_from(ROTATION_CHOICES),
    st.lists(st.sampled_from(USERS), min_size=1, max_size=4, unique=True),
    st.lists(restrictions, max_size=2))
schedules = st.builds(lambda zone, items: schedule(zone, *(dict(item, name=f"layer{i}")
                                                         for i, item in enumerate(items))),
                      st.sampled_from(ZONES), st.lists(layers, min_size=1, max_size=3))
# Spans around the DST changes of 2026 and 2027 as often as anywhere else.
dst_days = st.sampled_from([datetime(2026, 3, 8), datetime(2026, 3, 29), datetime(2026, 4, 5),
                            datetime(2026, 10, 4), datetime(2026, 10, 25), datetime(2026, 11, 1),
                            datetime(2027, 3, 14), datetime(2027, 10, 31)])
span_starts = st.one_of(
    st.builds(lambda day, hours: day.replace(tzinfo=UTC) + timedelta(hours=hours), dst_days,
              st.integers(-72, 24)),
    st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 1), timezones=st.just(UTC)))
span_lengths = st.integers(1, 14 * 24 * 4).map(lambda quarters: timedelta(minutes=15 * quarters))
overrides = st.lists(st.builds(
    lambda user, offset, length, created: OverrideSpan(
        user, BASE + offset, BASE + offset + length, BASE + timedelta(seconds=created)),
    st.sampled_from(USERS + ["zoe"]), st.timedeltas(timedelta(0), timedelta(days=720)),
    st.timedeltas(timedelta(minutes=1), timedelta(days=3)), st.integers(0, 10)), max_size=4)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(schedules, span_starts, span_lengths)
def test_one_layer_has_at_most_one_person_at_any_instant(plan, start, length):
    for each in plan.layers:
        result = layer_shifts(each, plan.time_zone, start, start + length)
        for shift in result:
            assert start <= shift.starts_at < shift.ends_at <= start + length
        for earlier, later in pairwise(result):
            assert earlier.ends_at <= later.starts_at, f"{earlier} overlaps {later}"


@PROPERTY
@given(schedules, span_starts, span_lengths)
def test_the_rotation_order_holds_across_any_span(plan, start, length):
    """Without restrictions a layer's turns are back to back and each person hands to the next
    in the list (turns over an hour long: a shorter one may vanish in a spring-forward gap)."""
    for each in plan.layers:
        if each.restrictions or len(each.users) < 2 or turn_length(each) <= timedelta(hours=1):
            continue
        result = layer_shifts(each, plan.time_zone, start, start + length)
        for earlier, later in pairwise(result):
            assert earlier.ends_at == later.starts_at
            position = each.users.index(earlier.user_id)
            assert later.user_id == each.users[(position + 1) % len(each.users)]


@PROPERTY
@given(schedules, overrides, st.data())
def test_an_override_always_wins(plan, spans, data):
    for span in spans:
        at = data.draw(st.datetimes(span.starts_at.replace(tzinfo=None),
                                    (span.ends_at - timedelta(microseconds=1)).replace(tzinfo=None),
                                    timezones=st.just(UTC)))
        newest = max((o for o in enumerate(spans) if o[1].starts_at <= at < o[1].ends_at),
                     key=lambda item: (item[1].created_at, item[0]))[1]
        assert on_call(plan, at, spans) == newest.user_id


@PROPERTY
@given(schedules, overrides, span_starts, span_lengths, st.data())
def test_shifts_agree_with_on_call(plan, spans, start, length, data):
    end = start + length
    result = shifts(plan, start, end, spans)
    holes = gaps(plan, start, end, spans)
    covered = sorted([(s.starts_at, s.ends_at) for s in result] + holes)
    assert covered[0][0] == start and covered[-1][1] == end
    for (_, first_end), (second_start, _) in pairwise(covered):
        assert first_end == second_start, "shifts and gaps must tile the span"
    samples = {start, end - timedelta(microseconds=1)}
    for shift in result:
        samples.update({shift.starts_at, shift.ends_at - timedelta(seconds=1)})
    samples.update(data.draw(st.lists(st.datetimes(start.replace(tzinfo=None),
                                                   end.replace(tzinfo=None) - timedelta(microseconds=1),
                                                   timezones=st.just(UTC)), max_size=10)))
    for at in samples:
        if not start <= at < end:
            continue
        expected = next((s.user_id for s in result if s.starts_at <= at < s.ends_at), None)
        assert on_call(plan, at, spans) == expected, f"at {at.isoformat()}"


@PROPERTY
@given(schedules, span_starts)
def test_next_handoffs_are_where_on_call_changes(plan, at):
    found = next_handoffs(plan, at, 3)
    previous = on_call(plan, at)
    for handoff in found:
        assert handoff.at > at and handoff.from_user == previous != handoff.to_user
        assert on_call(plan, handoff.at) == handoff.to_user
        assert on_call(plan, handoff.at - timedelta(microseconds=1)) == previous
        previous = handoff.to_user


@PROPERTY
@given(schedules, span_starts)
def test_layer_on_call_matches_its_shifts(plan, at):
    for each in plan.layers:
        around = layer_shifts(each, plan.time_zone, at - timedelta(hours=1), at + timedelta(hours=1))
        expected = next((s.user_id for s in around if s.starts_at <= at < s.ends_at), None)
        assert layer_on_call(each, plan.time_zone, at) == expected
