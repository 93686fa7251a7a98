"""The Jira simulator, driven by the real ``jira`` client (and plain requests where the client hides
the wire), in both deployment flavours."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from jira import JIRA, JIRAError
from jira.resources import Issue

from syncd.clock import ManualClock
from syncd.simulators.base import Fault
from syncd.simulators.jira import (SEARCH_REMOVED, UNBOUNDED_JQL, JiraError, JiraSimulator,
                                   jira_time)

START = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
LOGIN = {"Cloud": ("syncd@example.com", "syncd-api-token"), "Server": ("syncd", "syncd-api-token")}


@pytest.fixture
def clock():
    return ManualClock(START)


def start_sim(deployment, clock, **options):
    return JiraSimulator(deployment=deployment, clock=clock, **options).start()


@pytest.fixture(params=["Cloud", "Server"])
def sim(request, clock):
    simulator = start_sim(request.param, clock)
    yield simulator
    simulator.stop()


@pytest.fixture
def cloud(clock):
    simulator = start_sim("Cloud", clock)
    yield simulator
    simulator.stop()


@pytest.fixture
def server(clock):
    simulator = start_sim("Server", clock)
    yield simulator
    simulator.stop()


def client(sim, **options):
    return JIRA(server=sim.base_url, basic_auth=LOGIN[sim.deployment], max_retries=0, **options)


def http(sim):
    session = requests.Session()
    session.auth = LOGIN[sim.deployment]
    return session


def new_issue(jira, summary="Checkout is down", **fields):
    return jira.create_issue(fields={"project": {"key": "OPS"}, "issuetype": {"name": "Incident"},
                                     "summary": summary, **fields})


def settle_request_log(jira):
    """The simulator logs a request after answering it; one more call on the same keep-alive
    connection guarantees every earlier request is in the log."""
    jira.server_info()


def last_history(sim, key):
    return sim.get_issue(key)["changelog"]["histories"][-1]


# -- connecting --------------------------------------------------------------------------------

def test_connecting_asks_server_info_once_and_learns_the_deployment(sim):
    jira = client(sim)
    assert jira.deploymentType == sim.deployment
    assert jira._is_cloud is (sim.deployment == "Cloud")
    assert jira.myself()["displayName"] == "syncd integration"
    settle_request_log(jira)
    assert [r.path for r in sim.request_log()][:2] == ["/rest/api/2/serverInfo", "/rest/api/2/myself"]


def test_bearer_token_authenticates_as_its_user(sim):
    jira = JIRA(server=sim.base_url, token_auth="syncd-pat", max_retries=0)
    assert jira.myself()["emailAddress"] == "syncd@example.com"


def test_wrong_credentials_are_refused_with_401(sim):
    with pytest.raises(JIRAError) as error:
        JIRA(server=sim.base_url, basic_auth=("syncd", "wrong"), max_retries=0)
    assert error.value.status_code == 401
    answer = requests.get(sim.base_url + "/rest/api/2/myself")
    assert answer.status_code == 401
    if sim.deployment == "Cloud":
        assert answer.json() == {"message": "Client must be authenticated to access this resource.",
                                 "status-code": 401}
    else:
        assert answer.headers["X-Seraph-LoginReason"] == "AUTHENTICATED_FAILED"
        assert answer.json()["errorMessages"]


def test_fields_list_system_and_custom_fields_and_the_client_caches_them(sim):
    jira = client(sim)
    fields = {f["id"]: f for f in jira.fields()}
    assert fields["customfield_10010"]["name"] == "Customer Impact"
    assert fields["customfield_10011"]["clauseNames"] == ["cf[10011]", "Incident ID"]
    assert fields["customfield_10011"]["schema"]["customId"] == 10011
    assert fields["labels"]["schema"] == {"type": "array", "items": "string", "system": "labels"}
    searching = client(sim)
    searching.search_issues("project = OPS")
    searching.search_issues("project = OPS")
    settle_request_log(searching)
    assert sim.count_requests("GET", r"/field$") == 2      # fields() above, then one cache fill


def test_reference_data_priorities_statuses_projects(sim):
    jira = client(sim)
    assert [(p.id, p.name) for p in jira.priorities()] == [
        ("1", "Highest"), ("2", "High"), ("3", "Medium"), ("4", "Low"), ("5", "Lowest")]
    statuses = {s.name: s.statusCategory.key for s in jira.statuses()}
    assert statuses == {"To Do": "new", "In Progress": "indeterminate", "Done": "done"}
    project = jira.project("OPS")
    assert "Incident" in [t.name for t in project.issueTypes]
    assert [p.key for p in jira.projects()] == ["OPS"]
    with pytest.raises(JIRAError) as error:
        jira.project("NOPE")
    assert error.value.status_code == 404


def test_user_search_answers_in_the_deployments_own_identity(sim):
    jira = client(sim)
    if sim.deployment == "Cloud":
        [bob] = jira.search_users(query="bob")
        assert bob.accountId and not hasattr(bob, "name")
    else:
        [bob] = jira.search_users(user="bob")
        assert bob.name == "bob"
    assert bob.emailAddress == "bob@example.com" and bob.displayName == "Bob Brown"


# -- issues ------------------------------------------------------------------------------------

def test_create_answers_201_with_id_key_and_self(sim):
    answer = http(sim).post(sim.base_url + "/rest/api/2/issue", json={"fields": {
        "project": {"key": "OPS"}, "issuetype": {"name": "Incident"}, "summary": "Disk full"}})
    assert answer.status_code == 201
    assert answer.json() == {"id": "10000", "key": "OPS-1",
                             "self": sim.base_url + "/rest/api/2/issue/10000"}


def test_create_issue_through_the_client_with_names_and_custom_fields(sim, clock):
    jira = client(sim)
    clock.advance(90.5)
    issue = jira.create_issue(project="OPS", issuetype="Incident", summary="Checkout is down",
                              description="500s since 10:00", priority={"name": "High"},
                              labels=["sev1"], customfield_10010="All EU shoppers",
                              customfield_10011="INC-42")
    settle_request_log(jira)
    assert sim.count_requests("GET", r"/project/(OPS|10000)$") == 2   # by key, then its issue types
    assert issue.key == "OPS-1" and issue.fields.status.name == "To Do"
    assert issue.fields.status.statusCategory.key == "new"
    assert issue.fields.priority.name == "High" and issue.fields.labels == ["sev1"]
    assert issue.fields.description == "500s since 10:00"
    assert issue.fields.customfield_10011 == "INC-42"
    assert issue.fields.created == issue.fields.updated == "2026-01-01T10:01:30.500+0000"
    assert issue.fields.reporter.displayName == "syncd integration"
    assert issue.fields.resolution is None


def test_create_refuses_missing_and_unknown_fields_naming_them(sim):
    session = http(sim)
    answer = session.post(sim.base_url + "/rest/api/2/issue", json={"fields": {
        "project": {"key": "OPS"}, "issuetype": {"name": "Incident"}}})
    assert answer.status_code == 400
    assert answer.json() == {"errorMessages": [],
                             "errors": {"summary": "You must specify a summary of the issue."}}
    answer = session.post(sim.base_url + "/rest/api/2/issue", json={"fields": {
        "project": {"key": "OPS"}, "issuetype": {"name": "Incident"}, "summary": "x", "colour": 1}})
    assert answer.status_code == 400 and "colour" in answer.json()["errors"]
    assert not sim.issues


def test_get_issue_with_fields_and_changelog(sim):
    jira = client(sim)
    issue = new_issue(jira)
    only = jira.issue(issue.key, fields="summary,labels")
    assert set(only.raw["fields"]) == {"summary", "labels"}
    assert jira.issue(issue.id).key == issue.key
    with_log = jira.issue(issue.key, expand="changelog")
    assert with_log.changelog.total == 0
    with pytest.raises(JIRAError) as error:
        jira.issue("OPS-999")
    assert error.value.status_code == 404
    assert error.value.text == "Issue does not exist or you do not have permission to see it."


def test_update_puts_to_the_self_url_and_records_a_changelog(sim, clock):
    jira = client(sim)
    issue = new_issue(jira, priority={"name": "Medium"})
    sim.clear_request_log()
    clock.advance(60)
    issue.update(fields={"summary": "Checkout is down in EU", "priority": {"name": "Highest"},
                         "customfield_10010": "EU shoppers"})
    settle_request_log(jira)
    puts = [r for r in sim.request_log() if r.method == "PUT"]
    assert [(r.path, r.status) for r in puts] == [("/rest/api/2/issue/10000", 204)]
    assert issue.fields.summary == "Checkout is down in EU"
    assert issue.fields.updated == "2026-01-01T10:01:00.000+0000"
    history = last_history(sim, issue.key)
    assert history["author"]["displayName"] == "syncd integration"
    items = {i["fieldId"]: i for i in history["items"]}
    assert items["summary"] == {"field": "summary", "fieldtype": "jira", "fieldId": "summary",
                                "from": None, "fromString": "Checkout is down", "to": None,
                                "toString": "Checkout is down in EU"}
    assert (items["priority"]["from"], items["priority"]["toString"]) == ("3", "Highest")
    assert items["customfield_10010"]["field"] == "Customer Impact"
    assert items["customfield_10010"]["fieldtype"] == "custom"


def test_an_edit_that_changes_nothing_leaves_updated_alone(sim, clock):
    jira = client(sim)
    issue = new_issue(jira)
    clock.advance(60)
    issue.update(fields={"summary": "Checkout is down"})
    assert issue.fields.updated == jira_time(START)
    assert sim.get_issue(issue.key)["changelog"]["total"] == 0


def test_label_update_operations_add_and_remove(sim):
    jira = client(sim)
    issue = new_issue(jira, labels=["sev1", "eu"])
    issue.add_field_value("labels", "syncd-abc")
    issue.update(update={"labels": [{"remove": "eu"}]})
    assert jira.issue(issue.key).fields.labels == ["sev1", "syncd-abc"]
    labels = last_history(sim, issue.key)["items"][0]
    assert (labels["fromString"], labels["toString"]) == ("sev1 eu syncd-abc", "sev1 syncd-abc")


def test_assignee_takes_name_on_server_and_account_id_on_cloud(sim):
    jira = client(sim)
    issue = new_issue(jira)
    bob = next(u for u in sim.users if u["name"] == "bob")
    if sim.deployment == "Server":
        issue.update(assignee="bob")                       # the client sends {"name": "bob"}
    else:
        with pytest.raises(JIRAError) as error:
            issue.update(assignee="bob")
        assert error.value.status_code == 400 and "accountId" in error.value.text
        issue.update(fields={"assignee": {"accountId": bob["accountId"]}})
    assert issue.fields.assignee.displayName == "Bob Brown"
    item = last_history(sim, issue.key)["items"][0]
    assert item["to"] == (bob["accountId"] if sim.deployment == "Cloud" else "bob")
    jira.assign_issue(issue.key, "alice")                  # PUT /rest/api/latest/issue/{key}/assignee
    assert jira.issue(issue.key).fields.assignee.displayName == "Alice Adams"
    jira.assign_issue(issue.key, None)
    assert jira.issue(issue.key).fields.assignee is None


def test_description_is_a_string_on_v2_and_a_document_on_v3(cloud, server):
    jira = client(cloud)
    issue = new_issue(jira, description="line one\nline two")
    v3 = http(cloud).get(cloud.base_url + f"/rest/api/3/issue/{issue.key}").json()
    assert v3["fields"]["description"]["type"] == "doc"
    assert [p["content"][0]["text"] for p in v3["fields"]["description"]["content"]] == [
        "line one", "line two"]
    assert v3["self"] == cloud.base_url + "/rest/api/3/issue/10000"
    answer = http(cloud).put(cloud.base_url + f"/rest/api/3/issue/{issue.key}", json={"fields": {
        "description": {"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "rewritten"}]}]}}})
    assert answer.status_code == 204
    assert jira.issue(issue.key).fields.description == "rewritten"
    assert http(server).get(server.base_url + "/rest/api/3/myself").status_code == 404


def test_delete_removes_the_issue(sim):
    jira = client(sim)
    issue = new_issue(jira)
    issue.delete()
    with pytest.raises(JIRAError):
        jira.issue(issue.key)


def test_entity_properties_carry_a_correlation_id(sim):
    jira = client(sim)
    issue = new_issue(jira)
    assert jira.add_issue_property(issue.key, "syncd", {"correlationId": "c-1"}).status_code == 201
    assert jira.add_issue_property(issue.key, "syncd", {"correlationId": "c-2"}).status_code == 200
    assert jira.issue_property(issue.key, "syncd").value.correlationId == "c-2"
    assert [p.key for p in jira.issue_properties(issue.key)] == ["syncd"]
    answer = http(sim).get(sim.base_url + f"/rest/api/2/issue/{issue.key}/properties/other")
    assert answer.status_code == 404
    assert answer.json()["errorMessages"] == ["The property with key 'other' does not exist."]


# -- workflow ----------------------------------------------------------------------------------

def test_transitions_follow_the_workflow_and_set_and_clear_resolution(sim, clock):
    jira = client(sim)
    issue = new_issue(jira)
    assert [(t["id"], t["to"]["name"]) for t in jira.transitions(issue.key)] == [
        ("21", "In Progress"), ("31", "Done")]
    clock.advance(120)
    jira.transition_issue(issue.key, "Done")               # by name: GET transitions, POST id 31
    done = jira.issue(issue.key)
    assert done.fields.status.name == "Done" and done.fields.status.statusCategory.key == "done"
    assert done.fields.resolution.name == "Done"
    assert done.fields.resolutiondate == done.fields.updated == "2026-01-01T10:02:00.000+0000"
    items = {i["field"]: i for i in last_history(sim, issue.key)["items"]}
    assert (items["status"]["fromString"], items["status"]["toString"]) == ("To Do", "Done")
    assert (items["status"]["from"], items["status"]["to"]) == ("10000", "10001")
    assert items["resolution"]["toString"] == "Done"
    assert [t["name"] for t in jira.transitions(issue.key)] == ["Reopen", "Back to In Progress"]
    jira.transition_issue(issue.key, "41")
    reopened = jira.issue(issue.key)
    assert reopened.fields.status.name == "To Do"
    assert reopened.fields.resolution is None and reopened.fields.resolutiondate is None


def test_transition_fields_choose_the_resolution(sim):
    jira = client(sim)
    issue = new_issue(jira)
    jira.transition_issue(issue.key, "Done", fields={"resolution": {"name": "Won't Do"}},
                          comment="Duplicate alert")
    issue = jira.issue(issue.key)
    assert issue.fields.resolution.name == "Won't Do"
    assert [c.body for c in jira.comments(issue.key)] == ["Duplicate alert"]


def test_unavailable_transition_is_400_with_jiras_message(sim):
    jira = client(sim)
    issue = new_issue(jira)
    answer = http(sim).post(sim.base_url + f"/rest/api/2/issue/{issue.key}/transitions",
                            json={"transition": {"id": "41"}})
    assert answer.status_code == 400
    assert answer.json() == {"errorMessages": ["Transition id '41' is not valid for this issue."],
                             "errors": {}}


def test_a_configured_workflow_replaces_the_default(clock):
    workflow = {"statuses": [{"id": "1", "name": "Open", "category": "new"},
                             {"id": "6", "name": "Closed", "category": "done"}],
                "transitions": [{"id": "2", "name": "Close Issue", "from": ["Open"], "to": "Closed"},
                                {"id": "3", "name": "Reopen Issue", "to": "Open"}]}
    sim = start_sim("Server", clock, workflow=workflow)
    try:
        jira = client(sim)
        issue = new_issue(jira)
        assert issue.fields.status.name == "Open"
        jira.transition_issue(issue.key, "Close Issue")
        assert [t["name"] for t in jira.transitions(issue.key)] == ["Reopen Issue"]
    finally:
        sim.stop()
    with pytest.raises(ValueError, match="unknown status 'Gone'"):
        JiraSimulator(workflow={"statuses": workflow["statuses"],
                                "transitions": [{"id": "9", "name": "x", "to": "Gone"}]})


# -- comments ----------------------------------------------------------------------------------

def test_comments_keep_visibility_and_author_and_move_updated(sim, clock):
    jira = client(sim)
    issue = new_issue(jira)
    clock.advance(30)
    comment = jira.add_comment(issue.key, "Rolled back the deploy",
                               visibility={"type": "role", "value": "Developers"})
    assert comment.author.displayName == "syncd integration"
    assert comment.visibility.type == "role" and comment.visibility.value == "Developers"
    listed = http(sim).get(sim.base_url + f"/rest/api/2/issue/{issue.key}/comment").json()
    assert {k: listed[k] for k in ("startAt", "total")} == {"startAt": 0, "total": 1}
    assert listed["comments"][0]["body"] == "Rolled back the deploy"
    assert listed["comments"][0]["self"].endswith(f"/issue/10000/comment/{comment.id}")
    assert jira.issue(issue.key).fields.updated == "2026-01-01T10:00:30.000+0000"
    assert sim.get_issue(issue.key)["changelog"]["total"] == 0
    comment.update(body="Rolled back the deploy to v41")     # PUT to the comment's self URL
    assert [c.body for c in jira.comments(issue.key)] == ["Rolled back the deploy to v41"]
    answer = http(sim).post(sim.base_url + f"/rest/api/2/issue/{issue.key}/comment",
                            json={"body": "x", "visibility": {"type": "role", "value": "Ghosts"}})
    assert answer.status_code == 400


def test_changelog_endpoint_pages_on_cloud_and_is_absent_on_server(cloud, server):
    jira = client(cloud)
    issue = new_issue(jira)
    for n in range(3):
        issue.update(summary=f"edit {n}")
    page = http(cloud).get(cloud.base_url + f"/rest/api/2/issue/{issue.key}/changelog",
                           params={"startAt": 1, "maxResults": 1}).json()
    assert (page["startAt"], page["maxResults"], page["total"], page["isLast"]) == (1, 1, 3, False)
    assert page["values"][0]["items"][0]["toString"] == "edit 1"
    assert http(server).get(server.base_url + "/rest/api/2/issue/OPS-1/changelog").status_code == 404


# -- search ------------------------------------------------------------------------------------

def test_server_search_pages_with_start_at_and_total(server):
    jira = client(server, default_batch_sizes={Issue: 2})
    for n in range(5):
        new_issue(jira, summary=f"issue {n}")
    first = jira.search_issues("project = OPS ORDER BY key ASC", maxResults=2)
    assert [i.key for i in first] == ["OPS-1", "OPS-2"] and first.total == 5
    settle_request_log(jira)
    server.clear_request_log()
    everything = jira.search_issues("project = OPS ORDER BY key ASC", maxResults=False)
    assert [i.key for i in everything] == [f"OPS-{n}" for n in range(1, 6)]
    settle_request_log(jira)
    assert server.count_requests("GET", r"/rest/api/2/search$") == 3
    raw = http(server).get(server.base_url + "/rest/api/2/search",
                           params={"jql": "project = OPS", "fields": "summary", "startAt": 4}).json()
    assert (raw["startAt"], raw["maxResults"], raw["total"]) == (4, 50, 5)
    assert set(raw["issues"][0]["fields"]) == {"summary"}


def test_cloud_search_follows_next_page_token(cloud):
    jira = client(cloud)
    for n in range(5):
        new_issue(jira, summary=f"issue {n}")
    cloud.clear_request_log()
    everything = jira.search_issues("project = OPS ORDER BY key ASC", maxResults=False)
    assert [i.key for i in everything] == [f"OPS-{n}" for n in range(1, 6)]
    assert everything[0].fields.summary == "issue 0"
    settle_request_log(jira)
    assert cloud.count_requests("GET", r"/rest/api/2/search/jql$") == 1
    page = jira.enhanced_search_issues("project = OPS ORDER BY key ASC", maxResults=2)
    keys = [i.key for i in page]
    while page.nextPageToken:
        page = jira.enhanced_search_issues("project = OPS ORDER BY key ASC", maxResults=2,
                                           nextPageToken=page.nextPageToken)
        keys += [i.key for i in page]
    assert keys == [f"OPS-{n}" for n in range(1, 6)]
    raw = http(cloud).post(cloud.base_url + "/rest/api/3/search/jql",
                           json={"jql": "project = OPS", "maxResults": 4}).json()
    assert raw["issues"][0] == {"id": raw["issues"][0]["id"]}     # fields default to id only
    assert raw["isLast"] is False and "total" not in raw and "startAt" not in raw
    rest = http(cloud).get(cloud.base_url + "/rest/api/3/search/jql", params={
        "jql": "project = OPS", "maxResults": 4, "nextPageToken": raw["nextPageToken"]}).json()
    assert rest["isLast"] is True and "nextPageToken" not in rest and len(rest["issues"]) == 1
    forged = http(cloud).get(cloud.base_url + "/rest/api/3/search/jql", params={
        "jql": "project = OTHER", "nextPageToken": raw["nextPageToken"]})
    assert forged.status_code == 400


def test_search_by_post_in_either_flavour(sim):
    jira = client(sim)
    for n in range(3):
        new_issue(jira, summary=f"issue {n}", labels=["x"] if n else [])
    found = jira.search_issues("labels = x ORDER BY key DESC", fields=["summary"], use_post=True)
    assert [(i.key, i.fields.summary) for i in found] == [("OPS-3", "issue 2"), ("OPS-2", "issue 1")]
    settle_request_log(jira)
    path = "/rest/api/2/search/jql$" if sim.deployment == "Cloud" else "/rest/api/2/search$"
    assert sim.count_requests("POST", path) == 1


@pytest.mark.parametrize("path", ["/rest/api/2/search", "/rest/api/3/search"])
def test_cloud_answers_the_removed_search_with_410(cloud, path):
    answer = http(cloud).get(cloud.base_url + path, params={"jql": "project = OPS"})
    assert answer.status_code == 410
    assert answer.json() == {"errorMessages": [SEARCH_REMOVED], "errors": {}}
    assert SEARCH_REMOVED.startswith("The requested API has been removed. Please migrate to the "
                                     "/rest/api/3/search/jql API.")


def test_cloud_refuses_an_unbounded_query_server_does_not(cloud, server):
    answer = http(cloud).get(cloud.base_url + "/rest/api/3/search/jql",
                             params={"jql": "ORDER BY updated DESC"})
    assert answer.status_code == 400
    assert answer.json() == {"errorMessages": [UNBOUNDED_JQL], "errors": {}}
    assert http(server).get(server.base_url + "/rest/api/2/search",
                            params={"jql": "ORDER BY updated DESC"}).status_code == 200
    assert http(server).get(server.base_url + "/rest/api/2/search/jql",
                            params={"jql": "project = OPS"}).status_code == 404


@pytest.fixture(scope="module")
def story():
    """Five issues, one a minute from 10:00:30, with labels, statuses and types to filter on.
    Shared by the read-only JQL cases."""
    clock = ManualClock(START)
    server = start_sim("Server", clock)
    jira = client(server)
    specs = [("Task", ["a"], None), ("Incident", ["b"], "In Progress"), ("Incident", [], "Done"),
             ("Bug", ["a", "b"], None), ("Incident", ["c"], "In Progress")]
    clock.advance(30)
    for n, (issue_type, labels, status) in enumerate(specs, start=1):
        new_issue(jira, summary=f"issue {n}", issuetype={"name": issue_type}, labels=labels)
        if status:
            server.human_transition(f"OPS-{n}", status)
        clock.advance(60)
    server.human_update("OPS-1", {"summary": "issue 1 again"})     # OPS-1 now updated 10:05:30
    yield server
    server.stop()


def search_keys(sim, jql):
    answer = http(sim).get(sim.base_url + "/rest/api/2/search", params={"jql": jql, "fields": "key"})
    assert answer.status_code == 200, answer.text
    return [i["key"] for i in answer.json()["issues"]]


@pytest.mark.parametrize("jql, keys", [
    ('project = OPS ORDER BY key ASC', ["OPS-1", "OPS-2", "OPS-3", "OPS-4", "OPS-5"]),
    ('updated >= "2026/01/01 10:02" ORDER BY updated ASC, key ASC', ["OPS-3", "OPS-4", "OPS-5", "OPS-1"]),
    ('updated >= "2026-01-01 10:02" AND updated < "2026-01-01 10:04" ORDER BY key', ["OPS-3", "OPS-4"]),
    ('updated > "2026/01/01 10:02" ORDER BY key', ["OPS-1", "OPS-4", "OPS-5"]),
    ('updated <= "2026/01/01 10:01" ORDER BY key', ["OPS-2"]),
    ('updated = "2026/01/01 10:03" ORDER BY key', ["OPS-4"]),
    ('created >= "2026/01/01" AND created < "2026/01/01 10:01" ORDER BY key', ["OPS-1"]),
    ('labels = a ORDER BY key', ["OPS-1", "OPS-4"]),
    ('labels != a ORDER BY key', ["OPS-2", "OPS-5"]),
    ('labels in (b, c) ORDER BY key', ["OPS-2", "OPS-4", "OPS-5"]),
    ('labels is EMPTY', ["OPS-3"]),
    ('key in (OPS-2, "OPS-4") ORDER BY key DESC', ["OPS-4", "OPS-2"]),
    ('id in (10000, 10004) ORDER BY key', ["OPS-1", "OPS-5"]),
    ('issuetype = Incident AND status = "In Progress" ORDER BY key', ["OPS-2", "OPS-5"]),
    ('status != "In Progress" ORDER BY key', ["OPS-1", "OPS-3", "OPS-4"]),
    ('(labels = a OR status = Done) AND type != Bug ORDER BY key', ["OPS-1", "OPS-3"]),
    ('project = OPS AND NOT (issuetype = Incident) ORDER BY key', ["OPS-1", "OPS-4"]),
    ('statusCategory = done', ["OPS-3"]),
    ('resolution = Done', ["OPS-3"]),
    ('"Incident ID" is EMPTY AND key > OPS-3 ORDER BY key', ["OPS-4", "OPS-5"]),
    ('summary ~ "again"', ["OPS-1"]),
    ('reporter = currentUser() AND project = ops ORDER BY created DESC', ["OPS-5", "OPS-4", "OPS-3", "OPS-2", "OPS-1"]),
])
def test_jql_subset(story, jql, keys):
    assert search_keys(story, jql) == keys


@pytest.mark.parametrize("jql, message", [
    ("project = OPS AND", "Error in the JQL Query: Expecting a field name at the end of the query."),
    ("project =", "Error in the JQL Query: Expecting either a value, list or function before the end "
                  "of the query."),
    ("project OPS", "Error in the JQL Query: Expecting operator but got 'OPS'. The valid operators "
                    "are '=', '!=', '<', '>', '<=', '>=', '~', '!~', 'IN', 'NOT IN', 'IS' and "
                    "'IS NOT'. (line 1, character 9)"),
    ("project = OPS labels = a", "Error in the JQL Query: Expecting either 'OR' or 'AND' but got "
                                 "'labels'. (line 1, character 15)"),
    ("key in (OPS-1, OPS-2", "Error in the JQL Query: Expecting ')' before the end of the query."),
    ('summary ~ "open', "Error in the JQL Query: The quoted string 'open' has not been completed. "
                        "(line 1, character 11)"),
    ("colour = red", "Field 'colour' does not exist or you do not have permission to view it."),
    ("labels > a", "The operator '>' is not supported by the 'labels' field."),
    ('updated >= "yesterday"', "Date value 'yesterday' for field 'updated' is invalid. Valid formats "
                               "include: 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', "
                               "'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'."),
    ("project = NOPE", "The value 'NOPE' does not exist for the field 'project'."),
    ("key = OPS-99", "An issue with key 'OPS-99' does not exist for field 'key'."),
    ("assignee = whoami()", "Unable to find JQL function 'whoami()'."),
])
def test_bad_jql_is_400_naming_the_problem(story, jql, message):
    answer = http(story).get(story.base_url + "/rest/api/2/search", params={"jql": jql})
    assert answer.status_code == 400
    assert answer.json() == {"errorMessages": [message], "errors": {}}


def test_relative_dates_count_from_the_simulated_clock(server, clock):
    jira = client(server)
    new_issue(jira)
    clock.advance(3 * 3600)
    assert server.search("updated >= -2h") == []
    assert server.search("updated >= -4h") == ["OPS-1"]


# -- faults ------------------------------------------------------------------------------------

def test_throttling_answers_429_with_retry_after_and_rate_limit_headers(sim):
    jira = client(sim)
    sim.inject(Fault("status", status=429, retry_after="7", times=1))
    with pytest.raises(JIRAError) as error:
        jira.myself()
    headers = error.value.response.headers
    assert error.value.status_code == 429 and headers["Retry-After"] == "7"
    if sim.deployment == "Cloud":
        assert headers["X-RateLimit-NearLimit"] == "true"
        assert headers["RateLimit-Reason"] == "jira-quota-based"
        assert headers["X-RateLimit-Reset"] == "2026-01-01T10:01:00Z"
        assert int(headers["X-RateLimit-Limit"]) > 0 and headers["X-RateLimit-Remaining"] == "0"
    else:
        assert headers["X-RateLimit-FillRate"] and headers["X-RateLimit-Interval-Seconds"]
    assert jira.myself()["displayName"] == "syncd integration"       # the fault was used up


def test_unavailable_answers_503(sim):
    jira = client(sim)
    sim.inject(Fault("status", status=503, path=r"/issue", times=1))
    with pytest.raises(JIRAError) as error:
        new_issue(jira)
    assert error.value.status_code == 503
    assert not sim.issues


def test_latency_slows_answers_within_its_bound(sim):
    jira = client(sim)
    sim.inject(Fault("latency", seconds=0.2, times=1))
    started = time.monotonic()
    jira.myself()
    assert 0.2 <= time.monotonic() - started < 2.0


# -- webhooks ----------------------------------------------------------------------------------

class WebhookReceiver:
    """A tiny HTTP server that records deliveries and signals when enough have arrived."""

    def __init__(self, expected: int):
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.expected = expected
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.deliveries.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()
                if len(receiver.deliveries) >= receiver.expected:
                    receiver.arrived.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_are_signed_and_carry_the_real_body(clock):
    receiver = WebhookReceiver(expected=5)
    sim = start_sim("Cloud", clock, webhook_url=receiver.url, webhook_secret="s3cret")
    try:
        jira = client(sim)
        issue = new_issue(jira)                                   # issue_created
        issue.update(fields={"summary": "Checkout is down in EU"})  # issue_updated
        jira.add_comment(issue.key, "Looking")                    # comment_created + issue_updated
        issue.delete()                                            # issue_deleted
        assert receiver.arrived.wait(5), f"only {len(receiver.deliveries)} deliveries arrived"
    finally:
        sim.stop()
        receiver.close()
    bodies = []
    for headers, raw in receiver.deliveries:
        expected = hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
        assert headers["X-Hub-Signature"] == f"sha256={expected}"
        bodies.append(json.loads(raw))
    assert [b["webhookEvent"] for b in bodies] == [
        "jira:issue_created", "jira:issue_updated", "comment_created", "jira:issue_updated",
        "jira:issue_deleted"]
    identifiers = {h["X-Atlassian-Webhook-Identifier"] for h, _ in receiver.deliveries}
    assert len(identifiers) == 5
    created, updated, commented = bodies[0], bodies[1], bodies[2]
    assert created["timestamp"] == int(START.timestamp() * 1000)
    assert created["issue_event_type_name"] == "issue_created"
    assert created["issue"]["key"] == "OPS-1"
    assert created["issue"]["self"] == sim.base_url + "/rest/api/2/issue/10000"
    assert created["user"]["accountId"]
    assert updated["changelog"]["items"][0]["toString"] == "Checkout is down in EU"
    assert commented["comment"]["body"] == "Looking"
    assert bodies[3]["issue_event_type_name"] == "issue_commented"


# -- people in the UI, state -------------------------------------------------------------------

def test_human_edits_look_like_a_person_did_them(sim, clock):
    jira = client(sim)
    created = sim.human_create({"summary": "Pager storm", "priority": {"name": "High"}}, user="bob")
    assert created["fields"]["reporter"]["displayName"] == "Bob Brown"
    assert created["fields"]["issuetype"]["name"] == "Incident"
    clock.advance(60)
    sim.human_update(created["key"], {"labels": ["noisy"]})
    sim.human_transition(created["key"], "In Progress", user="bob")
    sim.human_comment(created["key"], "Muted the alert", visibility={"type": "role",
                                                                      "value": "Developers"})
    issue = jira.issue(created["key"], expand="changelog")
    assert issue.fields.labels == ["noisy"] and issue.fields.status.name == "In Progress"
    assert issue.fields.updated == "2026-01-01T10:01:00.000+0000"
    assert [h.author.displayName for h in issue.changelog.histories] == ["Alice Adams", "Bob Brown"]
    [comment] = sim.comments(created["key"])
    assert comment["author"]["displayName"] == "Alice Adams"
    assert comment["visibility"]["value"] == "Developers"
    with pytest.raises(JiraError, match="No transition leads from 'In Progress' to 'Nowhere'"):
        sim.human_transition(created["key"], "Nowhere")


def test_human_admin_endpoints(sim):
    base = sim.base_url + "/_sim/human/issue"
    created = requests.post(base, json={"fields": {"summary": "From the UI"}, "user": "bob"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert requests.post(f"{base}/{key}", json={"fields": {"summary": "Edited"}}).status_code == 200
    moved = requests.post(f"{base}/{key}/transition", json={"status": "Done"})
    assert moved.json()["fields"]["resolution"]["name"] == "Done"
    assert requests.post(f"{base}/{key}/comment", json={"body": "Closed"}).status_code == 201
    assert requests.post(base, json={"fields": {"summary": "x"}, "user": "mallory"}).status_code == 400
    assert sim.get_issue(key)["fields"]["summary"] == "Edited"
    assert [c["body"] for c in sim.comments(key)] == ["Closed"]


def test_state_survives_a_restart_through_the_state_file(tmp_path, clock):
    state_file = str(tmp_path / "jira.json")
    sim = start_sim("Server", clock, state_file=state_file)
    jira = client(sim)
    issue = new_issue(jira)
    jira.add_comment(issue.key, "kept")
    jira.add_issue_property(issue.key, "syncd", {"correlationId": "c-1"})
    sim.stop()
    again = start_sim("Server", clock, state_file=state_file)
    try:
        jira = client(again)
        assert jira.issue("OPS-1").fields.summary == "Checkout is down"
        assert [c.body for c in jira.comments("OPS-1")] == ["kept"]
        assert new_issue(jira).key == "OPS-2"
        properties = again.state_to_json()["issues"]["10000"]["properties"]
        assert properties == {"syncd": {"correlationId": "c-1"}}
    finally:
        again.stop()
    with pytest.raises(ValueError, match="lacks next_issue_id"):
        JiraSimulator().state_from_json({"issues": {}})


def test_constructor_refuses_bad_options():
    with pytest.raises(ValueError, match="deployment must be 'Cloud' or 'Server'"):
        JiraSimulator(deployment="Onprem")
    with pytest.raises(ValueError, match="human_user: no user 'zed'"):
        JiraSimulator(human_user="zed")


# -- indexed lookups ----------------------------------------------------------------------------

def test_id_and_key_clauses_answer_from_the_index_exactly_as_a_scan_does(server, clock):
    made = [server.human_create({"summary": f"issue {n}", "labels": ["x"] if n % 2 else []})
            for n in range(6)]
    clock.advance(60)
    server.human_update(made[2]["key"], {"summary": "issue 2 again"})
    http(server).delete(f"{server.base_url}/rest/api/2/issue/{made[3]['id']}").raise_for_status()
    ids = ", ".join(i["id"] for i in (made[5], made[0], made[3], made[2]))
    # An OR with an impossible clause keeps the index out: the same question answered by a scan.
    for jql in (f"id in ({ids})", f"id = {made[1]['id']}", f"id in ({ids}) AND labels = x",
                f"key in ({made[4]['key']}, {made[0]['key']}) ORDER BY updated DESC",
                f"issuekey = {made[2]['key']} AND project = OPS", f"id in ({ids}) ORDER BY summary"):
        where, _, order = jql.partition(" ORDER BY")
        scan = f"({where}) OR summary ~ nothing-like-this" + (f" ORDER BY{order}" if order else "")
        assert search_keys(server, jql) == search_keys(server, scan), jql
    assert search_keys(server, f"id in ({ids}) ORDER BY key") == ["OPS-1", "OPS-3", "OPS-6"]
    answer = http(server).get(server.base_url + "/rest/api/2/search",
                              params={"jql": f"key in (OPS-1, {made[3]['key']})"})
    assert answer.status_code == 400       # a deleted key refuses the search, a deleted id does not
    assert answer.json()["errorMessages"] == [
        f"An issue with key '{made[3]['key']}' does not exist for field 'key'."]


def test_keys_are_found_again_after_a_restart_from_the_state_file(tmp_path, clock):
    state_file = str(tmp_path / "jira.json")
    first = start_sim("Server", clock, state_file=state_file)
    for n in range(3):
        first.human_create({"summary": f"issue {n}"})
    first.stop()
    again = start_sim("Server", clock, state_file=state_file)
    try:
        assert again.get_issue("ops-2")["id"] == "10001"
        assert search_keys(again, "key in (OPS-3, OPS-1)") == ["OPS-3", "OPS-1"]
        assert search_keys(again, "id in (10002, 10000, 99999) ORDER BY key") == ["OPS-1", "OPS-3"]
    finally:
        again.stop()
