"""The Jira connector: against recorded shapes (``responses``) and against the Jira simulator."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from syncd.clock import ManualClock
from syncd.connectors.base import (AuthError, PermanentRemoteError, Ref, SyncCursor,
                                   TransientRemoteError, WebhookRejected)
from syncd.connectors.http import RetryPolicy
from syncd.connectors.jira import JiraConnector, parse_jira_time
from syncd.metrics import REMOTE_REQUESTS

URL = "https://acme.atlassian.net"
API = f"{URL}/rest/api/2"
CLOUD_INFO = {"baseUrl": URL, "version": "1001.0.0-SNAPSHOT", "versionNumbers": [1001, 0, 0],
              "deploymentType": "Cloud", "serverTitle": "Jira"}
SERVER_INFO = {"baseUrl": URL, "version": "9.12.2", "versionNumbers": [9, 12, 2],
               "deploymentType": "Server", "serverTitle": "Jira"}
FIELDS = [
    {"id": "summary", "name": "Summary", "custom": False, "clauseNames": ["summary"],
     "schema": {"type": "string", "system": "summary"}},
    {"id": "priority", "name": "Priority", "custom": False, "clauseNames": ["priority"],
     "schema": {"type": "priority", "system": "priority"}},
    {"id": "status", "name": "Status", "custom": False, "clauseNames": ["status"],
     "schema": {"type": "status", "system": "status"}},
    {"id": "labels", "name": "Labels", "custom": False, "clauseNames": ["labels"],
     "schema": {"type": "array", "items": "string", "system": "labels"}},
    {"id": "customfield_10050", "name": "Customer Impact", "custom": True,
     "clauseNames": ["cf[10050]", "Customer Impact"],
     "schema": {"type": "option", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:select",
                "customId": 10050}},
]
OLD_SEARCH_GONE = {"errorMessages": ["The requested API has been removed. Please migrate to the "
                                     "/rest/api/3/search/jql API. A full migration guideline is "
                                     "available at https://developer.atlassian.com/changelog/#CHANGE-2046"],
                   "errors": {}}


def issue_json(issue_id: str, key: str, updated: str, *, status: str = "Open",
               summary: str = "Checkout is down", labels=("syncd-inc-1",), **extra) -> dict:
    return {"id": issue_id, "key": key, "self": f"{API}/issue/{issue_id}", "fields": {
        "summary": summary, "description": "Customers see 502s", "updated": updated,
        "created": "2026-01-01T09:00:00.000+0000",
        "priority": {"self": f"{API}/priority/2", "name": "High", "id": "2"},
        "status": {"self": f"{API}/status/1", "name": status, "id": "1",
                   "statusCategory": {"id": 2, "key": "new", "name": "To Do"}},
        "resolution": None, "labels": list(labels),
        "assignee": {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Beth Anglin",
                     "emailAddress": "beth@example.com", "active": True},
        "reporter": None,
        "issuetype": {"id": "10001", "name": "Incident"},
        "project": {"id": "10000", "key": "OPS", "name": "Operations"},
        "customfield_10050": {"self": f"{API}/customFieldOption/1", "value": "Many", "id": "1"},
        **extra}}


def connector(name: str = "jira", **kwargs) -> JiraConnector:
    options = dict(url=URL, username="sync@example.com", token="t0ken", project="OPS",
                   clock=ManualClock(), webhook_secret="s3cret")
    options.update(kwargs)
    return JiraConnector(name, **options)


def query(call) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


@pytest.fixture
def api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{API}/field", json=FIELDS)
        yield mock


# -- construction and auth ---------------------------------------------------------------------

def test_bad_configuration_is_refused_naming_the_connector_and_key():
    with pytest.raises(ValueError, match=r"connector 'jira': deployment: must be one of"):
        connector(deployment="datacenter")
    with pytest.raises(ValueError, match=r"jql: .*without ORDER BY"):
        connector(jql="project = OPS ORDER BY created")
    with pytest.raises(ValueError, match=r"project: must be a Jira project key"):
        connector(project="ops team")


def test_constructing_makes_no_request_and_server_info_is_read_once_on_first_use(api):
    info = api.get(f"{API}/serverInfo", json=CLOUD_INFO)
    jira = connector()
    assert info.call_count == 0
    assert jira.is_cloud and jira.is_cloud
    assert info.call_count == 1


def test_refused_credentials_raise_auth_error_naming_the_connector(api):
    api.get(f"{API}/myself", status=401, body="<html>Unauthorized</html>")
    with pytest.raises(AuthError, match=r"connector 'ops-jira'") as raised:
        connector(name="ops-jira").check_auth()
    assert raised.value.connector == "ops-jira" and raised.value.status == 401


def test_basic_auth_goes_out_and_requests_are_counted_in_the_metrics(api):
    me = api.get(f"{API}/myself", json={"accountId": "abc", "timeZone": "UTC"})
    before = REMOTE_REQUESTS.labels("metered", "check_auth", "200")._value.get()
    connector(name="metered").check_auth()
    assert me.calls[0].request.headers["Authorization"].startswith("Basic ")
    assert REMOTE_REQUESTS.labels("metered", "check_auth", "200")._value.get() == before + 1


def test_token_without_username_is_sent_as_bearer(api):
    me = api.get(f"{API}/myself", json={"name": "sync", "timeZone": "Etc/UTC"})
    connector(username=None, token="pat-123").check_auth()
    assert me.calls[0].request.headers["Authorization"] == "Bearer pat-123"


def test_429_with_retry_after_is_waited_out_on_the_clock_then_succeeds(api):
    clock = ManualClock()
    api.get(f"{API}/myself", status=429, headers={"Retry-After": "7"},
            json={"errorMessages": ["Rate limit exceeded"]})
    api.get(f"{API}/myself", json={"accountId": "abc", "timeZone": "UTC"})
    started = clock.monotonic()
    connector(clock=clock).check_auth()
    assert clock.monotonic() - started == 7


def test_the_library_does_not_retry_behind_the_policy(api):
    calls = api.get(f"{API}/myself", status=503, json={"errorMessages": ["busy"]})
    with pytest.raises(TransientRemoteError):
        connector(policy=RetryPolicy(max_attempts=2), clock=ManualClock()).check_auth()
    assert calls.call_count == 2


# -- reading -----------------------------------------------------------------------------------

def jql_is(jql: str):
    return responses.matchers.query_param_matcher({"jql": jql}, strict_match=False)


def test_server_search_slides_its_window_to_the_newest_minute_read_instead_of_paging_by_offset(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    first_jql = '(project = "OPS") AND updated >= "2026/01/01 09:58" ORDER BY updated ASC, key ASC'
    next_jql = '(project = "OPS") AND updated >= "2026/01/01 10:00" ORDER BY updated ASC, key ASC'
    page_one = api.get(f"{API}/search", match=[jql_is(first_jql)], json={
        "startAt": 0, "maxResults": 2, "total": 3, "issues": [
            issue_json("10001", "OPS-1", "2026-01-01T09:59:00.000+0000"),
            issue_json("10002", "OPS-2", "2026-01-01T10:00:30.000+0000")]})
    page_two = api.get(f"{API}/search", match=[jql_is(next_jql)], json={
        "startAt": 0, "maxResults": 2, "total": 2, "issues": [
            issue_json("10002", "OPS-2", "2026-01-01T10:00:30.000+0000"),
            issue_json("10003", "OPS-3", "2026-01-01T10:01:00.000+0000")]})
    jira = connector(page_size=2)
    watermark = datetime(2026, 1, 1, 10, 0, 40, tzinfo=timezone.utc)

    records, cursor = jira.fetch_changes(SyncCursor(watermark=watermark))

    assert [r.key for r in records] == ["OPS-1", "OPS-2", "OPS-3"]     # OPS-2 read twice, kept once
    sent = query(page_one.calls[0])
    assert sent["startAt"] == ["0"] and sent["maxResults"] == ["2"]
    assert {"summary", "status", "updated", "customfield_10050"} <= set(sent["fields"])
    assert page_two.call_count == 1 and query(page_two.calls[0])["startAt"] == ["0"]
    assert cursor.watermark == datetime(2026, 1, 1, 10, 1, tzinfo=timezone.utc)
    assert "10003@2026-01-01T10:01:00.000+0000" in cursor.seen
    assert "10001@2026-01-01T09:59:00.000+0000" in cursor.seen     # still inside the next window


def test_a_minute_fuller_than_a_page_is_passed_by_leaving_out_the_issues_read_in_it(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    window = '(project = "OPS") AND updated >= "2026/01/01 10:00"'
    same_minute = [issue_json(f"1000{n}", f"OPS-{n}", f"2026-01-01T10:00:0{n}.000+0000")
                   for n in range(1, 4)]
    first = api.get(f"{API}/search", match=[jql_is(window + " ORDER BY updated ASC, key ASC")],
                    json={"startAt": 0, "maxResults": 2, "total": 3, "issues": same_minute[:2]})
    rest = api.get(f"{API}/search", match=[jql_is(
        window + ' AND NOT (id in (10001, 10002) AND updated < "2026/01/01 10:01") '
                 'ORDER BY updated ASC, key ASC')],
        json={"startAt": 0, "maxResults": 2, "total": 1, "issues": same_minute[2:]})
    jira = connector(page_size=2)

    records, _ = jira.fetch_changes(SyncCursor(watermark=datetime(2026, 1, 1, 10, 2,
                                                                  tzinfo=timezone.utc)))

    assert [r.key for r in records] == ["OPS-1", "OPS-2", "OPS-3"]
    assert first.call_count == 1 and rest.call_count == 1


def test_cloud_search_slides_its_window_too_and_never_calls_the_removed_search(api):
    api.get(f"{API}/serverInfo", json=CLOUD_INFO)
    old = api.get(f"{API}/search", status=410, json=OLD_SEARCH_GONE)
    second = api.get(f"{API}/search/jql", match=[jql_is(
        '(project = "OPS") AND updated >= "2026/01/01 10:01" ORDER BY updated ASC, key ASC')],
        json={"issues": [issue_json("10001", "OPS-1", "2026-01-01T10:01:00.000+0000"),
                         issue_json("10002", "OPS-2", "2026-01-01T10:02:00.000+0000")],
              "isLast": True})
    api.get(f"{API}/search/jql", json={
        "issues": [issue_json("10001", "OPS-1", "2026-01-01T10:01:00.000+0000")],
        "nextPageToken": "tok-2", "isLast": False})
    jira = connector()

    records, cursor = jira.fetch_changes(SyncCursor())

    assert [r.key for r in records] == ["OPS-1", "OPS-2"]
    assert old.call_count == 0 and second.call_count == 1
    assert "nextPageToken" not in query(second.calls[0])      # a new window, not the next offset
    assert "summary" in query(second.calls[0])["fields"]      # Cloud returns only ids unless asked
    assert cursor.watermark == parse_jira_time("2026-01-01T10:02:00.000+0000")


def test_old_search_on_cloud_answers_410_which_is_a_permanent_error_with_the_migration_hint(api):
    api.get(f"{API}/search", status=410, json=OLD_SEARCH_GONE)
    with pytest.raises(PermanentRemoteError, match=r"410 .*migrate to the /rest/api/3/search/jql"):
        connector(deployment="server").fetch_changes(SyncCursor())


def test_a_change_already_seen_at_the_watermark_is_not_returned_again(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    search = api.get(f"{API}/search", json={"startAt": 0, "maxResults": 100, "total": 1, "issues": [
        issue_json("10001", "OPS-1", "2026-01-01T10:00:00.000+0000")]})
    jira = connector()
    first, cursor = jira.fetch_changes(SyncCursor())
    second, cursor_after = jira.fetch_changes(cursor)
    assert [r.key for r in first] == ["OPS-1"] and second == []
    assert cursor_after == cursor and search.call_count == 2


def test_a_record_is_flattened_to_the_plain_shape(api):
    api.get(f"{API}/serverInfo", json=CLOUD_INFO)
    api.get(f"{API}/issue/10001", json=issue_json(
        "10001", "OPS-1", "2026-01-01T10:00:00.000+0000", labels=["checkout", "syncd-inc-42"]))
    record = connector().fetch("10001")
    assert record is not None
    assert (record.remote_id, record.key, record.url) == ("10001", "OPS-1", f"{URL}/browse/OPS-1")
    assert record.version == "2026-01-01T10:00:00.000+0000"
    assert record.updated_at == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    assert record.correlation_id == "inc-42"
    fields = record.fields
    assert fields["priority"] == "High" and fields["status"] == "Open"
    assert fields["resolution"] is None and fields["reporter"] is None
    assert fields["labels"] == ["checkout"]
    assert fields["project"] == "OPS"
    assert fields["Customer Impact"] == "Many"
    assert fields["assignee"] == {"accountId": "5b10ac8d82e05b22cc7d4ef5", "name": None,
                                  "emailAddress": "beth@example.com", "displayName": "Beth Anglin"}


def test_fetching_a_missing_issue_gives_none(api):
    api.get(f"{API}/serverInfo", json=CLOUD_INFO)
    api.get(f"{API}/issue/404404", status=404,
            json={"errorMessages": ["Issue does not exist or you do not have permission to see it."],
                  "errors": {}})
    assert connector().fetch("404404") is None


# -- writing -----------------------------------------------------------------------------------

def test_create_on_cloud_sends_project_type_correlation_label_and_account_id(api):
    api.get(f"{API}/serverInfo", json=CLOUD_INFO)
    post = api.post(f"{API}/issue", status=201,
                    json={"id": "10007", "key": "OPS-7", "self": f"{API}/issue/10007"})
    api.get(f"{API}/issue/10007", json=issue_json("10007", "OPS-7", "2026-01-01T10:00:00.000+0000",
                                                  labels=["syncd-inc-7"]))
    record = connector().create({"summary": "Checkout is down", "priority": "High",
                                 "assignee": Ref("accountId", "5b10ac8d82e05b22cc7d4ef5"),
                                 "Customer Impact": "Many"}, correlation_id="inc-7")
    sent = json.loads(post.calls[0].request.body)["fields"]
    assert sent == {"project": {"key": "OPS"}, "issuetype": {"name": "Incident"},
                    "summary": "Checkout is down", "priority": {"name": "High"},
                    "assignee": {"accountId": "5b10ac8d82e05b22cc7d4ef5"},
                    "customfield_10050": {"value": "Many"}, "labels": ["syncd-inc-7"]}
    assert record.key == "OPS-7" and record.correlation_id == "inc-7"


def test_a_create_whose_answer_was_lost_is_found_by_its_label_instead_of_duplicated(api):
    api.get(f"{API}/serverInfo", json=CLOUD_INFO)
    post = api.post(f"{API}/issue", body=requests.ConnectionError("connection reset by peer"))
    lookup = api.get(f"{API}/search/jql", json={"issues": [issue_json(
        "10007", "OPS-7", "2026-01-01T10:00:00.000+0000", labels=["syncd-inc-7"])], "isLast": True})
    api.get(f"{API}/issue/10007", json=issue_json("10007", "OPS-7", "2026-01-01T10:00:00.000+0000",
                                                  labels=["syncd-inc-7"]))
    record = connector().create({"summary": "Checkout is down"}, correlation_id="inc-7")
    assert record.remote_id == "10007"
    assert post.call_count == 1
    assert query(lookup.calls[0])["jql"] == [
        'project = "OPS" AND labels = "syncd-inc-7" ORDER BY created ASC']


def test_property_correlation_travels_in_the_create_request_and_is_searched_by_property(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    post = api.post(f"{API}/issue", status=201,
                    json={"id": "10008", "key": "OPS-8", "self": f"{API}/issue/10008"})
    prop = api.put(f"{API}/issue/10008/properties/syncd", status=201)
    with_property = {**issue_json("10008", "OPS-8", "2026-01-01T10:00:00.000+0000", labels=[]),
                     "properties": {"syncd": {"correlationId": "inc-8"}}}
    read = api.get(f"{API}/issue/10008", json=with_property)
    search = api.get(f"{API}/search", json={"startAt": 0, "maxResults": 100, "total": 1,
                                            "issues": [with_property]})
    jira = connector(correlation="property")
    assert jira.create({"summary": "Checkout is down"}, correlation_id="inc-8").correlation_id == "inc-8"
    sent = json.loads(post.calls[0].request.body)
    assert sent["properties"] == [{"key": "syncd", "value": {"correlationId": "inc-8"}}]
    assert "labels" not in sent["fields"]
    assert prop.call_count == 0                      # no second request that a crash could miss
    assert read.call_count == 0                      # nor a read: the answer names the issue
    assert jira.find_by_correlation("inc-8").key == "OPS-8"
    assert query(search.calls[0])["properties"] == ["syncd"]
    assert query(search.calls[0])["jql"] == [
        'project = "OPS" AND issue.property[syncd].correlationId = "inc-8" ORDER BY created ASC']


def test_a_property_mode_create_whose_answer_was_lost_is_found_among_recent_issues(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    post = api.post(f"{API}/issue", body=requests.ConnectionError("connection reset by peer"))
    someone_elses = {**issue_json("10007", "OPS-7", "2026-01-01T09:59:00.000+0000", labels=[]),
                     "properties": {"syncd": {"correlationId": "inc-7"}}}
    ours = {**issue_json("10008", "OPS-8", "2026-01-01T10:00:00.000+0000", labels=[]),
            "properties": {"syncd": {"correlationId": "inc-8"}}}
    lookup = api.get(f"{API}/search", json={"startAt": 0, "maxResults": 100, "total": 2,
                                            "issues": [someone_elses, ours]})
    api.get(f"{API}/issue/10008", json=ours)
    clock = ManualClock(datetime(2026, 1, 1, 10, 0, 20, tzinfo=timezone.utc))

    record = connector(correlation="property", clock=clock).create(
        {"summary": "Checkout is down"}, correlation_id="inc-8")

    assert record.remote_id == "10008" and post.call_count == 1
    sent = query(lookup.calls[0])
    # The property is not searchable unless an app indexes it: read recent issues and compare.
    assert sent["jql"] == ['project = "OPS" AND created >= "2026/01/01 09:58" ORDER BY created ASC']
    assert sent["properties"] == ["syncd"]


def test_a_user_outside_utc_is_warned_about(api, caplog):
    api.get(f"{API}/myself", json={"accountId": "abc", "timeZone": "Europe/Berlin"})
    connector().check_auth()
    assert "time zone is Europe/Berlin, not UTC" in caplog.text


def test_assignee_by_email_on_server_is_looked_up_once_and_sent_by_name(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    users = api.get(f"{API}/user/search", json=[
        {"self": f"{API}/user?username=beth", "name": "beth", "key": "JIRAUSER10100",
         "emailAddress": "beth@example.com",
         "displayName": "Beth Anglin"}])
    put = api.put(f"{API}/issue/10001", status=204)
    api.get(f"{API}/issue/10001", json=issue_json("10001", "OPS-1", "2026-01-01T10:00:00.000+0000"))
    jira = connector()
    for _ in range(2):
        jira.update("10001", {"assignee": Ref("emailAddress", "beth@example.com")})
    assert json.loads(put.calls[0].request.body) == {"fields": {"assignee": {"name": "beth"}}}
    assert users.call_count == 1


def test_update_of_plain_fields_is_one_put_and_no_read(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    put = api.put(f"{API}/issue/10001", status=204)
    read = api.get(f"{API}/issue/10001", json=issue_json(
        "10001", "OPS-1", "2026-01-01T10:05:00.000+0000", summary="Checkout degraded"))
    record = connector().update("10001", {"summary": "Checkout degraded", "priority": "Highest"})
    assert json.loads(put.calls[0].request.body) == {
        "fields": {"summary": "Checkout degraded", "priority": {"name": "Highest"}}}
    assert (put.call_count, read.call_count) == (1, 0)
    assert record is None


def test_writing_labels_keeps_the_correlation_label(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    put = api.put(f"{API}/issue/10001", status=204)
    api.get(f"{API}/issue/10001", json=issue_json(
        "10001", "OPS-1", "2026-01-01T10:05:00.000+0000", labels=["old", "syncd-inc-1"]))
    connector().update("10001", {"labels": ["checkout", "sev1"]})
    assert json.loads(put.calls[0].request.body) == {
        "fields": {"labels": ["checkout", "sev1", "syncd-inc-1"]}}


TRANSITIONS = {"expand": "transitions", "transitions": [
    {"id": "21", "name": "Start work", "to": {"id": "3", "name": "In Progress"}},
    {"id": "31", "name": "Resolve", "to": {"id": "5", "name": "Done",
                                          "statusCategory": {"key": "done"}}}]}


def test_status_is_reached_through_the_transition_leading_there_with_resolution(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    for issue_id in ("10001", "10002"):
        api.get(f"{API}/issue/{issue_id}", json=issue_json(
            issue_id, "OPS-1", "2026-01-01T10:00:00.000+0000", status="Open"))
    lookup = api.get(f"{API}/issue/10001/transitions", json=TRANSITIONS)
    other_lookup = api.get(f"{API}/issue/10002/transitions", json=TRANSITIONS)
    move = api.post(f"{API}/issue/10001/transitions", status=204)
    other_move = api.post(f"{API}/issue/10002/transitions", status=204)
    jira = connector()

    jira.update("10001", {"status": "Done", "resolution": "Fixed"})
    jira.update("10002", {"status": "done"})

    assert json.loads(move.calls[0].request.body) == {
        "transition": {"id": 31}, "fields": {"resolution": {"name": "Fixed"}}}
    assert json.loads(other_move.calls[0].request.body)["transition"] == {"id": 31}
    # (project, issue type, from status) was looked up once, then served from the cache
    assert (lookup.call_count, other_lookup.call_count) == (1, 0)


def test_a_status_no_transition_reaches_is_a_permanent_error_listing_what_is_reachable(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    api.get(f"{API}/issue/10001", json=issue_json("10001", "OPS-1", "2026-01-01T10:00:00.000+0000"))
    api.get(f"{API}/issue/10001/transitions", json=TRANSITIONS)
    move = api.post(f"{API}/issue/10001/transitions", status=204)
    with pytest.raises(PermanentRemoteError,
                       match=r"no transition from status 'Open' to 'Cancelled'; reachable from "
                             r"there: Done, In Progress"):
        connector().update("10001", {"status": "Cancelled"})
    assert move.call_count == 0


def test_a_status_already_reached_needs_no_transition(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    api.get(f"{API}/issue/10001", json=issue_json("10001", "OPS-1", "2026-01-01T10:00:00.000+0000",
                                                  status="Done"))
    lookup = api.get(f"{API}/issue/10001/transitions", json=TRANSITIONS)
    connector().update("10001", {"status": "Done"})
    assert lookup.call_count == 0


# -- comments ----------------------------------------------------------------------------------

def test_comments_on_a_role_channel_are_restricted_and_read_back_with_their_channel(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    author = {"name": "sync", "displayName": "syncd", "emailAddress": "sync@example.com"}
    api.get(f"{API}/myself", json=author)
    post = api.post(f"{API}/issue/10001/comment", status=201, json={
        "id": "100", "body": "Mitigated by rollback", "author": author,
        "created": "2026-01-01T10:10:00.000+0000",
        "visibility": {"type": "role", "value": "Developers"}})
    api.get(f"{API}/issue/10001/comment", json={"startAt": 0, "maxResults": 100, "total": 2,
                                                "comments": [
        {"id": "101", "body": "public", "author": author, "created": "2026-01-01T10:11:00.000+0000"},
        {"id": "100", "body": "Mitigated by rollback", "author": author,
         "created": "2026-01-01T10:10:00.000+0000",
         "visibility": {"type": "role", "value": "Developers"}}]})
    jira = connector()
    added = jira.add_comment("10001", "Mitigated by rollback", channel="comment:Developers")
    assert json.loads(post.calls[0].request.body) == {
        "body": "Mitigated by rollback", "visibility": {"type": "role", "value": "Developers"}}
    assert (added.channel, added.restricted, added.author) == ("comment:Developers", True, "syncd")   # the name people read
    listed = jira.list_comments("10001")
    assert [(c.remote_id, c.channel, c.restricted, c.own) for c in listed] == [
        ("100", "comment:Developers", True, True), ("101", "comment", False, True)]


def test_an_unknown_comment_channel_is_refused_before_any_request(api):
    with pytest.raises(PermanentRemoteError, match=r"comment channel 'work_notes'"):
        connector().add_comment("10001", "x", channel="work_notes")


# -- webhooks ----------------------------------------------------------------------------------

WEBHOOK = json.dumps({"timestamp": 1767261600000, "webhookEvent": "jira:issue_updated",
                      "issue": {"id": "10001", "key": "OPS-1", "fields": {}}}).encode()


def sign(body: bytes, secret: str = "s3cret") -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_a_signed_webhook_hints_at_its_issue():
    assert connector().parse_webhook({"x-hub-signature": sign(WEBHOOK)}, WEBHOOK) == ["10001"]


@pytest.mark.parametrize("headers", [{}, {"X-Hub-Signature": sign(WEBHOOK, "wrong")},
                                     {"X-Hub-Signature": "sha256=zz"}])
def test_an_unsigned_or_wrongly_signed_webhook_is_refused_with_401(headers):
    with pytest.raises(WebhookRejected) as raised:
        connector().parse_webhook(headers, WEBHOOK)
    assert raised.value.status == 401


def test_a_webhook_that_is_not_json_is_refused_with_400():
    body = b"{not json"
    with pytest.raises(WebhookRejected) as raised:
        connector().parse_webhook({"X-Hub-Signature": sign(body)}, body)
    assert raised.value.status == 400


def test_without_a_secret_every_webhook_is_refused():
    with pytest.raises(WebhookRejected) as refused:
        connector(webhook_secret=None).parse_webhook({}, WEBHOOK)
    assert refused.value.status == 401 and "no webhook_secret configured" in refused.value.reason


# -- against the Jira simulator over loopback --------------------------------------------------

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
import queue  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from syncd.simulators.jira import JiraSimulator  # noqa: E402
from tests.connectors.simclock import date_header_on_simulator_clock  # noqa: E402


class WebhookReceiver:
    """A loopback endpoint that hands each delivery (headers, raw body) to the test."""

    def __init__(self):
        self.deliveries: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        deliveries = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                deliveries.put((dict(self.headers.items()), body))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/jira"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()

    def next(self) -> tuple[dict[str, str], bytes]:
        return self.deliveries.get(timeout=5)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    endpoint = WebhookReceiver()
    yield endpoint
    endpoint.close()


@pytest.fixture(params=["Cloud", "Server"])
def deployment(request) -> str:
    return request.param


@pytest.fixture
def sim(deployment, receiver):
    simulator = date_header_on_simulator_clock(JiraSimulator(
        deployment=deployment, clock=ManualClock(), webhook_url=receiver.url,
        webhook_secret="s3cret").start())
    yield simulator
    simulator.stop()


@pytest.fixture
def live(sim):
    jira = JiraConnector("jira", url=sim.base_url, username="syncd", token="syncd-api-token",
                         project="OPS", clock=ManualClock(), webhook_secret="s3cret",
                         policy=RetryPolicy(max_attempts=3, max_total_seconds=30))
    yield jira
    jira.close()


def requests_sent_by(connector_name: str) -> float:
    """Requests the connector made, from syncd_remote_requests_total (counted client-side)."""
    return sum(sample.value for metric in REMOTE_REQUESTS.collect() for sample in metric.samples
               if sample.name.endswith("_total") and sample.labels["connector"] == connector_name)


def requests_made(sim: JiraSimulator, live: JiraConnector, action) -> list[str]:
    """What one connector call sent, as "METHOD path" lines from the simulator's request log, in
    the order they were answered.

    The simulator logs a request just before answering it, so every earlier call's requests are
    in the log already; the log is read once it holds as many new requests as the connector
    counted. (Its times are the simulator's ManualClock, which stands still: order by position.)"""
    began = len(sim.request_log())
    before = requests_sent_by(live.name)
    action()
    sent = requests_sent_by(live.name) - before

    def arrived() -> list:
        return sim.request_log()[began:]

    give_up = time.monotonic() + 5
    while len(arrived()) < sent and time.monotonic() < give_up:
        threading.Event().wait(0.005)
    return [f"{r.method} {r.path}" for r in arrived()]


def test_live_create_carries_the_correlation_and_is_found_by_it(sim, live, deployment):
    live.check_auth()
    created = live.create({"summary": "Checkout is down", "priority": "High",
                           "Customer Impact": "All EU customers"}, correlation_id="inc-42")
    stored = sim.get_issue(created.key)["fields"]
    assert "syncd-inc-42" in stored["labels"] and stored["customfield_10010"] == "All EU customers"
    assert created.correlation_id == "inc-42" and created.fields["labels"] == []
    # No read after the create: the record holds what was written, and no version.
    assert created.fields["priority"] == "High" and "status" not in created.fields
    assert created.version is None and created.fields["Customer Impact"] == "All EU customers"
    assert live.fetch(created.remote_id).fields["status"] == "To Do"
    assert created.url == f"{sim.base_url}/browse/{created.key}"
    found = live.find_by_correlation("inc-42")
    assert found is not None and found.remote_id == created.remote_id
    assert live.find_by_correlation("inc-43") is None


def test_live_poll_sees_a_human_edit_exactly_once(sim, live):
    issue = sim.human_create({"summary": "Disk full on db-3", "priority": {"name": "Medium"}})
    first, cursor = live.fetch_changes(SyncCursor())
    assert [(r.key, r.fields["summary"]) for r in first] == [(issue["key"], "Disk full on db-3")]
    again, cursor = live.fetch_changes(cursor)
    assert again == []

    sim.clock.advance(30)
    sim.human_update(issue["key"], {"summary": "Disk full on db-3 and db-4"})
    changed, cursor = live.fetch_changes(cursor)
    assert [(r.key, r.fields["summary"]) for r in changed] == [
        (issue["key"], "Disk full on db-3 and db-4")]
    assert live.fetch_changes(cursor)[0] == []


def test_live_update_of_summary_and_priority_costs_one_write(sim, live):
    created = live.create({"summary": "Checkout is down"}, correlation_id="inc-1")
    sent = requests_made(sim, live, lambda: live.update(
        created.remote_id, {"summary": "Checkout degraded", "priority": "Highest"}))
    assert sent == [f"PUT /rest/api/2/issue/{created.remote_id}"]
    stored = sim.get_issue(created.key)["fields"]
    assert stored["summary"] == "Checkout degraded" and stored["priority"]["name"] == "Highest"


def test_live_request_costs_of_create_and_transition(sim, live):
    live.check_auth()
    live.fetch_changes(SyncCursor())          # server info and the field list, read once
    sent = requests_made(sim, live, lambda: live.create({"summary": "A"}, correlation_id="inc-1"))
    assert [line.split(" ")[0] for line in sent] == ["POST"]
    other = live.create({"summary": "B"}, correlation_id="inc-2")
    first = requests_made(sim, live, lambda: live.update(other.remote_id, {"status": "In Progress"}))
    assert [line.rsplit("/", 1)[-1] for line in first] == [
        other.remote_id, "transitions", "transitions"]
    third = live.create({"summary": "C"}, correlation_id="inc-3")
    cached = requests_made(sim, live, lambda: live.update(third.remote_id, {"status": "In Progress"}))
    assert [line.split(" ")[0] for line in cached] == ["GET", "POST"]


def test_live_transition_to_done_sets_the_resolution(sim, live):
    created = live.create({"summary": "Checkout is down"}, correlation_id="inc-9")
    live.update(created.remote_id, {"status": "Done", "resolution": "Duplicate"})
    done = live.fetch(created.remote_id)
    assert (done.fields["status"], done.fields["resolution"]) == ("Done", "Duplicate")
    assert sim.get_issue(created.key)["fields"]["resolution"]["name"] == "Duplicate"
    with pytest.raises(PermanentRemoteError, match=r"no transition from status 'Done' to "
                                                   r"'Cancelled'; reachable from there: "
                                                   r"In Progress, To Do"):
        live.update(created.remote_id, {"status": "Cancelled"})


def test_live_create_straight_into_a_later_status(sim, live):
    created = live.create({"summary": "Already being handled", "status": "In Progress"},
                          correlation_id="inc-5")
    assert created.fields["status"] == "In Progress"
    assert sim.get_issue(created.key)["fields"]["status"]["name"] == "In Progress"


def test_live_comments_round_trip_with_restriction(sim, live):
    created = live.create({"summary": "Checkout is down"}, correlation_id="inc-3")
    live.add_comment(created.remote_id, "Rolled back release 42")
    live.add_comment(created.remote_id, "Root cause: bad config", channel="comment:Developers")
    sim.clock.advance(5)
    sim.human_comment(created.key, "Customers confirm recovery")
    comments = live.list_comments(created.remote_id)
    assert [(c.body, c.channel, c.restricted) for c in comments] == [
        ("Rolled back release 42", "comment", False),
        ("Root cause: bad config", "comment:Developers", True),
        ("Customers confirm recovery", "comment", False)]
    assert comments[0].author != comments[2].author


def test_live_webhook_signature_is_accepted_and_a_forged_one_refused(sim, live, receiver):
    issue = sim.human_create({"summary": "Queue backlog"})
    headers, body = receiver.next()
    assert live.parse_webhook(headers, body) == [issue["id"]]
    impostor = JiraConnector("jira", url=sim.base_url, username="syncd", token="syncd-api-token",
                             project="OPS", webhook_secret="another-secret")
    with pytest.raises(WebhookRejected) as raised:
        impostor.parse_webhook(headers, body)
    assert raised.value.status == 401
    with pytest.raises(WebhookRejected):
        live.parse_webhook(headers, body.replace(b"Queue backlog", b"Queue drained"))


def test_polled_and_fetched_issues_carry_their_comments_so_the_engine_needs_no_extra_read(sim, live):
    created = live.create({"summary": "Checkout is down"}, correlation_id="inc-5")
    sim.human_comment(created.key, "Rolled back the deploy")
    live.add_comment(created.remote_id, "Paged the on-call", channel="comment:Developers")
    fetched = live.fetch(created.remote_id)
    polled, _ = live.fetch_changes(SyncCursor())
    for record in (fetched, polled[0]):
        assert [(c.body, c.channel) for c in record.comments] == [
            ("Rolled back the deploy", "comment"), ("Paged the on-call", "comment:Developers")]
        assert "comment" not in record.fields
    assert list(fetched.comments) == live.list_comments(created.remote_id)


def test_a_capped_embedded_comment_list_is_reported_as_unknown(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    raw = issue_json("10001", "OPS-1", "2026-01-01T10:00:00.000+0000")
    raw["fields"]["comment"] = {"comments": [], "maxResults": 0, "total": 3, "startAt": 0}
    api.get(f"{API}/issue/10001", json=raw)
    assert connector().fetch("10001").comments is None


# -- reading many issues at once ---------------------------------------------------------------

def test_fetch_many_on_cloud_is_one_id_in_search_per_50_ids_with_comments_and_reconciled(api):
    api.get(f"{API}/serverInfo", json=CLOUD_INFO)
    asked = [str(10001 + n) for n in range(60)]

    def answer(request):
        """The issues the JQL's id list names, except 10007, which was deleted."""
        jql = parse_qs(urlsplit(request.url).query)["jql"][0]
        ids = jql.split("(", 1)[1].split(")", 1)[0].split(", ")
        issues = [issue_json(i, f"OPS-{int(i) - 10000}", "2026-01-01T10:00:00.000+0000",
                             comment={"comments": [], "maxResults": 0, "total": 0, "startAt": 0})
                  for i in ids if i != "10007"]
        return 200, {}, json.dumps({"issues": issues, "isLast": True})

    api.add_callback(responses.GET, f"{API}/search/jql", callback=answer)
    records = connector().fetch_many([*asked, "10003"])
    searches = [query(c) for c in api.calls if "/search/jql" in c.request.url]
    assert [s["jql"][0] for s in searches] == [
        f"id in ({', '.join(asked[:50])}) ORDER BY key ASC",
        f"id in ({', '.join(asked[50:])}) ORDER BY key ASC"]
    assert searches[0]["reconcileIssues"] == asked[:50]       # read-after-write on Cloud
    assert "comment" in searches[0]["fields"]
    assert [r.remote_id for r in records] == [i for i in asked if i != "10007"]
    assert all(r.comments == () for r in records)


def test_fetch_many_on_server_pages_with_start_at(api):
    api.get(f"{API}/serverInfo", json=SERVER_INFO)
    issues = [issue_json(str(10001 + n), f"OPS-{n + 1}", "2026-01-01T10:00:00.000+0000")
              for n in range(3)]
    pages = [api.get(f"{API}/search", match=[responses.matchers.query_param_matcher(
        {"startAt": str(at)}, strict_match=False)], json={
        "startAt": at, "maxResults": 2, "total": 3, "issues": issues[at:at + 2]}) for at in (0, 2)]
    records = connector(page_size=2).fetch_many(["10001", "10002", "10003"])
    assert [r.key for r in records] == ["OPS-1", "OPS-2", "OPS-3"]
    assert [p.call_count for p in pages] == [1, 1]
    assert "reconcileIssues" not in query(pages[0].calls[0])


def test_live_fetch_many_skips_a_deleted_issue_in_one_search(sim, live):
    assert live.is_cloud == sim.cloud                     # server info read once, beforehand
    live.check_auth()                                     # and who we are
    made = [live.create({"summary": f"issue {n}"}, correlation_id=f"inc-{n}") for n in range(3)]
    sim.human_comment(made[0].key, "Rolled back the deploy")
    live.add_comment(made[2].remote_id, "Paged the on-call", channel="comment:Developers")
    with requests.Session() as session:
        session.auth = ("syncd", "syncd-api-token")
        session.delete(f"{sim.base_url}/rest/api/2/issue/{made[1].remote_id}").raise_for_status()
    asked = [made[2].remote_id, made[1].remote_id, made[0].remote_id]
    records = []
    sent = requests_made(sim, live, lambda: records.extend(live.fetch_many(asked)))
    assert [r.key for r in records] == [made[2].key, made[0].key]
    assert [line.split("?")[0] for line in sent] == [
        "GET /rest/api/2/search/jql" if sim.cloud else "GET /rest/api/2/search"]
    for record in records:
        assert list(record.comments) == live.list_comments(record.remote_id)
    assert [c.body for c in records[0].comments] == ["Paged the on-call"]
    assert live.fetch_many([made[1].remote_id]) == []


# -- retries after a lost answer, and polls while people edit ----------------------------------

def on_the_wire(jira: JiraConnector, method: str, path_end: str, *, arrives: bool) -> list[int]:
    """Make the first ``method`` request whose path ends with ``path_end`` fail with a reset:
    after the server handled it (``arrives``, its answer lost) or before it was sent. Returns
    a list that counts the matching requests the connector sent."""
    real = jira._http.request
    sent: list[int] = []

    def request(method_: str, url: str, *args, **kwargs):
        matches = method_.upper() == method and urlsplit(url).path.endswith(path_end)
        if matches:
            sent.append(1)
            if len(sent) == 1 and not arrives:
                raise requests.ConnectionError("connection refused")
        response = real(method_, url, *args, **kwargs)
        if matches and len(sent) == 1:
            raise requests.ConnectionError("connection reset after the request was processed")
        return response

    jira._http.request = request
    return sent


@pytest.fixture
def live_on_sim_clock(sim):
    """A connector on the simulator's clock, so "since the first attempt" means the same time."""
    jira = JiraConnector("jira-retry", url=sim.base_url, username="syncd",
                         token="syncd-api-token", project="OPS", page_size=2, clock=sim.clock,
                         policy=RetryPolicy(max_attempts=3, max_total_seconds=30))
    yield jira
    jira.close()


def test_live_a_comment_whose_answer_was_lost_is_posted_once(sim, live_on_sim_clock):
    jira = live_on_sim_clock
    issue = sim.human_create({"summary": "Checkout is down"})
    sim.human_comment(issue["key"], "rolled back deploy 42")      # a person's twin is not ours
    posts = on_the_wire(jira, "POST", "/comment", arrives=True)

    sent = requests_made(sim, jira, lambda: jira.add_comment(issue["id"],
                                                             "rolled back deploy 42\r\n"))

    bodies = [c["body"] for c in sim.comments(issue["key"])]
    assert bodies == ["rolled back deploy 42", "rolled back deploy 42\r\n"]
    assert len(posts) == 1
    # The retry's cost: who we are (read once per process) and one newest-first page of comments.
    assert [line.split("?")[0] for line in sent] == [
        f"POST /rest/api/2/issue/{issue['id']}/comment", "GET /rest/api/2/myself",
        f"GET /rest/api/2/issue/{issue['id']}/comment"]


def test_live_a_comment_that_never_arrived_is_posted_even_when_an_older_twin_exists(
        sim, live_on_sim_clock):
    jira = live_on_sim_clock
    issue = sim.human_create({"summary": "Checkout is down"})
    jira.add_comment(issue["id"], "acknowledged")
    sim.clock.advance(600)                      # well before this note's first attempt
    posts = on_the_wire(jira, "POST", "/comment", arrives=False)

    comment = jira.add_comment(issue["id"], "acknowledged", channel="comment:Developers")

    assert len(posts) == 2 and comment.channel == "comment:Developers"
    assert [(c["body"], bool(c.get("visibility"))) for c in sim.comments(issue["key"])] == [
        ("acknowledged", False), ("acknowledged", True)]


def test_live_property_mode_create_whose_answer_was_lost_is_not_duplicated(sim):
    jira = JiraConnector("jira-property", url=sim.base_url, username="syncd",
                         token="syncd-api-token", project="OPS", correlation="property",
                         clock=sim.clock, policy=RetryPolicy(max_attempts=3, max_total_seconds=30))
    sim.human_create({"summary": "Someone else's incident"})
    posts = on_the_wire(jira, "POST", "/rest/api/2/issue", arrives=True)

    created = jira.create({"summary": "Checkout is down"}, correlation_id="inc-7")

    assert len(posts) == 1 and created.correlation_id == "inc-7"
    assert sim.search('project = OPS AND summary ~ "Checkout"') == [created.key]
    assert sim.get_issue(created.key)["properties"] == {"syncd": {"correlationId": "inc-7"}}
    jira.close()


def test_live_poll_reads_an_issue_that_an_edit_mid_poll_shifts_across_a_page_boundary(
        sim, live_on_sim_clock):
    jira = live_on_sim_clock
    keys = []
    for n in range(5):
        keys.append(sim.human_create({"summary": f"issue {n}"})["key"])
        sim.clock.advance(300)                  # minutes apart: each page moves the window
    real = jira._search_page
    pages = []

    def search_page(*args, **kwargs):
        pages.append(1)
        if len(pages) == 2:                     # a person edits the first issue between pages
            sim.human_update(keys[0], {"summary": "issue 0, edited"})
        return real(*args, **kwargs)

    jira._search_page = search_page
    records, cursor = jira.fetch_changes(SyncCursor())

    assert sorted(r.key for r in records) == sorted(keys)
    assert [r.fields["summary"] for r in records if r.key == keys[0]] == ["issue 0, edited"]
    assert [r.key for r in records][-1] == keys[0]            # oldest first: the edit is newest
    jira._search_page = real
    assert jira.fetch_changes(cursor)[0] == []
