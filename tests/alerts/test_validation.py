"""Bad events get PagerDuty's answers, naming each problem, and change nothing."""

from __future__ import annotations

import pytest

from syncd.metrics import EVENTS

from .conftest import KEYS, event

INVALID = {"status": "invalid event", "message": "Event object is invalid"}


def _errors(world, body, path="/v2/enqueue"):
    before = world.counts()
    answer = world.post(body, path)
    assert answer.status_code == 400, answer.text
    assert {k: answer.json()[k] for k in ("status", "message")} == INVALID
    assert world.counts() == before, "an invalid event changed the store"
    return answer.json()["errors"]


CASES = [
    ("no routing key", {k: v for k, v in event().items() if k != "routing_key"},
     ["routing_key is required"]),
    ("bad action", {**event(), "event_action": "explode"},
     ["event_action must be one of trigger, acknowledge, resolve, got 'explode'"]),
    ("no summary", event(summary=""), ["payload.summary is required"]),
    ("no source", {**event(), "payload": {"summary": "x", "severity": "info"}},
     ["payload.source is required"]),
    ("no severity", {**event(), "payload": {"summary": "x", "source": "y"}},
     ["payload.severity is required"]),
    ("bad severity", event(severity="fatal"),
     ["payload.severity must be one of critical, error, warning, info, got 'fatal'"]),
    ("long summary", event(summary="s" * 1025),
     ["payload.summary must be at most 1024 characters, got 1025"]),
    ("long dedup key", event(dedup_key="k" * 256),
     ["dedup_key must be at most 255 characters, got 256"]),
    ("bad timestamp", event(timestamp="yesterday at noon"),
     ["payload.timestamp must be an ISO 8601 date and time like 2026-11-02T09:00:00Z, "
      "got 'yesterday at noon'"]),
    ("resolve without key", event(action="resolve"), ["dedup_key is required to resolve"]),
    ("no payload", {"routing_key": KEYS["none"], "event_action": "trigger"},
     ["payload is required for a trigger, as an object with summary, source and severity"]),
]


@pytest.mark.parametrize("body,expected", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_each_invalid_event_is_named_and_changes_nothing(world, body, expected):
    assert _errors(world, body) == expected


def test_every_problem_of_one_event_is_listed(world):
    body = {"event_action": "trigger", "dedup_key": "k" * 300,
            "payload": {"summary": "s" * 2000, "severity": "bad", "timestamp": "nope"}}
    errors = _errors(world, body)
    assert len(errors) == 6 and errors[0] == "routing_key is required"


def test_malformed_json_and_non_objects_are_400(world):
    before = world.counts()
    answer = world.client.post("/v2/enqueue", content=b"{not json",
                               headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["errors"][0].startswith("the body is not valid JSON")
    assert _errors(world, ["a", "list"]) == ["the body must be a JSON object, got list"]
    assert world.counts() == before


def test_a_body_over_512_kb_is_413(world):
    before = world.counts()
    answer = world.post(event(custom_details={"blob": "x" * (512 * 1024)}))
    assert answer.status_code == 413
    assert answer.json()["status"] == "invalid event"
    assert world.counts() == before


def test_an_unknown_routing_key_is_refused_and_counted(world):
    counted = EVENTS.labels("unknown_routing_key")._value.get()
    errors = _errors(world, {**event(), "routing_key": "not-a-key-of-any-service"})
    assert errors == ["routing_key is not the key of any service: check the integration's key"]
    assert EVENTS.labels("unknown_routing_key")._value.get() == counted + 1


def test_a_bad_change_event_is_refused(world):
    assert _errors(world, {"routing_key": KEYS["none"], "payload": {"source": "ci"}},
                   "/v2/change/enqueue") == ["payload.summary is required"]


def test_a_flood_on_one_key_is_throttled_while_another_key_goes_on(world):
    for number in range(120):
        assert world.post(event(dedup_key=f"flood-{number % 3}")).status_code == 202
    before = world.counts()
    throttled = world.post(event(dedup_key="flood-0"))
    assert throttled.status_code == 429
    assert throttled.json()["status"] == "throttle event"
    assert int(throttled.headers["retry-after"]) >= 1
    assert world.counts() == before
    assert world.post(event("time")).status_code == 202, "another routing key was slowed"
    world.clock.advance(1)                       # two more events' worth of tokens refill
    assert world.post(event(dedup_key="flood-0")).status_code == 202
