"""A responder works an incident through the REST API; each change reaches the linked ServiceNow
incident and Jira issue on the engine's next cycle."""

from __future__ import annotations

from tests.api.conftest import OTHER_TOKEN

def test_creating_an_incident_answers_201_and_opens_tickets_in_both_systems(api_world):
    answer = api_world.api("POST", "/api/v1/incidents", json={
        "title": "Payments API 5xx", "description": "error rate 12%", "priority": "P2",
        "urgency": "high", "service": "payments"}, headers={"X-Syncd-Actor": "dana"})
    # The actor is the token's name: a header cannot claim to be someone else (invariant 9).
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert (created["title"], created["status"], created["priority"]) == \
        ("Payments API 5xx", "triggered", "P2")
    assert created["fields"]["service"] == "payments" and created["version"] == 1
    assert created["links"] == []
    assert [(e["kind"], e["actor"], e["source"]) for e in created["timeline"]] == \
        [("incident_created", "ops-bot", "api")]

    api_world.engine.run_cycle()
    detail = api_world.api("GET", f"/api/v1/incidents/{created['id']}").json()
    links = {link["connector"]: link for link in detail["links"]}
    assert set(links) == {"servicenow", "jira"}
    issue = api_world.jira.get_issue(links["jira"]["remote_key"])
    assert issue["fields"]["summary"] == f"[SYN-{created['id']}] Payments API 5xx"
    assert issue["fields"]["priority"]["name"] == "High"
    record = api_world.sn.get_incident(links["servicenow"]["remote_id"])
    assert record["short_description"] == "Payments API 5xx" and record["priority"] == "2"
    assert links["servicenow"]["remote_key"] == record["number"]
    assert links["servicenow"]["url"] and links["jira"]["url"]


INVALID_NEW_INCIDENTS = [({}, "title"), ({"title": ""}, "title"), ({"title": "   "}, "title"),
                         ({"title": 5}, "title"), ({"title": "x", "priority": "P0"}, "priority"),
                         ({"title": "x", "urgency": "medium"}, "urgency"),
                         ({"title": "x", "description": None}, "description")]


def test_an_invalid_new_incident_is_422_naming_the_field_and_changes_nothing(api_world):
    for body, field in INVALID_NEW_INCIDENTS:
        answer = api_world.api("POST", "/api/v1/incidents", json=body)
        assert answer.status_code == 422, f"{body}: {answer.status_code} {answer.text}"
        assert [error["loc"][-1] for error in answer.json()["detail"]] == [field], body
    assert api_world.api("GET", "/api/v1/incidents").json() == {"incidents": []}


def test_a_body_that_is_not_json_is_422(api_world):
    answer = api_world.api("POST", "/api/v1/incidents", content=b"{title: x",
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["type"] == "json_invalid"


def test_listing_filters_by_status_newest_first_and_bounds_the_limit(api_world):
    for title in ("disk full", "queue backlog", "cert expiry"):
        assert api_world.api("POST", "/api/v1/incidents", json={"title": title}).status_code == 201
    api_world.api("POST", "/api/v1/incidents/2/acknowledge")

    listed = api_world.api("GET", "/api/v1/incidents").json()["incidents"]
    assert [i["title"] for i in listed] == ["cert expiry", "queue backlog", "disk full"]
    assert set(listed[0]) == {"id", "number", "title", "status", "priority", "updated_at",
                              "version"}
    acknowledged = api_world.api("GET", "/api/v1/incidents", params={"status": "acknowledged"})
    assert [i["title"] for i in acknowledged.json()["incidents"]] == ["queue backlog"]
    page = api_world.api("GET", "/api/v1/incidents", params={"limit": 1, "offset": 1})
    assert [i["title"] for i in page.json()["incidents"]] == ["queue backlog"]
    assert len(api_world.api("GET", "/api/v1/incidents",
                             params={"limit": 1000}).json()["incidents"]) == 3

    for params in ({"limit": 0}, {"limit": 1001}, {"limit": -5}, {"offset": -1}):
        refused = api_world.api("GET", "/api/v1/incidents", params=params)
        assert refused.status_code == 400, params
        assert "limit must be 1..1000" in refused.json()["detail"]
    bad_status = api_world.api("GET", "/api/v1/incidents", params={"status": "open"})
    assert bad_status.status_code == 422
    assert bad_status.json()["detail"][0]["loc"] == ["query", "status"]


def test_an_unknown_incident_is_404_for_every_call(api_world):
    for method, path, body in [("GET", "/api/v1/incidents/999", None),
                               ("POST", "/api/v1/incidents/999/acknowledge", None),
                               ("POST", "/api/v1/incidents/999/resolve", {"resolution": "x"}),
                               ("POST", "/api/v1/incidents/999/notes", {"body": "x"})]:
        answer = api_world.api(method, path, json=body)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json() == {"detail": "incident 999 does not exist"}
    assert api_world.api("GET", "/api/v1/incidents/not-a-number").status_code == 422


def test_acknowledging_moves_servicenow_to_in_progress_and_jira_through_its_transition(api_world):
    sys_id = api_world.raise_sn_incident()
    answer = api_world.api("POST", "/api/v1/incidents/1/acknowledge",
                           headers={"X-Syncd-Actor": "bob"})
    assert answer.status_code == 200, answer.text
    incident = answer.json()
    assert incident["status"] == "acknowledged" and incident["acknowledged_at"]
    assert incident["timeline"][-1]["kind"] == "fields_changed"
    assert incident["timeline"][-1]["actor"] == "ops-bot"
    assert incident["timeline"][-1]["text"] == "status triggered → acknowledged in api by ops-bot"
    assert incident["timeline"][-1]["data"]["changes"]["status"] == \
        {"from": "triggered", "to": "acknowledged"}

    api_world.engine.run_cycle()
    assert api_world.sn.get_incident(sys_id)["state"] == "2"
    assert api_world.jira_issue()["fields"]["status"]["name"] == "In Progress"

    again = api_world.api("POST", "/api/v1/incidents/1/acknowledge")
    assert again.status_code == 200 and again.json()["version"] == incident["version"], \
        "acknowledging twice must change nothing"

    api_world.api("POST", "/api/v1/incidents/1/resolve")
    refused = api_world.api("POST", "/api/v1/incidents/1/acknowledge")
    assert refused.status_code == 409 and "is resolved" in refused.json()["detail"]


def test_resolving_with_a_resolution_closes_servicenow_and_jira(api_world):
    sys_id = api_world.raise_sn_incident()
    answer = api_world.api("POST", "/api/v1/incidents/1/resolve",
                           json={"resolution": "failed over to the replica"})
    assert answer.status_code == 200, answer.text
    incident = answer.json()
    assert incident["status"] == "resolved" and incident["resolved_at"]
    assert incident["fields"]["resolution"] == "failed over to the replica"

    api_world.engine.run_cycle()
    record = api_world.sn.get_incident(sys_id)
    assert record["state"] == "6"
    assert record["close_notes"] == "failed over to the replica" and record["close_code"]
    issue = api_world.jira_issue()
    assert issue["fields"]["status"]["name"] == "Done"
    assert issue["fields"]["resolution"]["name"] == "Done"


def test_resolving_without_a_body_uses_the_default_close_notes(api_world):
    sys_id = api_world.raise_sn_incident()
    assert api_world.api("POST", "/api/v1/incidents/1/resolve").json()["status"] == "resolved"
    api_world.engine.run_cycle()
    record = api_world.sn.get_incident(sys_id)
    assert record["state"] == "6" and record["close_notes"].startswith("Resolved in syncd")


def test_notes_go_out_as_work_notes_or_customer_comments_by_visibility(api_world):
    sys_id = api_world.raise_sn_incident()
    internal = api_world.api("POST", "/api/v1/incidents/1/notes",
                             json={"body": "primary restarted"}, headers={"X-Syncd-Actor": "bob"})
    assert internal.status_code == 201, internal.text
    assert internal.json()["visibility"] == "internal"
    public = api_world.client.post("/api/v1/incidents/1/notes",
                                   json={"body": "We are investigating.", "visibility": "public"},
                                   headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
    assert public.status_code == 201 and public.json()["visibility"] == "public"
    for bad, field in [({"body": ""}, "body"), ({"body": " \n"}, "body"), ({}, "body"),
                       ({"body": "x", "visibility": "secret"}, "visibility")]:
        refused = api_world.api("POST", "/api/v1/incidents/1/notes", json=bad)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == field

    api_world.engine.run_cycle()
    journal = {(e["element"], e["value"]) for e in api_world.sn.journal(sys_id)}
    assert ("work_notes", "primary restarted") in journal
    assert ("comments", "We are investigating.") in journal
    jira_bodies = [c["body"] for c in api_world.jira.comments(api_world.link("jira").remote_key)]
    assert sorted(jira_bodies) == ["We are investigating.", "primary restarted"]

    detail = api_world.api("GET", "/api/v1/incidents/1").json()
    assert [(c["body"], c["author"], c["visibility"], c["origin"]) for c in detail["comments"]] \
        == [("primary restarted", "ops-bot", "internal", "api"),
            ("We are investigating.", "script", "public", "api")]


def test_get_shows_fields_links_comments_and_the_timeline_of_a_synced_incident(api_world):
    sys_id = api_world.raise_sn_incident(description="p99 latency 30s")
    api_world.sn.human_add_journal(sys_id, "work_notes", "looking at the primary")
    api_world.engine.run_cycle()
    detail = api_world.api("GET", "/api/v1/incidents/1").json()
    assert detail["fields"]["title"] == "Checkout database down"
    assert detail["fields"]["description"] == "p99 latency 30s"
    assert detail["fields"]["priority"] == "P1" and detail["fields"]["urgency"] == "high"
    sn_link = next(link for link in detail["links"] if link["connector"] == "servicenow")
    assert sn_link["remote_id"] == sys_id
    assert sn_link["remote_key"] == api_world.sn.get_incident(sys_id)["number"]
    assert [c["body"] for c in detail["comments"]] == ["looking at the primary"]
    assert detail["comments"][0]["origin"] == "servicenow"
    kinds = [entry["kind"] for entry in detail["timeline"]]
    assert kinds[:2] == ["incident_created", "linked"]
    assert all(entry["at"] and entry["source"] for entry in detail["timeline"])
