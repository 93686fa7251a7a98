"""The on-call API and the calendar feeds, through FastAPI's TestClient over a real store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from icalendar import Calendar

from syncd.api.auth import ApiToken, bearer_actor
from syncd.api.oncall import oncall_router
from syncd.clock import ManualClock
from syncd.oncall.calendar import CalendarKeys

NOW = datetime(2026, 11, 6, 12, tzinfo=UTC)          # a Friday: alice in office hours
TOKEN = "oncall-api-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS = CalendarKeys("link-secret-for-the-calendar-tests-0123")


def build_client(store, responses, keys: CalendarKeys | None = KEYS) -> TestClient:
    app = FastAPI()
    app.include_router(oncall_router(sessions=store.sessions, responses=lambda: responses,
                                     clock=ManualClock(NOW),
                                     actor=bearer_actor([ApiToken("ops-bot", TOKEN)]),
                                     calendar_keys=keys))
    return TestClient(app)


@pytest.fixture
def client(store, responses):
    with build_client(store, responses) as client:
        yield client


def test_who_is_on_call_now_with_until_and_the_next_handoffs(client):
    answer = client.get("/api/v1/oncall", params={"schedule": "payments-primary"}, headers=AUTH)
    assert answer.status_code == 200
    [payments] = answer.json()["schedules"]
    assert payments["on_call"] == {"id": "alice", "name": "Alice Adams"}
    assert payments["until"] == "2026-11-06T17:00:00+00:00"
    assert [(h["at"], h["to"] and h["to"]["id"]) for h in payments["next_handoffs"]] == [
        ("2026-11-06T17:00:00+00:00", "carol"), ("2026-11-07T08:00:00+00:00", None),
        ("2026-11-07T17:00:00+00:00", "dave")]
    assert payments["calendar"].startswith("/calendars/schedules/payments-primary.ics?key=")


def test_who_is_on_call_at_another_instant_and_for_every_schedule(client):
    answer = client.get("/api/v1/oncall", params={"at": "2026-11-07T12:00+01:00"}, headers=AUTH)
    assert answer.json()["at"] == "2026-11-07T12:00:00+01:00"
    first = answer.json()["schedules"][0]
    assert (first["id"], first["on_call"]) == ("payments-primary", None)


@pytest.mark.parametrize("params, status, message", [
    ({"at": "2026-11-07T12:00"}, 400, "has no UTC offset"),
    ({"at": "saturday"}, 400, "expected an ISO 8601 time"),
    ({"schedule": "payments-primay"}, 404, "did you mean 'payments-primary'?"),
])
def test_a_bad_question_is_answered_with_what_was_wrong(client, params, status, message):
    answer = client.get("/api/v1/oncall", params=params, headers=AUTH)
    assert answer.status_code == status
    assert message in answer.json()["detail"]


def test_the_api_needs_a_bearer_token(client):
    assert client.get("/api/v1/oncall").status_code == 401
    assert client.post("/api/v1/schedules/payments-primary/overrides", json={}).status_code == 401


def test_an_override_added_by_a_token_wins_and_can_be_removed(client):
    created = client.post("/api/v1/schedules/payments-primary/overrides", headers=AUTH, json={
        "user": "erin", "starts_at": "2026-11-06T11:00:00Z", "ends_at": "2026-11-06T14:00:00Z"})
    assert created.status_code == 201, created.text
    override = created.json()
    assert (override["user"], override["created_by"]) == ("erin", "ops-bot")
    assert override["created_at"] == NOW.isoformat()
    now = client.get("/api/v1/oncall", params={"schedule": "payments-primary"}, headers=AUTH)
    assert now.json()["schedules"][0]["on_call"]["id"] == "erin"
    listed = client.get("/api/v1/schedules/payments-primary/overrides", headers=AUTH).json()
    assert [o["id"] for o in listed["overrides"]] == [override["id"]]
    assert client.delete(f"/api/v1/schedules/search/overrides/{override['id']}",
                         headers=AUTH).status_code == 404
    removed = client.delete(f"/api/v1/schedules/payments-primary/overrides/{override['id']}",
                            headers=AUTH)
    assert removed.status_code == 200 and removed.json()["id"] == override["id"]
    assert client.delete(f"/api/v1/schedules/payments-primary/overrides/{override['id']}",
                         headers=AUTH).status_code == 404
    after = client.get("/api/v1/oncall", params={"schedule": "payments-primary"}, headers=AUTH)
    assert after.json()["schedules"][0]["on_call"]["id"] == "alice"


@pytest.mark.parametrize("path, body, status, message", [
    ("payments-primary", {"user": "alcie"}, 400, "did you mean 'alice'?"),
    ("payments-primary", {"ends_at": "2026-11-06T10:00:00Z"}, 400, "before it starts"),
    ("payments-primary", {"starts_at": "2026-11-06T11:00"}, 400, "no UTC offset"),
    ("payments-primary", {"starts_at": "2026-11-01T00:00:00Z",
                          "ends_at": "2026-11-02T00:00:00Z"}, 400, "in the past"),
    ("nope", {}, 404, "unknown schedule 'nope'"),
])
def test_an_override_that_cannot_be_meant_is_refused(client, path, body, status, message):
    answer = client.post(f"/api/v1/schedules/{path}/overrides", headers=AUTH, json={
        "user": "erin", "starts_at": "2026-11-06T11:00:00Z", "ends_at": "2026-11-06T14:00:00Z",
        **body})
    assert answer.status_code == status
    assert message in answer.json()["detail"]
    assert client.get("/api/v1/schedules/payments-primary/overrides",
                      headers=AUTH).json()["overrides"] == []


def test_a_schedule_feed_opens_with_its_key_and_shows_eight_weeks(client):
    key = KEYS.key_for("schedule", "payments-primary")
    feed = client.get("/calendars/schedules/payments-primary.ics", params={"key": key})
    assert feed.status_code == 200
    assert feed.headers["content-type"].startswith("text/calendar")
    events = list(Calendar.from_ical(feed.content).walk("VEVENT"))
    assert str(events[0]["SUMMARY"]) == "On call: Alice Adams (Payments primary)"
    assert events[0].decoded("DTSTART") == datetime(2026, 11, 2, 8, tzinfo=UTC)
    assert max(e.decoded("DTEND") for e in events) == datetime(2027, 1, 1, 12, tzinfo=UTC)


def test_a_person_feed_holds_their_shifts_and_their_overrides(client):
    client.post("/api/v1/schedules/search/overrides", headers=AUTH, json={
        "user": "erin", "starts_at": "2026-11-10T00:00:00Z", "ends_at": "2026-11-10T06:00:00Z"})
    feed = client.get("/calendars/users/erin.ics", params={"key": KEYS.key_for("user", "erin")})
    assert feed.status_code == 200
    # the override in search, and the start of the unused schedule's rotation on Jan 1
    assert [(str(e["SUMMARY"]), e.decoded("DTSTART")) for e in
            Calendar.from_ical(feed.content).walk("VEVENT")] == [
        ("On call: Erin Evans (Search)", datetime(2026, 11, 10, tzinfo=UTC)),
        ("On call: Erin Evans (Nobody pages this)", datetime(2027, 1, 1, tzinfo=UTC))]
    alice = client.get("/calendars/users/alice.ics", params={"key": KEYS.key_for("user", "alice")})
    names = {str(e["SUMMARY"]) for e in Calendar.from_ical(alice.content).walk("VEVENT")}
    assert names == {"On call: Alice Adams (Payments primary)", "On call: Alice Adams (Search)"}


@pytest.mark.parametrize("path, key, status", [
    ("/calendars/schedules/payments-primary.ics", KEYS.key_for("schedule", "search"), 403),
    ("/calendars/schedules/payments-primary.ics", "", 403),
    ("/calendars/users/alice.ics", KEYS.key_for("schedule", "alice"), 403),
    ("/calendars/schedules/gone.ics", KEYS.key_for("schedule", "gone"), 404),
    ("/calendars/users/gone.ics", KEYS.key_for("user", "gone"), 404),
])
def test_a_feed_with_a_wrong_key_is_forbidden_and_an_unknown_one_not_found(client, path, key,
                                                                            status):
    assert client.get(path, params={"key": key}).status_code == status


def test_feeds_are_off_without_a_link_secret(store, responses):
    with build_client(store, responses, keys=None) as client:
        answer = client.get("/calendars/schedules/payments-primary.ics", params={"key": "x"})
        assert answer.status_code == 404 and "link_secret" in answer.json()["detail"]
        listed = client.get("/api/v1/oncall", headers=AUTH).json()["schedules"]
        assert "calendar" not in listed[0]
