"""Writing an incident to a remote and reading it back changes nothing (the no-echo invariant's
foundation): canonical -> remote -> canonical is the identity for every two-way field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from syncd.connectors.base import Ref
from syncd.mapping import load_mapping
from syncd.mapping.loader import default_mapping_path
from syncd.incidents.fields import INCIDENT_STATUSES as STATUSES, PRIORITIES

# ServiceNow's priority lookup (impact x urgency), from the reference facts: the remote computes it.
SERVICENOW_PRIORITY = {
    ("1", "1"): "1", ("1", "2"): "2", ("1", "3"): "3",
    ("2", "1"): "2", ("2", "2"): "3", ("2", "3"): "4",
    ("3", "1"): "3", ("3", "2"): "4", ("3", "3"): "5",
}

SERVICENOW = load_mapping(default_mapping_path("servicenow"))
JIRA = load_mapping(default_mapping_path("jira"))


def as_remote_stores_it(system: str, written: dict[str, Any]) -> dict[str, Any]:
    """What the connector hands back after the write: references resolved into attribute dicts,
    and ServiceNow's computed priority."""
    record = {}
    for name, value in written.items():
        if isinstance(value, Ref):
            other_id = "sys_id" if system == "servicenow" else "displayName"
            value = {other_id: "someone else's attribute", value.match: value.value}
        record[name] = value
    if system == "servicenow" and "impact" in written:
        record["priority"] = SERVICENOW_PRIORITY[(written["impact"], written["urgency"])]
    return record


def two_way(mapping) -> set[str]:
    return set(mapping.canonical_fields_in & mapping.canonical_fields_out)


names = st.text(min_size=1, max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)
numbers = st.from_regex(r"SYN-[1-9][0-9]{0,5}", fullmatch=True)

servicenow_incidents = st.fixed_dictionaries({
    "title": st.text(max_size=80), "description": st.text(max_size=200),
    "status": st.sampled_from(STATUSES),
    "priority": st.sampled_from(PRIORITIES),        # ServiceNow always computes one
    "group": st.none() | names, "assignee": st.none() | names,
})
jira_incidents = st.fixed_dictionaries({
    "title": st.text(max_size=80), "description": st.text(max_size=200),
    "status": st.sampled_from(STATUSES),
    "priority": st.none() | st.sampled_from(PRIORITIES),
    "assignee": st.none() | names,
    "custom.customer_impact": json_values,
})


def test_the_round_trips_cover_every_two_way_field_of_the_defaults():
    assert two_way(SERVICENOW) == {"title", "description", "status", "priority", "group", "assignee"}
    assert two_way(JIRA) == {"title", "description", "status", "priority", "assignee",
                             "custom.customer_impact"}


@settings(max_examples=150, deadline=None)
@given(incident=servicenow_incidents, number=numbers, creating=st.booleans())
def test_servicenow_round_trip_is_the_identity(incident, number, creating):
    written = SERVICENOW.to_remote(incident, context={"number": number, "id": 7}, creating=creating)
    read_back = SERVICENOW.to_canonical(as_remote_stores_it("servicenow", written))
    assert {name: read_back[name] for name in two_way(SERVICENOW)} == incident


@settings(max_examples=150, deadline=None)
@given(incident=jira_incidents, number=numbers, creating=st.booleans())
def test_jira_round_trip_is_the_identity(incident, number, creating):
    written = JIRA.to_remote(incident, context={"number": number, "id": 7}, creating=creating)
    assert written["summary"] == f"[{number}] {incident['title']}"
    read_back = JIRA.to_canonical(as_remote_stores_it("jira", written))
    assert {name: read_back[name] for name in two_way(JIRA)} == incident


@pytest.mark.parametrize("priority", PRIORITIES)
def test_servicenow_impact_and_urgency_pairs_compute_exactly_the_priority(priority):
    written = SERVICENOW.to_remote({"priority": priority}, context={}, creating=False)
    assert set(written) == {"impact", "urgency"}
    assert SERVICENOW_PRIORITY[(written["impact"], written["urgency"])] == priority[1]


@pytest.mark.parametrize("code, status", [("1", "triggered"), ("2", "acknowledged"), ("3", "acknowledged"),
                                          ("6", "resolved"), ("7", "resolved"), ("8", "resolved")])
def test_every_servicenow_state_reads_as_its_status_and_settles_after_one_write(code, status):
    assert SERVICENOW.to_canonical({"state": code}) == {"status": status}
    written = SERVICENOW.to_remote({"status": status}, context={"number": "SYN-1"}, creating=False)
    assert SERVICENOW.to_canonical({"state": written["state"]}) == {"status": status}
