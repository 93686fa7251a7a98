"""An operator's view of deliveries that gave up: the dead-letter list says why, and a retry after
the cause is fixed delivers the change."""

from __future__ import annotations

import re


def test_a_refused_jira_transition_is_listed_with_its_reason_and_delivered_on_retry(api_world):
    sys_id = api_world.raise_sn_incident()
    # A Jira admin edits the workflow: nothing leads to "In Progress" any more.
    workflow = list(api_world.jira.transitions)
    api_world.jira.transitions = [t for t in workflow if t["to"] != "In Progress"]

    api_world.api("POST", "/api/v1/incidents/1/acknowledge")
    api_world.engine.run_cycle()
    assert api_world.sn.get_incident(sys_id)["state"] == "2", "ServiceNow must not be held up"
    assert api_world.jira_issue()["fields"]["status"]["name"] == "To Do"

    listed = api_world.api("GET", "/api/v1/dead-letters")
    assert listed.status_code == 200
    [dead] = listed.json()["dead_letters"]
    assert (dead["incident_id"], dead["connector"], dead["state"], dead["attempts"]) == \
        (1, "jira", "dead", 1)
    assert dead["fields"]["status"] == "acknowledged"
    assert "no transition" in dead["last_error"] and "In Progress" in dead["last_error"]
    assert api_world.api("GET", "/api/v1/dead-letters",
                         params={"connector": "servicenow"}).json() == {"dead_letters": []}
    metrics = api_world.client.get("/metrics").text
    assert re.search(r'^syncd_dead_letters\{connector="jira"\} 1\.0$', metrics, re.M)

    api_world.jira.transitions = workflow          # the admin puts the transition back
    retried = api_world.api("POST", f"/api/v1/dead-letters/{dead['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert (retried.json()["id"], retried.json()["state"], retried.json()["attempts"]) == \
        (dead["id"], "pending", 0)
    assert api_world.api("GET", "/api/v1/dead-letters").json() == {"dead_letters": []}
    api_world.engine.run_cycle()
    assert api_world.jira_issue()["fields"]["status"]["name"] == "In Progress"
    assert api_world.api("GET", "/api/v1/dead-letters").json() == {"dead_letters": []}

    again = api_world.api("POST", f"/api/v1/dead-letters/{dead['id']}/retry")
    assert again.status_code == 404, "a delivered row is no dead letter to retry"


def test_retrying_an_unknown_dead_letter_is_404_naming_it(api_world):
    answer = api_world.api("POST", "/api/v1/dead-letters/4242/retry")
    assert answer.status_code == 404
    assert "dead letter 4242" in answer.json()["detail"]
    assert "in-7" in api_world.api("POST", "/api/v1/dead-letters/in-7/retry").json()["detail"]
    malformed = api_world.api("POST", "/api/v1/dead-letters/x/retry")
    assert malformed.status_code == 404 and "out-12 or in-3" in malformed.json()["detail"]


def test_a_jira_status_the_mapping_does_not_know_is_a_dead_letter_until_retried(api_world):
    api_world.raise_sn_incident()
    key = api_world.link("jira").remote_key
    # The Jira project gains a status nobody added to syncd's mapping.
    api_world.jira.statuses.append({"id": "10100", "name": "Waiting for Vendor",
                                    "category": "indeterminate"})
    api_world.jira.transitions.append({"id": "61", "name": "Wait", "from": ["To Do"],
                                       "to": "Waiting for Vendor"})
    api_world.jira.human_transition(key, "Waiting for Vendor")
    api_world.engine.run_cycle()

    [dead] = api_world.api("GET", "/api/v1/dead-letters").json()["dead_letters"]
    assert (dead["connector"], dead["operation"], dead["incident_id"]) == ("jira", "inbound", 1)
    assert "Waiting for Vendor" in dead["last_error"], dead["last_error"]
    assert api_world.api("GET", "/api/v1/incidents/1").json()["status"] == "triggered"

    api_world.jira.transitions.append({"id": "71", "name": "Work", "from": ["Waiting for Vendor"],
                                       "to": "In Progress"})
    api_world.jira.human_transition(key, "In Progress")
    assert api_world.api("POST", f"/api/v1/dead-letters/{dead['id']}/retry").status_code == 200
    api_world.engine.run_cycle()
    assert api_world.api("GET", "/api/v1/incidents/1").json()["status"] == "acknowledged"
    assert api_world.api("GET", "/api/v1/dead-letters").json() == {"dead_letters": []}
