"""Regression tests from the review of issue 11.

Bad or odd input must be 400 (or accepted), never a 500 that leaks an exception."""
import json

import pytest
from fastapi.testclient import TestClient

from tests.alerts.conftest import KEYS, event


def _raw(world, body: bytes, path="/v2/enqueue"):
    client = TestClient(world.app, raise_server_exceptions=__import__("os").environ.get("RAISE") == "1")
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


def test_deeply_nested_json_is_400_not_500(world):
    body = b'{"routing_key": "%s", "event_action": "trigger", "payload": {"custom_details": ' \
        % KEYS["none"].encode() + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    assert len(body) < 512 * 1024
    answer = _raw(world, body)
    assert answer.status_code == 400, (answer.status_code, answer.text[:200])


def test_nan_in_custom_details_is_refused_or_stored(world):
    body = json.dumps(event("none", custom_details={"load": float("nan")})).encode()
    answer = _raw(world, body)
    assert answer.status_code in (202, 400), (answer.status_code, answer.text[:200])


def test_nul_character_in_summary_is_refused_or_stored(world):
    body = json.dumps(event("none", summary="disk\u0000full")).encode()
    answer = _raw(world, body)
    assert answer.status_code in (202, 400), (answer.status_code, answer.text[:200])


def test_lone_surrogate_in_summary_is_refused_or_stored(world):
    body = b'{"routing_key": "%s", "event_action": "trigger", "payload": {"summary": ' \
        b'"disk \\ud800 full", "source": "db-1", "severity": "critical"}}' % KEYS["none"].encode()
    answer = _raw(world, body)
    assert answer.status_code in (202, 400), (answer.status_code, answer.text[:200])


@pytest.mark.parametrize("stamp", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_far_timestamps_with_offsets_are_400_or_stored(world, stamp):
    answer = _raw(world, json.dumps(event("none", timestamp=stamp)).encode())
    assert answer.status_code in (202, 400), (answer.status_code, answer.text[:200])


def test_odd_offset_is_kept_as_the_same_instant(world):
    answer = world.post(event("none", timestamp="2027-03-03T10:00:00+05:45:30"))
    assert answer.status_code == 202, answer.text
    [alert] = world.alerts()
    assert alert.occurred_at.isoformat() == "2027-03-03T04:14:30+00:00"


@pytest.mark.parametrize("length,status", [(255, 202), (256, 400)])
def test_dedup_key_length_edge(world, length, status):
    assert world.post(event("none", dedup_key="k" * length)).status_code == status
    if status == 202:
        assert world.send("none", "resolve", "k" * length)["status"] == "success"
        assert world.alerts()[0].status == "resolved"


@pytest.mark.parametrize("length,status", [(1024, 202), (1025, 400)])
def test_summary_length_edge(world, length, status):
    assert world.post(event("none", summary="é" * length)).status_code == status


def test_missing_content_length_chunked_body(world):
    def chunks():
        yield json.dumps(event("none", dedup_key="chunked")).encode()
    client = TestClient(world.app)
    answer = client.post("/v2/enqueue", content=chunks(),
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 202, answer.text
    assert [a.dedup_key for a in world.alerts()] == ["chunked"]


def test_rate_limit_refusal_changes_nothing_and_other_key_goes_on(world):
    import syncd.oncall.definitions  # noqa: F401
    for _ in range(120):
        assert world.post(event("none")).status_code == 202
    before = world.counts()
    assert world.post(event("none")).status_code == 429
    assert world.counts() == before
    assert world.post(event("time")).status_code == 202
    assert len(world.intake.rate_limit._buckets) == 2
