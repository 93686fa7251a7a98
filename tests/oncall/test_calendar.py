"""Calendar feeds, parsed back with icalendar as a calendar client would read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from icalendar import Calendar

from syncd.oncall.calendar import (
    CalendarKeys,
    feed_path,
    feed_shifts,
    schedule_calendar,
    shift_uid,
    user_calendar,
)
from syncd.oncall.definitions import Schedule, User
from syncd.oncall.schedules import OverrideSpan, shifts

GENERATED = datetime(2026, 11, 1, 12, tzinfo=UTC)
USERS = {"alice": User(id="alice", name="Alice Adams", email="alice@example.com"),
         "bob": User(id="bob", name="Bob Brown", email="bob@example.com")}
PAYMENTS = Schedule.model_validate({
    "id": "payments-primary", "name": "Payments primary", "time_zone": "Europe/Berlin",
    "layers": [{"name": "weekdays", "start": "2026-11-02T09:00", "rotation": "weekly",
                "users": ["alice", "bob"]}]})
SEARCH = Schedule.model_validate({
    "id": "search", "name": "Search", "time_zone": "America/New_York",
    "layers": [{"name": "all", "start": "2026-11-02T09:00", "rotation": "daily",
                "users": ["bob", "alice"]}]})
START, END = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)


def events(feed: bytes) -> list:
    return [c for c in Calendar.from_ical(feed).walk("VEVENT")]


def test_a_schedule_feed_has_one_event_per_shift_in_utc():
    timeline = shifts(PAYMENTS, START, END)
    feed = schedule_calendar(PAYMENTS, timeline, USERS, generated_at=GENERATED)
    calendar = Calendar.from_ical(feed)
    assert str(calendar["PRODID"]) == "-//syncd//on-call feed//EN"
    assert str(calendar["X-WR-CALNAME"]) == "On call: Payments primary"
    found = events(feed)
    assert [str(e["SUMMARY"]) for e in found] == [
        "On call: Alice Adams (Payments primary)", "On call: Bob Brown (Payments primary)",
        "On call: Alice Adams (Payments primary)"]
    assert [(e.decoded("DTSTART"), e.decoded("DTEND")) for e in found] == [
        (s.starts_at, s.ends_at) for s in timeline]
    assert found[1].decoded("DTSTART") == datetime(2026, 11, 9, 8, tzinfo=UTC)
    assert all(e.decoded("DTSTART").utcoffset() == timedelta(0) for e in found)
    assert all(e.decoded("DTSTAMP") == GENERATED for e in found)


def test_uids_stay_the_same_when_the_feed_is_generated_again():
    first = events(schedule_calendar(PAYMENTS, shifts(PAYMENTS, START, END), USERS,
                                     generated_at=GENERATED))
    later = events(schedule_calendar(PAYMENTS, shifts(PAYMENTS, START, END + timedelta(days=7)),
                                     USERS, generated_at=GENERATED + timedelta(hours=5)))
    assert [str(e["UID"]) for e in first] == [str(e["UID"]) for e in later][:len(first)]
    assert len({str(e["UID"]) for e in later}) == len(later)


def test_a_person_feed_holds_only_their_shifts_across_schedules_and_overrides():
    override = [OverrideSpan("alice", datetime(2026, 11, 10, tzinfo=UTC),
                             datetime(2026, 11, 10, 6, tzinfo=UTC))]
    feed = user_calendar(USERS["alice"], [(PAYMENTS, shifts(PAYMENTS, START, END, override)),
                                          (SEARCH, shifts(SEARCH, START, START + timedelta(days=4)))],
                         generated_at=GENERATED)
    assert str(Calendar.from_ical(feed)["X-WR-CALNAME"]) == "On call: Alice Adams"
    summaries = [str(e["SUMMARY"]) for e in events(feed)]
    assert summaries.count("On call: Alice Adams (Search)") == 2
    assert summaries.count("On call: Alice Adams (Payments primary)") == 3
    assert any("through an override" in str(e["DESCRIPTION"]) for e in events(feed))


def test_a_feed_key_is_checked_for_its_own_feed_only():
    keys = CalendarKeys("a-link-secret-of-enough-length-0123456789")
    key = keys.key_for("schedule", "payments-primary")
    assert keys.check("schedule", "payments-primary", key)
    assert not keys.check("schedule", "search", key)
    assert not keys.check("user", "payments-primary", key)
    assert not keys.check("schedule", "payments-primary", key[:-2])
    assert not keys.check("schedule", "payments-primary", "")
    assert not keys.check("schedule", "payments-primary", "not base64 !!")
    assert feed_path("schedule", "payments-primary", key) == \
        f"/calendars/schedules/payments-primary.ics?key={key}"


def test_a_new_link_secret_invalidates_every_key():
    key = CalendarKeys("the-old-link-secret-0123456789abcdef").key_for("user", "alice")
    assert not CalendarKeys("the-new-link-secret-0123456789abcdef").check("user", "alice", key)


def test_the_feed_window_keeps_the_real_start_of_the_shift_running_at_its_edge():
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)     # window from Nov 13 12:00 to Jan 15
    shown = feed_shifts(PAYMENTS, now)
    assert shown[0].starts_at == datetime(2026, 11, 9, 8, tzinfo=UTC)    # bob's week, not cut
    assert shown[-1].ends_at == now + timedelta(weeks=8)
    a_day_later = feed_shifts(PAYMENTS, now + timedelta(days=1))
    assert {shift_uid("payments-primary", s) for s in shown[:-1]} <= {
        shift_uid("payments-primary", s) for s in a_day_later}
