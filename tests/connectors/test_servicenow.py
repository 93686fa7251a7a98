"""The ServiceNow connector: against recorded Table API shapes (responses), then through the real
pysnow client against the ServiceNow simulator over loopback HTTP."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import requests
import responses
from responses import matchers

from syncd.clock import ManualClock
from syncd.connectors.base import (AuthError, PermanentRemoteError, Ref, SyncCursor,
                                   WebhookRejected)
from syncd.connectors.servicenow import ServiceNowConnector, and_condition
from syncd.metrics import REGISTRY
from syncd.simulators.base import Fault
from syncd.simulators.servicenow import ServiceNowSimulator
from tests.connectors.simclock import date_header_on_simulator_clock

INSTANCE = "https://acme.service-now.com"
TABLE = f"{INSTANCE}/api/now/table/incident"
USERS = f"{INSTANCE}/api/now/table/sys_user"
GROUPS = f"{INSTANCE}/api/now/table/sys_user_group"
JOURNAL = f"{INSTANCE}/api/now/table/sys_journal_field"
ORDER = "ORDERBYsys_updated_on^ORDERBYsys_id"
BETH = "46d44a23a9fe19810012d100cca80666"
NETWORK = "287ebd7da9fe198100f92cc8d1d2154e"
SECRET = "s3cret-for-webhooks"


def sys_id(n: int) -> str:
    return f"{n:032x}"


def incident(n: int, updated: str, mod_count: int = 0, **fields) -> dict:
    """An incident as the Table API returns it with display_value=false: every value a string."""
    record = {
        "sys_id": sys_id(n), "number": f"INC{10000 + n:07d}", "short_description": f"incident {n}",
        "state": "2", "impact": "2", "urgency": "2", "priority": "3", "active": "true",
        "sys_mod_count": str(mod_count), "sys_updated_on": updated, "sys_updated_by": "beth.anglin",
        "sys_created_on": "2026-01-22 09:00:00", "correlation_id": "", "work_notes": "",
        "comments": "", "assigned_to": "", "assignment_group": "", "caller_id": "",
    }
    record.update(fields)
    return record


def ref(table: str, target: str) -> dict:
    return {"link": f"{INSTANCE}/api/now/table/{table}/{target}", "value": target}


def params(**values) -> list:
    return [matchers.query_param_matcher({k: str(v) for k, v in values.items()}, strict_match=False)]


def empty_journal() -> responses.BaseResponse:
    """The journal query a read of records makes, answered with no entries."""
    return responses.get(JOURNAL, json={"result": []})


def connector(clock: ManualClock | None = None, **overrides) -> ServiceNowConnector:
    options = dict(url=INSTANCE, username="syncd.integration", password="pw",
                   clock=clock or ManualClock(), webhook_secret=SECRET)
    options.update(overrides)
    return ServiceNowConnector("sn-prod", **options)


# -- recorded shapes ----------------------------------------------------------------------------

@responses.activate
def test_changes_are_paged_by_keyset_each_page_starting_after_the_last_record_read():
    rows = [incident(1, "2026-01-22 10:00:00"), incident(2, "2026-01-22 10:00:01"),
            incident(3, "2026-01-22 10:00:02"), incident(4, "2026-01-22 10:00:02"),
            incident(5, "2026-01-22 10:00:05")]
    responses.get(TABLE, json={"result": rows[0:2]},
                  match=params(sysparm_query=f"active=true^{ORDER}", sysparm_limit=2, sysparm_offset=0))
    # Each next page: later than the last record read, or at its second with a greater sys_id;
    # always at offset 0, so an edit between two pages cannot shift what the offset skips.
    responses.get(TABLE, json={"result": rows[2:4]}, match=params(
        sysparm_query=f"active=true^sys_updated_on>=2026-01-22 10:00:01"
                      f"^sys_updated_on>2026-01-22 10:00:01^ORsys_id>{sys_id(2)}^{ORDER}",
        sysparm_limit=2, sysparm_offset=0))
    responses.get(TABLE, json={"result": rows[4:]}, match=params(
        sysparm_query=f"active=true^sys_updated_on>=2026-01-22 10:00:02"
                      f"^sys_updated_on>2026-01-22 10:00:02^ORsys_id>{sys_id(4)}^{ORDER}",
        sysparm_limit=2, sysparm_offset=0))
    journal = empty_journal()
    sn = connector(page_size=2, filter="active=true")
    records, cursor = sn.fetch_changes(SyncCursor())
    assert [r.key for r in records] == ["INC0010001", "INC0010002", "INC0010003", "INC0010004",
                                        "INC0010005"]
    assert cursor.watermark == datetime(2026, 1, 22, 10, 0, 5, tzinfo=timezone.utc)
    assert len(responses.calls) == 4 and journal.call_count == 1     # three pages, one journal read
    assert all(r.comments == () for r in records)


@responses.activate
def test_the_keyset_of_a_next_page_applies_to_every_or_group_of_the_filter():
    first = [incident(1, "2026-01-22 10:04:00"), incident(2, "2026-01-22 10:04:07")]
    keyset = f"sys_updated_on>=2026-01-22 10:04:07^sys_updated_on>2026-01-22 10:04:07^ORsys_id>{sys_id(2)}"
    responses.get(TABLE, json={"result": first}, match=params(
        sysparm_query=f"priority=1^ORpriority=2^sys_updated_on>=2026-01-22 10:03:00"
                      f"^NQcategory=network^sys_updated_on>=2026-01-22 10:03:00^{ORDER}",
        sysparm_offset=0))
    responses.get(TABLE, json={"result": [incident(3, "2026-01-22 10:04:07")]}, match=params(
        sysparm_query=f"priority=1^ORpriority=2^{keyset}^NQcategory=network^{keyset}^{ORDER}",
        sysparm_offset=0))
    empty_journal()
    sn = connector(page_size=2, filter="priority=1^ORpriority=2^NQcategory=network")
    records, _ = sn.fetch_changes(SyncCursor(watermark=datetime(2026, 1, 22, 10, 5,
                                                                tzinfo=timezone.utc)))
    assert [r.remote_id for r in records] == [sys_id(1), sys_id(2), sys_id(3)]


@responses.activate
def test_the_overlapping_window_returns_each_version_once():
    known, edited = incident(1, "2026-01-22 10:04:00", 3), incident(2, "2026-01-22 10:05:30", 1)
    responses.get(TABLE, json={"result": [known, edited]}, match=params(
        sysparm_query=f"sys_updated_on>=2026-01-22 10:03:00^{ORDER}"))
    responses.get(TABLE, json={"result": [known, edited]}, match=params(
        sysparm_query=f"sys_updated_on>=2026-01-22 10:03:30^{ORDER}"))
    empty_journal()
    sn = connector()
    cursor = SyncCursor(watermark=datetime(2026, 1, 22, 10, 5, tzinfo=timezone.utc),
                        seen=frozenset({f"{sys_id(1)}:3"}))
    records, cursor = sn.fetch_changes(cursor)
    assert [(r.remote_id, r.version) for r in records] == [(sys_id(2), "1")]
    assert cursor.watermark == datetime(2026, 1, 22, 10, 5, 30, tzinfo=timezone.utc)
    assert cursor.seen == {f"{sys_id(1)}:3", f"{sys_id(2)}:1"}
    again, same_cursor = sn.fetch_changes(cursor)
    assert again == [] and same_cursor == cursor


@responses.activate
def test_fetch_changes_stops_at_the_limit_and_resumes_after_it():
    rows = [incident(n, f"2026-01-22 10:00:0{n}") for n in range(1, 5)]
    responses.get(TABLE, json={"result": rows}, match=params(sysparm_offset=0, sysparm_query=ORDER))
    responses.get(TABLE, json={"result": rows}, match=params(
        sysparm_query=f"sys_updated_on>=2026-01-22 09:58:02^{ORDER}"))
    empty_journal()
    sn = connector(page_size=10)
    first, cursor = sn.fetch_changes(SyncCursor(), limit=2)
    rest, _ = sn.fetch_changes(cursor, limit=2)
    assert [r.key for r in first] == ["INC0010001", "INC0010002"]
    assert [r.key for r in rest] == ["INC0010003", "INC0010004"]


def test_the_sync_window_applies_to_every_or_group_of_the_filter():
    assert and_condition("", "x>=1") == "x>=1"
    assert and_condition("active=true", "x>=1") == "active=true^x>=1"
    assert (and_condition("priority=1^NQcategory=network", "x>=1")
            == "priority=1^x>=1^NQcategory=network^x>=1")


@responses.activate
def test_a_record_arrives_in_the_plain_shape_with_references_resolved_and_cached():
    row = incident(7, "2026-01-22 14:12:37", 4, correlation_id="syncd-42",
                   assigned_to=ref("sys_user", BETH), assignment_group=ref("sys_user_group", NETWORK),
                   opened_by=ref("sys_user", BETH))
    responses.get(TABLE, json={"result": [row]},
                  match=params(sysparm_query=f"sys_id={sys_id(7)}", sysparm_limit=2))
    users = responses.get(USERS, json={"result": [{
        "sys_id": BETH, "user_name": "beth.anglin", "name": "Beth Anglin",
        "email": "beth.anglin@example.com", "first_name": "Beth", "last_name": "Anglin"}]},
        match=params(sysparm_query=f"sys_idIN{BETH}"))
    groups = responses.get(GROUPS, json={"result": [{
        "sys_id": NETWORK, "name": "Network", "email": "network@example.com"}]},
        match=params(sysparm_query=f"sys_idIN{NETWORK}"))
    empty_journal()
    sn = connector()
    record = sn.fetch(sys_id(7))
    assert record is not None
    assert (record.remote_id, record.key, record.version) == (sys_id(7), "INC0010007", "4")
    assert record.updated_at == datetime(2026, 1, 22, 14, 12, 37, tzinfo=timezone.utc)
    assert record.url == f"{INSTANCE}/nav_to.do?uri=incident.do?sys_id={sys_id(7)}"
    assert record.correlation_id == "syncd-42"
    assert record.fields["assigned_to"] == {
        "sys_id": BETH, "user_name": "beth.anglin", "name": "Beth Anglin",
        "email": "beth.anglin@example.com", "first_name": "Beth", "last_name": "Anglin"}
    assert record.fields["assignment_group"] == {"sys_id": NETWORK, "name": "Network",
                                                 "email": "network@example.com"}
    assert record.fields["caller_id"] is None
    assert record.fields["opened_by"] == BETH          # not a configured reference: just the sys_id
    assert record.fields["state"] == "2" and record.fields["sys_mod_count"] == "4"
    assert "work_notes" not in record.fields and "comments" not in record.fields
    sn.fetch(sys_id(7))
    assert users.call_count == 1 and groups.call_count == 1


@responses.activate
def test_update_is_one_patch_of_the_given_fields_with_refs_resolved_once():
    lookup = responses.get(USERS, json={"result": [{"sys_id": BETH, "user_name": "beth.anglin",
                                                    "name": "Beth Anglin"}]},
                           match=params(sysparm_query="user_name=beth.anglin", sysparm_limit=2))
    patch = responses.patch(f"{TABLE}/{sys_id(3)}", json={"result": incident(
        3, "2026-01-22 11:00:00", 5, state="2", assigned_to=ref("sys_user", BETH))})
    sn = connector()
    fields = {"state": "2", "impact": 1, "assigned_to": Ref("user_name", "beth.anglin"),
              "close_notes": None, "u_flag": True}
    record = sn.update(sys_id(3), fields)
    sn.update(sys_id(3), fields)
    assert record.version == "5" and record.fields["assigned_to"]["user_name"] == "beth.anglin"
    assert patch.call_count == 2 and lookup.call_count == 1
    assert json.loads(patch.calls[0].request.body) == {
        "state": "2", "impact": "1", "assigned_to": BETH, "close_notes": "", "u_flag": "true"}
    assert [c.request.method for c in responses.calls] == ["GET", "PATCH", "PATCH"]


@responses.activate
def test_a_ref_that_matches_no_record_is_a_permanent_error_naming_field_and_value():
    responses.get(USERS, json={"result": []})
    sn = connector()
    with pytest.raises(PermanentRemoteError) as raised:
        sn.update(sys_id(3), {"assigned_to": Ref("user_name", "no.such.person")})
    assert "assigned_to" in str(raised.value) and "no.such.person" in str(raised.value)
    assert len(responses.calls) == 1      # not retried, and nothing written


@responses.activate
def test_a_ref_by_an_attribute_the_table_lacks_is_not_trusted():
    # The API silently drops a condition on an unknown field and answers with any records.
    responses.get(USERS, json={"result": [{"sys_id": BETH, "user_name": "beth.anglin"},
                                          {"sys_id": sys_id(9), "user_name": "david.loo"}]})
    with pytest.raises(PermanentRemoteError, match="u_badge"):
        connector().update(sys_id(3), {"assigned_to": Ref("u_badge", "1234")})


def test_writes_address_records_by_sys_id_only():
    with pytest.raises(PermanentRemoteError, match="not a sys_id"):
        connector().update("../sys_user/x", {"state": "2"})
    with pytest.raises(PermanentRemoteError, match="not a sys_id"):
        connector().add_comment("INC0010001", "x", channel="work_notes")


def test_a_ref_on_a_field_that_is_not_a_reference_is_refused():
    with pytest.raises(PermanentRemoteError, match="short_description"):
        connector().update(sys_id(3), {"short_description": Ref("user_name", "beth.anglin")})


@responses.activate
def test_refused_credentials_name_the_connector():
    responses.get(TABLE, status=401, json={"error": {"message": "User Not Authenticated",
                                                     "detail": "Required to provide Auth information"},
                                           "status": "failure"},
                  match=params(sysparm_limit=1, sysparm_fields="sys_id"))
    with pytest.raises(AuthError) as raised:
        connector().check_auth()
    assert "sn-prod" in str(raised.value) and "User Not Authenticated" in str(raised.value)
    assert len(responses.calls) == 1


@responses.activate
def test_a_429_is_waited_out_and_then_succeeds():
    clock = ManualClock()
    responses.get(TABLE, status=429, headers={"Retry-After": "5"}, json={
        "error": {"message": "Rate limit exceeded",
                  "detail": "Rate limit of 100 requests per hour for Table API exceeded"},
        "status": "failure"})
    responses.get(TABLE, json={"result": [incident(1, "2026-01-22 10:00:00")]})
    empty_journal()
    before = REGISTRY.get_sample_value("syncd_remote_requests_total", {
        "connector": "sn-prod", "operation": "fetch", "status": "429"}) or 0
    record = connector(clock).fetch("INC0010001")
    assert record is not None and record.key == "INC0010001"
    assert clock.monotonic() == 5.0
    assert REGISTRY.get_sample_value("syncd_remote_requests_total", {
        "connector": "sn-prod", "operation": "fetch", "status": "429"}) == before + 1


@responses.activate
def test_a_missing_record_is_none():
    responses.get(TABLE, json={"result": []})
    assert connector().fetch(sys_id(404)) is None


@responses.activate
def test_create_carries_the_correlation_id_and_a_retry_finds_a_lost_create():
    created = incident(8, "2026-01-22 12:00:00", correlation_id="syncd-inc-1")
    post = responses.post(TABLE, body=requests.ConnectionError("connection reset by peer"))
    lookup = responses.get(TABLE, json={"result": [created]}, match=params(
        sysparm_query="correlation_id=syncd-inc-1^ORDERBYsys_created_on"))
    record = connector().create({"short_description": "db down", "impact": "1"},
                                correlation_id="syncd-inc-1")
    assert record.remote_id == sys_id(8) and record.correlation_id == "syncd-inc-1"
    assert post.call_count == 1 and lookup.call_count == 1
    assert json.loads(post.calls[0].request.body) == {
        "short_description": "db down", "impact": "1", "correlation_id": "syncd-inc-1"}


@responses.activate
def test_journal_entries_become_comments_on_their_channel():
    entries = [
        {"sys_id": sys_id(100), "element": "work_notes", "element_id": sys_id(1),
         "value": "Restarted the primary", "sys_created_on": "2026-01-22 10:01:00",
         "sys_created_by": "beth.anglin"},
        {"sys_id": sys_id(101), "element": "comments", "element_id": sys_id(1),
         "value": "We are on it", "sys_created_on": "2026-01-22 10:02:00",
         "sys_created_by": "syncd.integration"}]
    responses.get(JOURNAL, json={"result": entries}, match=params(
        sysparm_query=f"element_id={sys_id(1)}^element=work_notes^ORelement=comments"
                      "^ORDERBYsys_created_on^ORDERBYsys_id"))
    comments = connector().list_comments(sys_id(1))
    assert [(c.remote_id, c.channel, c.body, c.author) for c in comments] == [
        (sys_id(100), "work_notes", "Restarted the primary", "beth.anglin"),
        (sys_id(101), "comments", "We are on it", "syncd.integration")]
    assert comments[0].created_at == datetime(2026, 1, 22, 10, 1, tzinfo=timezone.utc)


@responses.activate
def test_add_comment_writes_the_journal_field_and_returns_the_new_entry():
    patch = responses.patch(f"{TABLE}/{sys_id(1)}", json={"result": {"sys_id": sys_id(1)}})
    responses.get(JOURNAL, json={"result": [
        {"sys_id": sys_id(102), "element": "work_notes", "element_id": sys_id(1),
         "value": "Paged the DBA", "sys_created_on": "2026-01-22 10:03:00",
         "sys_created_by": "syncd.integration"}]})
    comment = connector().add_comment(sys_id(1), "Paged the DBA", channel="work_notes")
    assert json.loads(patch.calls[0].request.body) == {"work_notes": "Paged the DBA"}
    assert (comment.remote_id, comment.channel, comment.body) == (sys_id(102), "work_notes",
                                                                   "Paged the DBA")
    with pytest.raises(ValueError, match="channel"):
        connector().add_comment(sys_id(1), "x", channel="comment")


@responses.activate
def test_a_retried_comment_is_not_written_twice_when_the_first_write_landed():
    patch = responses.patch(f"{TABLE}/{sys_id(1)}", body=requests.ReadTimeout("read timed out"))
    responses.get(JOURNAL, json={"result": [
        {"sys_id": sys_id(103), "element": "comments", "element_id": sys_id(1),
         "value": "Service restored\r\n", "sys_created_on": "2026-01-22 10:04:00",
         "sys_created_by": "syncd.integration"}]}, match=params(
        sysparm_query=f"element_id={sys_id(1)}^elementINcomments^sys_created_by=syncd.integration"
                      "^sys_created_on>=2026-01-22 10:03:55^ORDERBYDESCsys_created_on"))
    clock = ManualClock(datetime(2026, 1, 22, 10, 4, tzinfo=timezone.utc))
    comment = connector(clock).add_comment(sys_id(1), "Service restored", channel="comments")
    assert comment.remote_id == sys_id(103)
    assert patch.call_count == 1


def journal_entry(n: int, record: int, created: str, element: str = "work_notes") -> dict:
    return {"sys_id": sys_id(1000 + n), "element": element, "element_id": sys_id(record),
            "value": f"entry {n}", "sys_created_on": created, "sys_created_by": "beth.anglin"}


def in_list(request, field: str) -> list[str]:
    """The values of ``field``IN... in a request's sysparm_query ([] when it has none)."""
    query = request.params["sysparm_query"]
    if f"{field}IN" not in query:
        return []
    return query.split(f"{field}IN", 1)[1].split("^", 1)[0].split(",")


@responses.activate
def test_fetch_many_reads_100_records_and_their_journals_with_one_query_each():
    existing = [incident(n, "2026-01-22 10:00:00") for n in range(1, 151) if n != 42]

    def table_answer(request):
        """The records whose sys_id or number the IN list names, as the instance would answer."""
        wanted = set(in_list(request, "sys_id")) | set(in_list(request, "number"))
        found = [r for r in existing if r["sys_id"] in wanted or r["number"] in wanted]
        return 200, {}, json.dumps({"result": found})

    responses.add_callback(responses.GET, TABLE, callback=table_answer)
    journal = responses.get(JOURNAL, json={"result": [
        journal_entry(1, 7, "2026-01-22 10:01:00"), journal_entry(2, 120, "2026-01-22 10:02:00"),
        journal_entry(3, 7, "2026-01-22 10:03:00", "comments")]})
    asked = [sys_id(n) for n in range(1, 151)] + ["INC0010007", sys_id(3)]

    records = connector().fetch_many(asked)

    table_calls = [c.request for c in responses.calls if "/incident" in c.request.url]
    assert [(len(in_list(r, "sys_id")), in_list(r, "number")) for r in table_calls] == [
        (100, []), (50, []), (0, ["INC0010007"])]
    assert all(r.params["sysparm_query"].endswith("^ORDERBYsys_id") for r in table_calls)
    assert [len(in_list(c.request, "element_id")) for c in journal.calls] == [100, 49]
    assert journal.calls[0].request.params["sysparm_query"].endswith(
        "^elementINwork_notes,comments^ORDERBYsys_created_on^ORDERBYsys_id")
    # In the order asked, the missing sys_id left out, incident 7 (asked twice) returned once.
    assert [r.remote_id for r in records] == [sys_id(n) for n in range(1, 151) if n != 42]
    by_id = {r.remote_id: r for r in records}
    assert [(c.remote_id, c.channel, c.body) for c in by_id[sys_id(7)].comments] == [
        (sys_id(1001), "work_notes", "entry 1"), (sys_id(1003), "comments", "entry 3")]
    assert [c.body for c in by_id[sys_id(120)].comments] == ["entry 2"]
    assert by_id[sys_id(8)].comments == ()


@responses.activate
def test_a_journal_longer_than_a_page_is_read_page_by_page():
    rows = [incident(1, "2026-01-22 10:00:00"), incident(2, "2026-01-22 10:00:00")]
    responses.get(TABLE, json={"result": rows}, match=params(sysparm_offset=0))
    responses.get(TABLE, json={"result": []}, match=params(sysparm_offset=2))
    entries = [journal_entry(n, 1 + n % 2, f"2026-01-22 10:0{n}:00") for n in range(5)]
    pages = [responses.get(JOURNAL, json={"result": entries[at:at + 2]},
                           match=params(sysparm_offset=at, sysparm_limit=2)) for at in (0, 2, 4)]
    records = connector(page_size=2).fetch_many([sys_id(1), sys_id(2)])
    assert [page.call_count for page in pages] == [1, 1, 1]
    assert [[c.body for c in r.comments] for r in records] == [
        ["entry 0", "entry 2", "entry 4"], ["entry 1", "entry 3"]]


@responses.activate
def test_a_journal_that_cannot_be_read_leaves_comments_unknown_never_partial():
    from syncd.connectors.http import RetryPolicy

    responses.get(TABLE, json={"result": [incident(1, "2026-01-22 10:00:00")]})
    responses.get(JOURNAL, json={"result": [journal_entry(1, 1, "2026-01-22 10:01:00")] * 2},
                  match=params(sysparm_offset=0))
    responses.get(JOURNAL, status=503, body="upstream connect error", match=params(sysparm_offset=2))
    sn = connector(page_size=2, policy=RetryPolicy(max_attempts=2))
    [record] = sn.fetch_many([sys_id(1)])
    assert record.remote_id == sys_id(1) and record.comments is None   # the engine will ask again
    responses.replace(responses.GET, JOURNAL, status=401, json={
        "error": {"message": "User Not Authenticated", "detail": "Required to provide Auth "
                                                                 "information"}, "status": "failure"})
    with pytest.raises(AuthError):           # a refusal is not papered over
        sn.fetch_many([sys_id(1)])


def test_an_in_list_refuses_a_value_with_a_comma():
    with pytest.raises(PermanentRemoteError, match="IN list"):
        connector().fetch_many(["INC1,INC2"])


def test_the_instance_url_may_be_plain_http_with_a_port_or_a_path():
    assert connector(url="http://127.0.0.1:8080/").instance_url == "http://127.0.0.1:8080"
    proxied = connector(url="https://proxy.example.com/servicenow/")
    with responses.RequestsMock() as mock:
        mock.get("https://proxy.example.com/servicenow/api/now/table/incident", json={"result": []})
        proxied.check_auth()
    for bad in ("acme.service-now.com", "ftp://acme.service-now.com"):
        with pytest.raises(ValueError, match="url"):
            connector(url=bad)


# -- webhooks -----------------------------------------------------------------------------------

def test_a_webhook_with_the_shared_secret_names_its_records():
    sn = connector()
    body = json.dumps({"sys_id": sys_id(1), "number": "INC0010001", "operation": "update"}).encode()
    assert sn.parse_webhook({"x-syncd-webhook-secret": SECRET}, body) == [sys_id(1)]
    batch = json.dumps([{"sys_id": sys_id(1)}, {"sys_id": sys_id(2)}, {"sys_id": sys_id(1)}]).encode()
    assert sn.parse_webhook({"X-Syncd-Webhook-Secret": SECRET}, batch) == [sys_id(1), sys_id(2)]


@pytest.mark.parametrize("headers, body, status", [
    ({}, b'{"sys_id": "a"}', 401),
    ({"X-Syncd-Webhook-Secret": "wrong"}, b'{"sys_id": "a"}', 401),
    ({"X-Syncd-Webhook-Secret": SECRET}, b"{not json", 400),
    ({"X-Syncd-Webhook-Secret": SECRET}, b'{"number": "INC0010001"}', 400),
    ({"X-Syncd-Webhook-Secret": SECRET}, b'[{"sys_id": "a"}, {"sys_id": 7}]', 400),
    ({"X-Syncd-Webhook-Secret": SECRET}, b"[]", 400),
])
def test_a_bad_webhook_is_rejected(headers, body, status):
    with pytest.raises(WebhookRejected) as raised:
        connector().parse_webhook(headers, body)
    assert raised.value.status == status


def test_without_a_configured_secret_every_webhook_is_rejected():
    with pytest.raises(WebhookRejected) as raised:
        connector(webhook_secret=None).parse_webhook({"X-Syncd-Webhook-Secret": ""}, b"{}")
    assert raised.value.status == 401 and "webhook_secret" in raised.value.reason


# -- the real pysnow against the simulator ------------------------------------------------------

@pytest.fixture
def sim_clock():
    return ManualClock(datetime(2026, 1, 22, 9, 0, 0, tzinfo=timezone.utc))


@pytest.fixture
def sim(sim_clock):
    simulator = date_header_on_simulator_clock(
        ServiceNowSimulator(users={"syncd.integration": "pw"}, clock=sim_clock).start())
    yield simulator
    simulator.stop()


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def live(sim, clock):
    sn = ServiceNowConnector("sn-sim", url=sim.base_url, username="syncd.integration",
                             password="pw", clock=clock, page_size=3, timeout=5)
    yield sn
    sn.close()


def test_sim_create_with_a_correlation_id_then_find_it(live, sim):
    record = live.create({"short_description": "Checkout is down", "impact": "1", "urgency": "1",
                          "assignment_group": Ref("name", "Network")}, correlation_id="syncd-7f3a")
    assert record.key == "INC0010001" and record.version == "0"
    assert record.fields["priority"] == "1"
    assert record.fields["assignment_group"]["name"] == "Network"
    found = live.find_by_correlation("syncd-7f3a")
    assert found is not None and found.remote_id == record.remote_id
    assert live.find_by_correlation("syncd-other") is None
    assert sim.get_incident(record.remote_id)["correlation_id"] == "syncd-7f3a"


def test_sim_a_human_edit_is_picked_up_exactly_once_across_polls(live, sim, sim_clock):
    first = sim.human_create({"short_description": "VPN flaps"})
    records, cursor = live.fetch_changes(SyncCursor())
    assert [r.remote_id for r in records] == [first["sys_id"]]
    assert live.fetch_changes(cursor)[0] == []
    sim_clock.advance(30)
    sim.human_update(first["sys_id"], {"state": "2", "assigned_to": "david.loo"})
    records, cursor = live.fetch_changes(cursor)
    assert [(r.remote_id, r.version) for r in records] == [(first["sys_id"], "1")]
    assert records[0].fields["assigned_to"]["email"] == "david.loo@example.com"
    assert live.fetch_changes(cursor)[0] == []


def test_sim_paging_reads_every_record_once_even_within_one_second(live, sim, sim_clock):
    created = []
    for n in range(8):
        if n % 3 == 0:
            sim_clock.advance(1)      # several records share each second
        created.append(sim.human_create({"short_description": f"alert {n}"})["sys_id"])
    records, cursor = live.fetch_changes(SyncCursor())
    assert sorted(r.remote_id for r in records) == sorted(created)
    assert live.fetch_changes(cursor)[0] == []


def test_sim_a_record_edited_between_pages_costs_no_unread_peer_of_its_second(sim, sim_clock, clock):
    """Three alerts share a second and a page holds two; one read on the first page is edited
    before the second page is read. An offset into that second would now skip the unread third
    alert, and the next poll's window (watermark - overlap) would already start past it."""
    same_second = [sim.human_create({"short_description": f"disk full {n}"})["sys_id"]
                   for n in range(3)]
    sim_clock.advance(300)
    later = sim.human_create({"short_description": "disk cleaned"})["sys_id"]
    edited = []

    def edit_after_the_first_page(response, *args, **kwargs):
        if "/table/incident" in response.url and not edited:
            edited.append(response.json()["result"][0]["sys_id"])
            sim_clock.advance(300)
            sim.human_update(edited[0], {"state": "2"})

    sn = ServiceNowConnector("sn-sim", url=sim.base_url, username="syncd.integration",
                             password="pw", clock=clock, page_size=2, timeout=5)
    sn.session.hooks["response"].append(edit_after_the_first_page)
    try:
        records, cursor = sn.fetch_changes(SyncCursor())
        rest, _ = sn.fetch_changes(cursor)
    finally:
        sn.close()
    read = [(r.remote_id, r.version) for r in records + rest]
    assert {remote_id for remote_id, _ in read} == {*same_second, later}
    assert (edited[0], "1") in read
    assert len(read) == len(set(read))


def test_sim_update_is_a_patch_that_bumps_sys_mod_count(live, sim):
    created = live.create({"short_description": "Disk full"}, correlation_id="syncd-d1")
    sim.clear_request_log()
    updated = live.update(created.remote_id, {"state": "2", "assigned_to": Ref("user_name", "beth.anglin")})
    assert updated.version == "1" and updated.fields["state"] == "2"
    assert updated.fields["assigned_to"]["user_name"] == "beth.anglin"
    assert sim.count_requests("PATCH") == 1
    assert sim.count_requests("PUT") == 0
    assert sim.count_requests("GET", r"/table/incident") == 0
    assert sim.get_incident(created.remote_id)["sys_mod_count"] == "1"


def test_sim_comments_round_trip(live, sim, sim_clock):
    created = live.create({"short_description": "Latency"}, correlation_id="syncd-c1")
    note = live.add_comment(created.remote_id, "Failing over to eu-west", channel="work_notes")
    sim_clock.advance(5)
    sim.human_add_journal(created.remote_id, "comments", "Customers see errors")
    sim_clock.advance(5)
    reply = live.add_comment(created.remote_id, "Fixed, monitoring", channel="comments")
    comments = live.list_comments(created.remote_id)
    assert [(c.channel, c.body, c.author) for c in comments] == [
        ("work_notes", "Failing over to eu-west", "syncd.integration"),
        ("comments", "Customers see errors", "beth.anglin"),
        ("comments", "Fixed, monitoring", "syncd.integration")]
    assert [comments[0].remote_id, comments[2].remote_id] == [note.remote_id, reply.remote_id]


def test_sim_a_429_storm_is_waited_out(live, sim, clock):
    created = live.create({"short_description": "Storm"}, correlation_id="syncd-s1")
    sim.clear_request_log()
    sim.inject(Fault("status", status=429, retry_after="1", times=3))
    record = live.fetch(created.remote_id)
    assert record is not None and record.remote_id == created.remote_id
    assert clock.monotonic() == 3.0
    assert [(r.status, r.path.rsplit("/", 1)[-1]) for r in sim.request_log()] == [
        (429, "incident"), (429, "incident"), (429, "incident"), (200, "incident"),
        (200, "sys_journal_field")]


def test_sim_wrong_password_is_an_auth_error_naming_the_connector(sim, clock):
    sn = ServiceNowConnector("sn-sim", url=sim.base_url, username="syncd.integration",
                             password="wrong", clock=clock, timeout=5)
    with pytest.raises(AuthError, match="sn-sim"):
        sn.check_auth()
    assert sim.count_requests() == 1



def test_sim_polled_and_batch_read_records_carry_the_journal_list_comments_gives(live, sim, sim_clock):
    made = [live.create({"short_description": f"alert {n}"}, correlation_id=f"syncd-j{n}")
            for n in range(4)]
    for n, record in enumerate(made[:3]):
        for k in range(n + 1):              # 6 entries in all: the journal spans two pages of 3
            sim_clock.advance(1)
            sim.human_add_journal(record.remote_id, ("work_notes", "comments")[k % 2], f"{n}.{k}")
    live.add_comment(made[0].remote_id, "from syncd", channel="comments")
    polled, _ = live.fetch_changes(SyncCursor())
    batch = live.fetch_many([made[2].remote_id, "f" * 32, made[0].remote_id, made[3].key,
                             made[1].remote_id])
    assert [r.remote_id for r in batch] == [made[n].remote_id for n in (2, 0, 3, 1)]
    assert len(polled) == 4
    for record in [*polled, *batch]:
        assert record.comments == tuple(live.list_comments(record.remote_id))
    assert [c.body for c in batch[1].comments] == ["0.0", "from syncd"]
    assert batch[2].comments == ()


def test_sim_a_batch_of_hinted_records_costs_two_requests(sim, clock):
    sn = ServiceNowConnector("sn-sim", url=sim.base_url, username="syncd.integration",
                             password="pw", clock=clock, timeout=5)
    made = [sim.human_create({"short_description": f"alert {n}", "work_notes": f"note {n}"})
            for n in range(30)]
    sim.clear_request_log()
    records = sn.fetch_many([row["sys_id"] for row in made])
    assert [r.key for r in records] == [row["number"] for row in made]
    assert all([c.body for c in r.comments] == [f"note {n}"] for n, r in enumerate(records))
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in sim.request_log()] == [
        ("GET", "incident"), ("GET", "sys_journal_field")]
    sn.close()
