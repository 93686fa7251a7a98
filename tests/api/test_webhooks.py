"""Ticket systems calling `POST /webhooks/{connector}`: a verified delivery is a hint that the
engine re-reads (invariant 7); anything else is refused with 400/401/404/413 and queues nothing
(invariant 8)."""

from __future__ import annotations

import json

from tests.api.conftest import JIRA_SECRET, MAX_BODY_BYTES, SN_SECRET, jira_signature


def jira_event(issue_id: str, key: str = "OPS-1", **fields) -> bytes:
    return json.dumps({"timestamp": 1700000000000, "webhookEvent": "jira:issue_updated",
                       "issue_event_type_name": "issue_generic",
                       "issue": {"id": issue_id, "key": key, "fields": fields}}).encode()


def post_jira(world, body: bytes, *, signature: str | None = "sign", delivery: str | None = None,
              **headers):
    if signature == "sign":
        signature = jira_signature(body)
    if signature is not None:
        headers["X-Hub-Signature"] = signature
    if delivery is not None:
        headers["X-Atlassian-Webhook-Identifier"] = delivery
    return world.client.post("/webhooks/jira", content=body,
                             headers={"Content-Type": "application/json", **headers})


def test_a_signed_jira_delivery_queues_a_hint_that_applies_the_real_change(api_world):
    api_world.raise_sn_incident()
    issue = api_world.jira_issue()
    api_world.jira.human_transition(issue["key"], "In Progress")
    # The payload claims a priority the issue does not have: events are hints, not data.
    body = jira_event(issue["id"], issue["key"], priority={"name": "Lowest"})
    answer = post_jira(api_world, body, delivery="d-1")
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 1}
    assert api_world.queued_hints() == [("jira", issue["id"])]

    assert api_world.engine.drain_hints() == 1
    incident = api_world.api("GET", "/api/v1/incidents/1").json()
    assert incident["status"] == "acknowledged"
    assert incident["priority"] == "P1", "a payload's field values must not be trusted"


def test_a_jira_delivery_without_the_right_signature_is_401_and_queues_nothing(api_world):
    body = jira_event("10000")
    wrong = {"missing": None, "empty": "",
             "another secret": jira_signature(body, "not-the-secret"),
             "another body": jira_signature(b'{"issue": {"id": "10001"}}'),
             "sha1 scheme": "sha1=" + jira_signature(body)[len("sha256="):],
             "bare hex": jira_signature(body)[len("sha256="):]}
    for name, signature in wrong.items():
        answer = post_jira(api_world, body, signature=signature)
        assert answer.status_code == 401, f"{name}: {answer.status_code} {answer.text}"
        assert "X-Hub-Signature" in answer.json()["detail"] or \
            "signature does not match" in answer.json()["detail"], name
    assert api_world.queued_hints() == []


def test_a_rejected_delivery_does_not_use_up_its_identifier(api_world):
    body = jira_event("10000")
    assert post_jira(api_world, body, signature="sha256=00", delivery="d-7").status_code == 401
    assert post_jira(api_world, body, delivery="d-7").json() == {"accepted": 1}


def test_a_malformed_jira_body_is_400_saying_why(api_world):
    for body, reason in [(b"{not json", "not JSON"), (b"", "not JSON"),
                         (b'[{"issue": {"id": "1"}}]', "JSON object"),
                         (b'{"issue": {"key": "OPS-1"}}', "no id"),
                         (b'{"issue": {"id": true}}', "no id")]:
        answer = post_jira(api_world, body)
        assert answer.status_code == 400, f"{body!r}: {answer.status_code} {answer.text}"
        assert reason in answer.json()["detail"], body
    assert api_world.queued_hints() == []


def test_a_jira_event_about_no_issue_is_accepted_and_ignored(api_world):
    body = json.dumps({"webhookEvent": "project_updated", "project": {"key": "OPS"}}).encode()
    answer = post_jira(api_world, body)
    assert answer.status_code == 202 and answer.json() == {"accepted": 0}
    assert api_world.queued_hints() == []


def test_a_body_over_the_limit_is_413_whether_or_not_it_declares_its_length(api_world):
    padding = "x" * MAX_BODY_BYTES
    body = json.dumps({"issue": {"id": "10000"}, "padding": padding}).encode()
    declared = post_jira(api_world, body)
    assert declared.status_code == 413
    assert str(MAX_BODY_BYTES) in declared.json()["detail"]

    def chunks():
        for start in range(0, len(body), 4096):
            yield body[start:start + 4096]
    chunked = api_world.client.post("/webhooks/jira", content=chunks(),
                                    headers={"X-Hub-Signature": jira_signature(body)})
    assert chunked.status_code == 413
    assert api_world.queued_hints() == []

    at_limit = json.dumps({"issue": {"id": "10000"}, "padding": ""}).encode()
    at_limit = at_limit.replace(b'""', b'"' + b"x" * (MAX_BODY_BYTES - len(at_limit)) + b'"')
    assert len(at_limit) == MAX_BODY_BYTES
    assert post_jira(api_world, at_limit).status_code == 202


def test_an_unknown_connector_is_404_naming_it(api_world):
    body = jira_event("10000")
    answer = api_world.client.post("/webhooks/github", content=body,
                                   headers={"X-Hub-Signature": jira_signature(body)})
    assert answer.status_code == 404
    assert "github" in answer.json()["detail"]
    assert api_world.queued_hints() == []


def test_a_redelivery_with_the_same_identifier_is_a_no_op(api_world):
    body = jira_event("10000")
    assert post_jira(api_world, body, delivery="a1b2").json() == {"accepted": 1}
    again = post_jira(api_world, body, delivery="a1b2")
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicate": True}
    assert post_jira(api_world, body, delivery="c3d4").json() == {"accepted": 1}
    assert api_world.queued_hints() == [("jira", "10000"), ("jira", "10000")]


def test_the_same_identifier_on_another_connector_is_not_a_duplicate(api_world):
    body = jira_event("10000")
    post_jira(api_world, body, delivery="same-id")
    answer = api_world.client.post(
        "/webhooks/servicenow", content=json.dumps({"sys_id": "a" * 32}),
        headers={"X-Syncd-Webhook-Secret": SN_SECRET, "X-Atlassian-Webhook-Identifier": "same-id"})
    assert answer.json() == {"accepted": 1}


def test_a_servicenow_business_rule_with_the_shared_secret_is_accepted(api_world):
    sys_id = api_world.raise_sn_incident()
    api_world.sn.human_update(sys_id, {"state": "2"})
    body = json.dumps({"sys_id": sys_id, "number": "INC0010001", "operation": "update",
                       "table": "incident"})
    answer = api_world.client.post("/webhooks/servicenow", content=body,
                                   headers={"X-Syncd-Webhook-Secret": SN_SECRET,
                                            "User-Agent": "ServiceNow/1.0"})
    assert answer.status_code == 202 and answer.json() == {"accepted": 1}
    assert api_world.queued_hints() == [("servicenow", sys_id)]
    api_world.engine.drain_hints()
    assert api_world.api("GET", "/api/v1/incidents/1").json()["status"] == "acknowledged"


def test_a_servicenow_delivery_without_the_shared_secret_is_401(api_world):
    body = b'{"sys_id": "x"}'
    for headers in [{}, {"X-Syncd-Webhook-Secret": "guess"},
                    {"X-Syncd-Webhook-Secret": SN_SECRET[:-1]},
                    {"X-Hub-Signature": jira_signature(body)},
                    {"X-Syncd-Webhook-Secret": JIRA_SECRET}]:
        answer = api_world.client.post("/webhooks/servicenow", content=body, headers=headers)
        assert answer.status_code == 401, headers
        assert "X-Syncd-Webhook-Secret" in answer.json()["detail"]
    assert api_world.queued_hints() == []
