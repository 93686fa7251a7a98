"""Real deliveries: the simulators POST their webhooks over HTTP to syncd's app behind a real
uvicorn server, and once an incident is linked, a person's edit on one side reaches the store and
the other side through webhook hints alone (a poll in that phase fails the test)."""

from __future__ import annotations

import json
import statistics
import time

import pytest
import requests

from tests.api.conftest import JIRA_SECRET, MAX_BODY_BYTES, SN_SECRET, jira_signature, serve


def writes(sim) -> int:
    return sum(1 for r in sim.request_log() if r.method in ("POST", "PUT", "PATCH", "DELETE"))


def deliver_webhooks(world) -> int:
    """Wait for both simulators' queued webhooks to be answered, then apply the hints."""
    world.sn.webhooks.drain()
    world.jira.webhooks.drain()
    return world.engine.drain_hints()


@pytest.fixture
def live(api_world):
    with serve(api_world.app) as base_url:
        api_world.sn.webhooks.configure(f"{base_url}/webhooks/servicenow", SN_SECRET)
        api_world.jira.webhooks.configure(f"{base_url}/webhooks/jira", JIRA_SECRET)
        yield api_world, base_url


def test_human_edits_cross_between_systems_through_webhooks_alone(live, monkeypatch):
    world, _ = live
    sys_id = world.raise_sn_incident(impact="2", urgency="2")     # linked on both sides by polls
    deliver_webhooks(world)                    # the hints about those first writes: nothing new
    world.engine.deliver_all_due()
    key = world.link("jira").remote_key
    assert world.jira.get_issue(key)["fields"]["priority"]["name"] == "Medium"

    def no_poll(*args, **kwargs):
        raise AssertionError("a poll ran: this story must travel on webhooks alone")
    for runtime in world.engine.runtimes.values():
        monkeypatch.setattr(runtime.connector, "fetch_changes", no_poll)

    world.jira.human_transition(key, "In Progress")
    world.jira.human_comment(key, "shard 3 is rebuilding")
    assert deliver_webhooks(world) >= 1
    incident = world.api("GET", "/api/v1/incidents/1").json()
    assert incident["status"] == "acknowledged"
    assert [c["body"] for c in incident["comments"]] == ["shard 3 is rebuilding"]
    world.engine.deliver_all_due()
    assert world.sn.get_incident(sys_id)["state"] == "2"
    assert [e["value"] for e in world.sn.journal(sys_id)] == ["shard 3 is rebuilding"]

    world.sn.human_update(sys_id, {"impact": "1", "urgency": "1"})
    assert deliver_webhooks(world) >= 1
    assert world.api("GET", "/api/v1/incidents/1").json()["priority"] == "P1"
    world.engine.deliver_all_due()
    assert world.jira.get_issue(key)["fields"]["priority"]["name"] == "Highest"

    # syncd's own writes come back as webhooks too: they must change nothing (no echo).
    quiet = (writes(world.sn), writes(world.jira),
             world.api("GET", "/api/v1/incidents/1").json()["version"])
    for _ in range(2):
        deliver_webhooks(world)
        world.engine.deliver_all_due()
    assert (writes(world.sn), writes(world.jira),
            world.api("GET", "/api/v1/incidents/1").json()["version"]) == quiet
    assert world.sn.webhooks.failed == 0 and world.jira.webhooks.failed == 0
    assert world.sn.webhooks.delivered >= 3 and world.jira.webhooks.delivered >= 4


def test_over_real_http_bad_deliveries_are_refused(live):
    world, base_url = live
    url = f"{base_url}/webhooks/jira"
    body = json.dumps({"issue": {"id": "10000"}}).encode()
    assert requests.post(url, data=body, timeout=5,
                         headers={"X-Hub-Signature": "sha256=0"}).status_code == 401
    big = json.dumps({"issue": {"id": "10000"}, "pad": "x" * MAX_BODY_BYTES}).encode()
    signed = {"X-Hub-Signature": jira_signature(big)}
    assert requests.post(url, data=big, headers=signed, timeout=5).status_code == 413
    chunks = (big[i:i + 1000] for i in range(0, len(big), 1000))    # chunked: no Content-Length
    assert requests.post(url, data=chunks, headers=signed, timeout=5).status_code == 413
    assert requests.post(f"{base_url}/webhooks/nope", data=body, timeout=5).status_code == 404
    assert world.queued_hints() == []
    assert requests.get(f"{base_url}/healthz", timeout=5).json() == {"status": "ok"}


def test_webhook_answer_time_over_200_deliveries(live):
    """Prints the handler's answer time as a client sees it over loopback (a figure, not a test of
    speed); asserts every delivery was accepted and queued."""
    world, base_url = live
    url = f"{base_url}/webhooks/jira"
    durations = []
    with requests.Session() as session:
        for n in range(200):
            body = json.dumps({"webhookEvent": "jira:issue_updated",
                               "issue": {"id": str(20000 + n), "key": f"OPS-{n}"}}).encode()
            headers = {"X-Hub-Signature": jira_signature(body), "Content-Type": "application/json",
                       "X-Atlassian-Webhook-Identifier": f"delivery-{n}"}
            started = time.perf_counter()
            answer = session.post(url, data=body, headers=headers, timeout=5)
            durations.append(time.perf_counter() - started)
            assert answer.status_code == 202, answer.text
    assert len(world.queued_hints()) == 200
    cuts = statistics.quantiles(durations, n=100)
    print(f"\nwebhook answer time over {len(durations)} deliveries: "
          f"p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms, "
          f"max {max(durations) * 1000:.2f} ms")
