"""The ServiceNow simulator, driven by the real pysnow client and by plain requests over loopback.

Each test is a small story an integration would live through against a real instance."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pysnow
import pytest
import requests

from syncd.clock import ManualClock
from syncd.simulators.base import Fault, HTTPError
from syncd.simulators.servicenow import (WEBHOOK_SECRET_HEADER, ServiceNowSimulator, priority_for,
                                         stable_sys_id)

API_USER, API_PASSWORD = "syncd.integration", "s3cret"
INCIDENTS = "/api/now/table/incident"


@pytest.fixture
def clock():
    return ManualClock(datetime(2026, 1, 22, 14, 12, 37, tzinfo=timezone.utc))


@pytest.fixture
def sim(clock):
    simulator = ServiceNowSimulator(users={API_USER: API_PASSWORD, "admin": "admin"}, clock=clock)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def snow(sim):
    client = pysnow.Client(host=f"127.0.0.1:{sim.port}", use_ssl=False, user=API_USER,
                           password=API_PASSWORD)
    yield client
    client.close()


@pytest.fixture
def api(sim):
    """A requests session logged in as the integration user; call with a path."""
    session = requests.Session()
    session.auth = (API_USER, API_PASSWORD)

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, sim.base_url + path, timeout=10, **kwargs)

    yield call
    session.close()


def incidents(snow):
    """A fresh Resource per operation: pysnow leaks parameters between calls on one Resource."""
    return snow.resource(api_path="/table/incident")


# -- creating and reading ------------------------------------------------------------------------
def test_pysnow_create_returns_the_whole_record_as_strings(sim, snow, clock):
    record = incidents(snow).create(payload={
        "short_description": "Checkout is down", "impact": 1, "urgency": 2,
        "assignment_group": sim.group_sys_id("Network"), "correlation_id": "syncd-42",
        "correlation_display": "syncd"}).one()

    assert re.fullmatch(r"[0-9a-f]{32}", record["sys_id"])
    assert record["number"] == "INC0010001"
    assert all(isinstance(v, (str, dict)) for v in record.values())
    assert record["impact"] == "1" and record["urgency"] == "2" and record["priority"] == "2"
    assert record["state"] == "1" and record["active"] == "true" and record["sys_mod_count"] == "0"
    group = sim.group_sys_id("Network")
    assert record["assignment_group"] == {
        "link": f"{sim.base_url}/api/now/table/sys_user_group/{group}", "value": group}
    assert record["assigned_to"] == ""
    assert record["sys_created_on"] == record["sys_updated_on"] == "2026-01-22 14:12:37"
    assert record["sys_created_by"] == record["sys_updated_by"] == API_USER
    assert record["opened_by"]["value"] == sim.user_sys_id(API_USER)
    assert record["correlation_id"] == "syncd-42" and record["correlation_display"] == "syncd"
    assert incidents(snow).create(payload={"short_description": "two"}).one()["number"] == "INC0010002"


def test_post_answers_201_and_honours_sysparm_fields(api):
    response = api("POST", INCIDENTS, params={"sysparm_fields": "number,sys_id,nonsense"},
                   json={"short_description": "x", "no_such_field": "dropped"})
    assert response.status_code == 201
    assert set(response.json()["result"]) == {"number", "sys_id"}


def test_pysnow_leaked_query_and_limit_on_create_are_ignored_but_fields_trim_the_answer(sim, snow):
    incidents(snow).create(payload={"short_description": "first"})
    resource = incidents(snow)
    resource.get(query={"number": "INC0010001"}, limit=1, fields=["number"]).one()

    created = resource.create(payload={"short_description": "second"}).one()

    assert created == {"number": "INC0010002"}
    assert sim.get_incident("INC0010002")["short_description"] == "second"
    assert sim.get_incident("INC0010001")["short_description"] == "first"


def test_get_one_and_missing_records(sim, api):
    created = sim.human_create({"short_description": "x"})
    assert api("GET", f"{INCIDENTS}/{created['sys_id']}").json()["result"]["number"] == "INC0010001"
    missing = api("GET", f"{INCIDENTS}/{'0' * 32}")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"message": "No Record found", "detail":
                              "Record doesn't exist or ACL restricts the record retrieval"},
                              "status": "failure"}
    assert api("GET", "/api/now/table/no_such_table").status_code == 400
    empty = api("GET", INCIDENTS, params={"sysparm_query": "number=INC9999999"})
    assert empty.status_code == 200 and empty.json() == {"result": []}


def test_v2_path_and_post_with_own_sys_id(api):
    wanted = "a" * 32
    created = api("POST", "/api/now/v2/table/incident", json={"sys_id": wanted, "short_description": "x"})
    assert created.status_code == 201 and created.json()["result"]["sys_id"] == wanted
    assert api("GET", f"/api/now/v2/table/incident/{wanted}").status_code == 200


def test_bad_payloads_get_clear_errors(api):
    broken = api("POST", INCIDENTS, data=b"{not json")
    assert broken.status_code == 400 and broken.json()["status"] == "failure"
    nested = api("POST", INCIDENTS, json={"short_description": ["a", "b"]})
    assert nested.status_code == 400 and "short_description" in nested.json()["error"]["detail"]


# -- updating ------------------------------------------------------------------------------------
def test_pysnow_update_moves_version_timestamp_and_author(sim, snow, clock):
    created = sim.human_create({"short_description": "x"})
    clock.advance(90)
    updated = incidents(snow).update(query={"sys_id": created["sys_id"]},
                                     payload={"state": "2", "urgency": "1"}).one()
    assert updated["sys_mod_count"] == "1"
    assert updated["sys_updated_on"] == "2026-01-22 14:14:07"
    assert updated["sys_updated_by"] == API_USER and updated["sys_created_by"] == "beth.anglin"
    assert updated["state"] == "2" and updated["priority"] == "3"


def test_patch_and_put_answer_200_and_ignore_stray_query(sim, api):
    created = sim.human_create({"short_description": "x"})
    for method, text in (("PATCH", "patched"), ("PUT", "put")):
        response = api(method, f"{INCIDENTS}/{created['sys_id']}",
                       params={"sysparm_query": "number=NOPE", "sysparm_limit": "1",
                               "sysparm_fields": "short_description,sys_mod_count"},
                       json={"short_description": text})
        assert response.status_code == 200
        assert response.json()["result"]["short_description"] == text
    assert sim.get_incident(created["sys_id"])["sys_mod_count"] == "2"


def test_an_update_that_changes_nothing_is_not_saved(sim, api, clock):
    created = sim.human_create({"short_description": "same", "impact": "2"})
    clock.advance(60)
    response = api("PATCH", f"{INCIDENTS}/{created['sys_id']}", json={"short_description": "same", "impact": 2})
    assert response.json()["result"]["sys_mod_count"] == "0"
    assert response.json()["result"]["sys_updated_on"] == created["sys_updated_on"]


def test_priority_is_computed_and_cannot_be_written(sim, api):
    assert [[priority_for(str(i), str(u)) for u in (1, 2, 3)] for i in (1, 2, 3)] == [
        ["1", "2", "3"], ["2", "3", "4"], ["3", "4", "5"]]
    created = api("POST", INCIDENTS, json={"short_description": "x", "priority": "1"}).json()["result"]
    assert created["priority"] == "5"
    updated = api("PATCH", f"{INCIDENTS}/{created['sys_id']}",
                  json={"impact": "1", "urgency": "1", "priority": "5", "sys_mod_count": "99",
                        "number": "INC1"}).json()["result"]
    assert (updated["priority"], updated["sys_mod_count"], updated["number"]) == ("1", "1", "INC0010001")


def test_delete_answers_204_with_an_empty_body(sim, snow, api):
    first = sim.human_create({"short_description": "x"})
    second = sim.human_create({"short_description": "y"})
    response = api("DELETE", f"{INCIDENTS}/{first['sys_id']}")
    assert response.status_code == 204 and response.content == b""
    assert api("DELETE", f"{INCIDENTS}/{first['sys_id']}").status_code == 404
    assert incidents(snow).delete(query={"sys_id": second["sys_id"]}) == {"status": "record deleted"}
    assert sim.get_incident(second["sys_id"]) is None


# -- resolution ----------------------------------------------------------------------------------
def test_resolving_without_close_info_is_refused_like_the_data_policy(sim, api, snow):
    created = sim.human_create({"short_description": "x"})
    response = api("PATCH", f"{INCIDENTS}/{created['sys_id']}", json={"state": "6", "close_code": "Solved"})
    assert response.status_code == 403
    assert response.json() == {"error": {"message": "Operation Failed", "detail":
                               "Data Policy Exception: The following fields are mandatory: Resolution notes"},
                               "status": "failure"}
    assert sim.get_incident(created["sys_id"]) == created
    with pytest.raises(requests.HTTPError) as raised:
        incidents(snow).update(query={"sys_id": created["sys_id"]}, payload={"state": "7"}).one()
    assert raised.value.response.status_code == 403
    refused = api("POST", INCIDENTS, json={"short_description": "y", "state": "6"})
    assert refused.status_code == 403 and sim.get_incident("INC0010002") is None


def test_resolve_close_and_reopen_stamp_and_clear_times(sim, api, clock):
    created = sim.human_create({"short_description": "x"})
    clock.advance(60)
    resolved = api("PATCH", f"{INCIDENTS}/{created['sys_id']}", json={
        "state": 6, "close_code": "Solved (Permanently)", "close_notes": "restarted"}).json()["result"]
    assert resolved["active"] == "false" and resolved["resolved_at"] == "2026-01-22 14:13:37"
    assert resolved["resolved_by"]["value"] == sim.user_sys_id(API_USER) and resolved["closed_at"] == ""
    clock.advance(60)
    reopened = api("PATCH", f"{INCIDENTS}/{created['sys_id']}", json={"state": "2"}).json()["result"]
    assert reopened["active"] == "true" and reopened["resolved_at"] == "" and reopened["resolved_by"] == ""
    closed = api("PATCH", f"{INCIDENTS}/{created['sys_id']}", json={"state": "7"}).json()["result"]
    assert closed["closed_at"] == closed["resolved_at"] == "2026-01-22 14:14:37"
    canceled = sim.human_create({"short_description": "y", "state": "8"})
    assert canceled["active"] == "false" and canceled["resolved_at"] == ""


# -- journal -------------------------------------------------------------------------------------
def test_work_notes_and_comments_append_journal_entries_and_read_back_empty(sim, api, snow, clock):
    created = api("POST", INCIDENTS, json={"short_description": "x", "work_notes": "paged on-call"}).json()["result"]
    assert created["work_notes"] == "" and created["comments"] == ""
    clock.advance(5)
    incidents(snow).update(query={"sys_id": created["sys_id"]}, payload={"comments": "we are on it"})
    clock.advance(5)
    api("PATCH", f"{INCIDENTS}/{created['sys_id']}", json={"work_notes": "db failover"})
    sim.human_add_journal(created["sys_id"], "comments", "thanks", user="david.loo")

    query = (f"element_id={created['sys_id']}^element=work_notes^ORelement=comments"
             "^ORDERBYsys_created_on")
    entries = snow.resource(api_path="/table/sys_journal_field").get(query=query).all()
    assert [(e["element"], e["value"], e["sys_created_by"]) for e in entries] == [
        ("work_notes", "paged on-call", API_USER), ("comments", "we are on it", API_USER),
        ("work_notes", "db failover", API_USER), ("comments", "thanks", "david.loo")]
    assert all(e["name"] == "incident" and e["element_id"] == created["sys_id"] for e in entries)
    assert entries[0]["sys_created_on"] == "2026-01-22 14:12:37"
    assert sim.get_incident(created["sys_id"])["sys_mod_count"] == "3"
    assert [e["value"] for e in sim.journal(created["sys_id"])] == [e["value"] for e in entries]

    shown = api("GET", f"{INCIDENTS}/{created['sys_id']}",
                params={"sysparm_display_value": "true", "sysparm_fields": "comments"}).json()["result"]
    assert shown["comments"] == ("2026-01-22 14:12:47 - David Loo (Additional comments)\nthanks\n\n"
                                 f"2026-01-22 14:12:42 - {API_USER} (Additional comments)\nwe are on it\n\n")
    refused = api("POST", "/api/now/table/sys_journal_field", json={"value": "sneaky"})
    assert refused.status_code == 403


# -- references ----------------------------------------------------------------------------------
def test_reference_writes_take_sys_ids_and_unique_display_values(sim, api):
    beth, network = sim.user_sys_id("beth.anglin"), sim.group_sys_id("Network")
    by_name = api("POST", INCIDENTS, json={"assigned_to": "Beth Anglin", "assignment_group": "Network",
                                           "caller_id": "david.loo"}).json()["result"]
    assert by_name["assigned_to"]["value"] == beth and by_name["assignment_group"]["value"] == network
    assert by_name["caller_id"]["value"] == sim.user_sys_id("david.loo")
    by_id = api("PATCH", f"{INCIDENTS}/{by_name['sys_id']}", json={"assigned_to": sim.user_sys_id("fred.luddy"),
                                                                   "assignment_group": ""}).json()["result"]
    assert by_id["assigned_to"]["value"] == sim.user_sys_id("fred.luddy") and by_id["assignment_group"] == ""
    broken = api("PATCH", f"{INCIDENTS}/{by_name['sys_id']}", json={"assigned_to": "nobody"},
                 params={"sysparm_display_value": "all"}).json()["result"]
    assert broken["assigned_to"]["value"] == "nobody" and broken["assigned_to"]["display_value"] == ""


def test_display_values_and_reference_links(sim, api, snow):
    beth = sim.user_sys_id("beth.anglin")
    sim.human_create({"short_description": "x", "assigned_to": beth, "state": "2", "impact": "2"})

    def read(**params):
        return api("GET", INCIDENTS, params={"sysparm_fields": "assigned_to,state,impact,caller_id", **params}).json()["result"][0]

    assert read(sysparm_display_value="False")["state"] == "2"
    shown = read(sysparm_display_value="TRUE")
    assert shown["state"] == "In Progress" and shown["impact"] == "2 - Medium"
    assert shown["assigned_to"] == {"display_value": "Beth Anglin",
                                    "link": f"{sim.base_url}/api/now/table/sys_user/{beth}"}
    every = read(sysparm_display_value="all")
    assert every["state"] == {"display_value": "In Progress", "value": "2"}
    assert every["assigned_to"]["value"] == beth and every["caller_id"] == {"display_value": "", "value": ""}
    assert read(sysparm_exclude_reference_link="true")["assigned_to"] == beth
    assert read(sysparm_exclude_reference_link="True", sysparm_display_value="true")["assigned_to"] == "Beth Anglin"
    via_pysnow = incidents(snow).get(query={}, display_value=True, fields=["state"]).one()
    assert via_pysnow == {"state": "In Progress"}
    everything = api("GET", INCIDENTS, params={"sysparm_fields": ""}).json()["result"][0]
    assert "short_description" in everything and "sys_mod_count" in everything


# -- queries -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def catalogue():
    """A read-only instance shared by the query tests: five incidents an hour apart,
    INC0010001 at 12:00 UTC ... INC0010005 at 16:00 UTC."""
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc))
    rows = [
        {"short_description": "Database down", "state": "1", "impact": "1", "urgency": "1",
         "assignment_group": "Database", "assigned_to": "beth.anglin", "category": "database"},
        {"short_description": "VPN flapping", "state": "2", "impact": "2", "urgency": "2",
         "assignment_group": "Network"},
        {"short_description": "Printer jam", "state": "3", "impact": "3", "urgency": "3"},
        {"short_description": "database slow", "state": "6", "close_code": "Solved",
         "close_notes": "ok", "assignment_group": "Database", "category": "database"},
        {"short_description": "Email delays", "state": "2", "impact": "2", "urgency": "3",
         "assigned_to": "david.loo"},
    ]
    with ServiceNowSimulator(users={API_USER: API_PASSWORD}, clock=clock) as sim:
        for row in rows:
            sim.human_create(row)
            clock.advance(3600)
        yield sim


@pytest.fixture
def catalogue_api(catalogue):
    session = requests.Session()
    session.auth = (API_USER, API_PASSWORD)
    yield lambda method, path, **kwargs: session.request(method, catalogue.base_url + path, timeout=10, **kwargs)
    session.close()


@pytest.fixture
def catalogue_snow(catalogue):
    client = pysnow.Client(host=f"127.0.0.1:{catalogue.port}", use_ssl=False, user=API_USER,
                           password=API_PASSWORD)
    yield client
    client.close()


def numbers(api, query, **params):
    response = api("GET", INCIDENTS, params={"sysparm_query": query, "sysparm_fields": "number", **params})
    assert response.status_code == 200, response.text
    return [int(r["number"][3:]) - 10000 for r in response.json()["result"]]


@pytest.mark.parametrize("query, expected", [
    ("", [1, 2, 3, 4, 5]),
    ("state=2", [2, 5]),
    ("state!=2", [1, 3, 4]),
    ("short_descriptionLIKEdatabase", [4]),                 # case-sensitive
    ("short_descriptionLIKEDatabase", [1]),
    ("short_descriptionSTARTSWITHVPN", [2]),
    ("short_descriptionENDSWITHjam", [3]),
    ("short_descriptionNOT LIKEase", [2, 3, 5]),
    ("stateIN1,3,6", [1, 3, 4]),
    ("stateNOT IN1,3,6", [2, 5]),
    ("assigned_toISEMPTY", [2, 3, 4]),
    ("assigned_toISNOTEMPTY", [1, 5]),
    ("priority<3", [1]),
    ("priority<=3", [1, 2]),
    ("priority>4", [3, 4]),
    ("priority>=4", [3, 4, 5]),
    ("priorityBETWEEN2@4", [2, 5]),
    ("active=true^categoryISEMPTY", [2, 3, 5]),
    ("state=1^ORstate=3", [1, 3]),
    ("category=database^state=1^ORstate=6", [1, 4]),          # OR binds tighter than AND
    ("state=1^NQstate=3^ORstate=6", [1, 3, 4]),
    ("no_such_field=1^state=2", [2, 5]),                      # unknown field dropped
    ("assignment_group.name=Database", [1, 4]),
    ("assigned_to.user_name=david.loo", [5]),
    ("sys_updated_on>=2026-03-01 14:00:00", [3, 4, 5]),
    ("sys_updated_on<2026-03-01 14:00:00", [1, 2]),
    ("sys_updated_on>=javascript:gs.dateGenerate('2026-03-01','15:00:00')", [4, 5]),
    ("sys_created_onBETWEENjavascript:gs.dateGenerate('2026-03-01','13:00:00')"
     "@javascript:gs.dateGenerate('2026-03-01','14:00:00')", [2, 3]),
    ("ORDERBYDESCnumber", [5, 4, 3, 2, 1]),
    ("state=2^ORDERBYDESCsys_updated_on", [5, 2]),
    ("ORDERBYpriority^ORDERBYDESCnumber", [1, 2, 5, 4, 3]),
    ("ORDERBYno_such_field^ORDERBYDESCstate", [4, 3, 2, 5, 1]),   # ties keep insertion order
])
def test_encoded_queries(catalogue_api, query, expected):
    assert numbers(catalogue_api, query) == expected


def test_pysnow_query_builder_dates_and_lists(catalogue_snow):
    snow = catalogue_snow
    since = pysnow.QueryBuilder().field("sys_updated_on").greater_than_or_equal(
        datetime(2026, 3, 1, 15, 0, 0)).AND().field("state").equals(["2", "6"])
    assert [r["number"] for r in incidents(snow).get(query=since).all()] == ["INC0010004", "INC0010005"]
    window = pysnow.QueryBuilder().field("sys_updated_on").between(
        datetime(2026, 3, 1, 12, 30), datetime(2026, 3, 1, 14, 0))
    assert [r["number"] for r in incidents(snow).get(query=window).all()] == ["INC0010002", "INC0010003"]


def test_date_generate_reads_in_the_api_users_time_zone(clock):
    people = [{"user_name": "paris.ops", "name": "Paris Ops", "time_zone": "Europe/Paris"}]
    with ServiceNowSimulator(users={"paris.ops": "pw"}, people=people, clock=clock) as sim:
        sim.human_create({"short_description": "at 14:12:37 UTC"})
        query = "sys_created_on>=javascript:gs.dateGenerate('2026-01-22','15:12:37')"  # 14:12:37 UTC
        found = requests.get(sim.base_url + INCIDENTS, auth=("paris.ops", "pw"), timeout=10,
                             params={"sysparm_query": query}).json()["result"]
        assert len(found) == 1
        later = query.replace("15:12:37", "15:12:38")
        assert requests.get(sim.base_url + INCIDENTS, auth=("paris.ops", "pw"), timeout=10,
                            params={"sysparm_query": later}).json()["result"] == []


def test_pysnow_pages_with_limit_and_offset_and_headers_describe_pages(catalogue_snow, catalogue_api):
    snow, api = catalogue_snow, catalogue_api
    seen, offset = [], 0
    while True:
        page = list(incidents(snow).get(query="ORDERBYsys_updated_on^ORDERBYsys_id", limit=2,
                                        offset=offset, fields=["number"]).all())
        seen += [r["number"] for r in page]
        if len(page) < 2:
            break
        offset += 2
    assert seen == [f"INC001000{n}" for n in range(1, 6)]

    middle = api("GET", INCIDENTS, params={"sysparm_limit": "2", "sysparm_offset": "2",
                                           "sysparm_query": "ORDERBYnumber"})
    assert middle.headers["X-Total-Count"] == "5"
    links = dict((rel, url) for url, rel in re.findall(r'<([^>]+)>;rel="(\w+)"', middle.headers["Link"]))
    assert set(links) == {"first", "prev", "next", "last"}
    assert "sysparm_offset=4" in links["next"] and "sysparm_offset=0" in links["prev"]
    assert "sysparm_offset=4" in links["last"] and "sysparm_query=ORDERBYnumber" in links["first"]
    first = api("GET", INCIDENTS, params={"sysparm_limit": "2"})
    assert 'rel="prev"' not in first.headers["Link"]
    quiet = api("GET", INCIDENTS, params={"sysparm_suppress_pagination_header": "true", "sysparm_no_count": "true"})
    assert "Link" not in quiet.headers and "X-Total-Count" not in quiet.headers
    assert api("GET", INCIDENTS, params={"sysparm_limit": "many"}).status_code == 400


# -- auth and faults -----------------------------------------------------------------------------
def test_wrong_or_missing_credentials_get_401(sim, api):
    for auth in ((API_USER, "wrong"), ("nobody", API_PASSWORD), None):
        response = requests.get(sim.base_url + INCIDENTS, auth=auth, timeout=10)
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "User Not Authenticated"
    client = pysnow.Client(host=f"127.0.0.1:{sim.port}", use_ssl=False, user=API_USER, password="bad")
    with pytest.raises(requests.HTTPError):
        client.resource(api_path="/table/incident").get(query={}).all()


def test_429_carries_retry_after_rate_limit_headers_and_the_servicenow_body(sim, api, clock):
    sim.inject(Fault("status", status=429, retry_after="7", times=1))
    throttled = api("GET", INCIDENTS)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "7"
    assert throttled.headers["X-RateLimit-Limit"] == "100"
    assert throttled.headers["X-RateLimit-Rule"]
    assert int(throttled.headers["X-RateLimit-Reset"]) == int(datetime(2026, 1, 22, 15, tzinfo=timezone.utc).timestamp())
    assert throttled.json() == {"error": {"message": "Rate limit exceeded", "detail":
                                "Rate limit of 100 requests per hour for Table API exceeded"},
                                "status": "failure"}
    assert api("GET", INCIDENTS).status_code == 200


def test_503_connection_reset_and_latency_faults(sim, api):
    sim.inject(Fault("status", status=503, times=1))
    unavailable = api("GET", INCIDENTS)
    assert unavailable.status_code == 503 and unavailable.json()["status"] == "failure"
    sim.inject(Fault("reset", times=1))
    with pytest.raises(requests.ConnectionError):
        api("GET", INCIDENTS)
    sim.inject(Fault("latency", seconds=0.2, method="GET", times=1))
    started = time.monotonic()
    assert api("GET", INCIDENTS).status_code == 200
    assert 0.2 <= time.monotonic() - started < 2.0
    assert sim.count_requests("GET", r"/table/incident$") == 3


def test_requests_per_second_limit_through_the_admin_endpoint(sim, api):
    assert requests.post(sim.base_url + "/_sim/faults", json={"requests_per_second": 3}, timeout=10).status_code == 201
    statuses = [api("GET", INCIDENTS).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    requests.delete(sim.base_url + "/_sim/faults", timeout=10)
    assert api("GET", INCIDENTS).status_code == 200


# -- human edits ---------------------------------------------------------------------------------
def test_human_edit_endpoints_change_records_as_a_person(sim, api, clock):
    created = requests.post(sim.base_url + "/_sim/human/incident", timeout=10, json={
        "user": "david.loo", "fields": {"short_description": "Disk full", "work_notes": "looking"}})
    assert created.status_code == 201
    record = created.json()["result"]
    assert record["sys_created_by"] == "david.loo" and record["opened_by"]["value"] == sim.user_sys_id("david.loo")
    clock.advance(30)
    updated = requests.post(f"{sim.base_url}/_sim/human/incident/{record['sys_id']}", timeout=10, json={
        "user": "fred.luddy", "fields": {"urgency": "1", "comments": "any news?"}}).json()["result"]
    assert (updated["sys_updated_by"], updated["sys_mod_count"], updated["priority"]) == ("fred.luddy", "1", "3")
    assert updated["sys_updated_on"] == "2026-01-22 14:13:07"
    assert [(e["element"], e["sys_created_by"]) for e in sim.journal(record["sys_id"])] == [
        ("work_notes", "david.loo"), ("comments", "fred.luddy")]
    refused = requests.post(f"{sim.base_url}/_sim/human/incident/{record['sys_id']}", timeout=10,
                            json={"fields": {"state": "6"}})
    assert refused.status_code == 403
    with pytest.raises(HTTPError) as raised:
        sim.human_update(record["sys_id"], {"state": "7"})
    assert raised.value.status == 403
    assert requests.post(sim.base_url + "/_sim/human/incident", json={"fields": "x"}, timeout=10).status_code == 400
    assert sim.get_incident("INC0010001")["sys_id"] == record["sys_id"]


# -- webhooks ------------------------------------------------------------------------------------
@pytest.fixture
def receiver():
    """A local endpoint collecting webhook deliveries; ``next()`` waits for the next one."""
    deliveries: list[tuple[dict, dict]] = []
    arrived = threading.Condition()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with arrived:
                deliveries.append((body, dict(self.headers)))
                arrived.notify_all()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    class Receiver:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        taken = 0

        def next(self) -> tuple[dict, dict]:
            with arrived:
                assert arrived.wait_for(lambda: len(deliveries) > self.taken, timeout=5), "no webhook arrived"
                self.taken += 1
                return deliveries[self.taken - 1]

    yield Receiver()
    server.shutdown()
    server.server_close()


def test_every_incident_insert_and_update_posts_a_signed_business_rule_body(receiver, clock, api):
    with ServiceNowSimulator(users={API_USER: API_PASSWORD}, clock=clock, webhook_url=receiver.url,
                             webhook_secret="hook-secret") as sim:
        session = requests.Session()
        session.auth = (API_USER, API_PASSWORD)
        created = session.post(sim.base_url + INCIDENTS, json={"short_description": "x"}, timeout=10).json()["result"]
        body, headers = receiver.next()
        assert body == {"sys_id": created["sys_id"], "number": "INC0010001",
                        "sys_updated_on": "2026-01-22 14:12:37", "sys_mod_count": "0",
                        "operation": "insert", "table": "incident"}
        assert headers["User-Agent"] == "ServiceNow/1.0" and headers[WEBHOOK_SECRET_HEADER] == "hook-secret"

        session.patch(f"{sim.base_url}{INCIDENTS}/{created['sys_id']}", json={"short_description": "x"}, timeout=10)
        clock.advance(10)
        sim.human_add_journal(created["sys_id"], "work_notes", "on it")
        body, _ = receiver.next()          # deliveries are in order, so the no-op PATCH sent nothing
        assert (body["operation"], body["sys_mod_count"], body["sys_updated_on"]) == (
            "update", "1", "2026-01-22 14:12:47")
        session.post(sim.base_url + "/api/now/table/sys_user", json={"user_name": "new.person"}, timeout=10)
        sim.human_update(created["sys_id"], {"impact": "1"}, user="fred.luddy")
        assert receiver.next()[0]["sys_mod_count"] == "2"      # user rows do not fire the rule


# -- persistence, reset, concurrency -------------------------------------------------------------
def test_state_survives_a_restart_through_the_state_file(tmp_path, clock):
    state_file = str(tmp_path / "servicenow.json")
    with ServiceNowSimulator(clock=clock, state_file=state_file) as first:
        created = first.human_create({"short_description": "x", "work_notes": "kept"})
    with ServiceNowSimulator(clock=clock, state_file=state_file) as second:
        assert second.get_incident(created["sys_id"]) == created
        assert [e["value"] for e in second.journal(created["sys_id"])] == ["kept"]
        assert second.human_create({"short_description": "y"})["number"] == "INC0010002"
        assert second.state_to_json()["tables"]["sys_user"]
    with pytest.raises(ValueError, match="version 1"):
        ServiceNowSimulator(clock=clock).state_from_json({"tables": []})


def test_reset_forgets_records_but_keeps_people(sim, api):
    sim.human_create({"short_description": "x"})
    assert requests.post(sim.base_url + "/_sim/reset", timeout=10).status_code == 204
    assert api("GET", INCIDENTS).json()["result"] == []
    users = api("GET", "/api/now/table/sys_user", params={"sysparm_query": "user_name=beth.anglin"}).json()["result"]
    assert users[0]["sys_id"] == stable_sys_id("sys_user", "beth.anglin") == sim.user_sys_id("beth.anglin")
    assert sim.human_create({"short_description": "y"})["number"] == "INC0010001"


def test_concurrent_writers_never_lose_an_update(sim, api):
    created = sim.human_create({"short_description": "x"})
    url = f"{INCIDENTS}/{created['sys_id']}"

    def write(worker: int) -> None:
        for n in range(10):
            assert api("PATCH", url, json={"work_notes": f"{worker}-{n}"}).status_code == 200

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sim.get_incident(created["sys_id"])["sys_mod_count"] == "60"
    assert len(sim.journal(created["sys_id"])) == 60


# -- indexed lookups ------------------------------------------------------------------------------

def sys_ids_of(api, table: str, query: str) -> list[str]:
    answer = api("GET", f"/api/now/table/{table}", params={"sysparm_query": query,
                                                           "sysparm_fields": "sys_id"})
    assert answer.status_code == 200, answer.text
    return [row["sys_id"] for row in answer.json()["result"]]


def test_indexed_queries_answer_exactly_as_a_scan_does_through_edits_and_deletes(sim, api, clock):
    made = [sim.human_create({"short_description": f"incident {n}", "work_notes": f"note {n}"})
            for n in range(6)]
    ids = [row["sys_id"] for row in made]
    clock.advance(5)
    sim.human_update(ids[1], {"short_description": "edited", "comments": "a reply"})
    assert api("DELETE", f"{INCIDENTS}/{ids[4]}").status_code == 204
    asked = ",".join([ids[5], ids[0], ids[4], "0" * 32, ids[1]])
    # An OR inside a clause keeps the index out: the same question answered by a scan.
    scan = "^ORshort_description=no such thing"
    cases = [
        ("incident", f"sys_idIN{asked}"),
        ("incident", f"sys_id={ids[2]}"),
        ("incident", f"number={made[3]['number']}^ORDERBYDESCsys_created_on"),
        ("incident", f"numberIN{made[0]['number']},{made[4]['number']}^short_description=incident 0"),
        ("incident", f"sys_id={ids[0]}^NQnumber={made[2]['number']}"),
        ("sys_journal_field", f"element_idIN{asked}^elementINwork_notes,comments^ORDERBYsys_created_on"),
        ("sys_journal_field", f"element_id={ids[1]}"),
    ]
    for table, query in cases:
        group, _, order = query.partition("^ORDERBY")
        unindexed = "^NQ".join(g + scan for g in group.split("^NQ")) + (f"^ORDERBY{order}" if order else "")
        assert sys_ids_of(api, table, query) == sys_ids_of(api, table, unindexed), query
    assert sys_ids_of(api, "incident", f"sys_idIN{asked}") == [ids[0], ids[1], ids[5]]   # table order
    journal = sys_ids_of(api, "sys_journal_field", f"element_id={ids[1]}^ORDERBYsys_created_on")
    assert [e["sys_id"] for e in sim.journal(ids[1])] == journal and len(journal) == 2
    # A deleted incident's journal stays, as on an instance without a cascade rule.
    assert len(sys_ids_of(api, "sys_journal_field", f"element_idIN{ids[1]},{ids[4]}")) == 3
    assert sim.get_incident(made[2]["number"])["sys_id"] == ids[2]


def test_a_lookup_by_sys_id_tests_only_the_records_it_names(sim, api, monkeypatch):
    import syncd.simulators.servicenow as module

    ids = [sim.human_create({"short_description": f"incident {n}"})["sys_id"] for n in range(40)]
    tested = []
    real = module._matches
    monkeypatch.setattr(module, "_matches", lambda c, actual: tested.append(c) or real(c, actual))
    assert sys_ids_of(api, "incident", f"sys_idIN{ids[7]},{ids[3]}^active=true") == [ids[3], ids[7]]
    assert len(tested) == 4                  # two conditions on two records, not on all forty
    tested.clear()
    assert len(sys_ids_of(api, "incident", "active=true")) == 40
    assert len(tested) == 40


def test_indexes_are_rebuilt_from_the_state_file(tmp_path, clock):
    state_file = str(tmp_path / "servicenow.json")
    with ServiceNowSimulator(clock=clock, state_file=state_file) as first:
        created = first.human_create({"short_description": "x", "comments": "kept"})
    with ServiceNowSimulator(clock=clock, state_file=state_file) as second:
        assert second.get_incident(created["number"])["sys_id"] == created["sys_id"]
        assert [e["value"] for e in second.journal(created["sys_id"])] == ["kept"]
        with requests.Session() as session:
            session.auth = ("admin", "admin")
            answer = session.get(second.base_url + "/api/now/table/sys_journal_field", params={
                "sysparm_query": f"element_idIN{created['sys_id']}"}, timeout=10)
        assert [e["value"] for e in answer.json()["result"]] == ["kept"]
