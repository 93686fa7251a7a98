"""What the engine gets from a mapping: canonical values in, remote values out, refusals with reasons."""

from __future__ import annotations

import textwrap

import pytest

from syncd.connectors.base import Ref
from syncd.mapping import UnmappableValue, load_mapping, parse_mapping
from syncd.mapping.loader import default_mapping_path

SERVICENOW = load_mapping(default_mapping_path("servicenow"))
JIRA = load_mapping(default_mapping_path("jira"))


def mapping(text: str):
    return parse_mapping(textwrap.dedent(text), source="test.yaml")


# -- inbound ---------------------------------------------------------------------------------------

def test_a_servicenow_record_reads_as_canonical_fields():
    record = {
        "short_description": "Checkout returns 502", "description": "since 10:02",
        "state": "2", "priority": "1", "impact": "1", "urgency": "1", "close_notes": "",
        "assignment_group": {"sys_id": "g1", "name": "Payments SRE"},
        "assigned_to": {"sys_id": "u1", "user_name": "beth.anglin", "email": "beth@example.com"},
        "sys_updated_by": "admin",
    }
    assert SERVICENOW.to_canonical(record) == {
        "title": "Checkout returns 502", "description": "since 10:02", "status": "acknowledged",
        "priority": "P1", "urgency": "high", "resolution": None,
        "group": "Payments SRE", "assignee": "beth@example.com",
    }


def test_the_connector_is_told_exactly_which_remote_fields_to_fetch():
    assert SERVICENOW.remote_fields_read == {"short_description", "description", "state", "close_notes",
                                             "priority", "urgency", "assignment_group", "assigned_to"}
    assert JIRA.remote_fields_read == {"summary", "description", "status", "priority", "assignee",
                                       "Customer Impact"}


def test_fields_missing_from_a_record_are_left_out_not_emptied():
    assert JIRA.to_canonical({"status": "Done"}) == {"status": "resolved"}


def test_a_jira_summary_without_the_number_prefix_is_taken_whole():
    assert JIRA.to_canonical({"summary": "Someone retitled this"}) == {"title": "Someone retitled this"}
    assert JIRA.to_canonical({"summary": "[SYN-9] [db] disk ] full"}) == {"title": "[db] disk ] full"}


def test_empty_remote_values_read_as_none_for_optional_fields_and_empty_text_for_required_ones():
    assert JIRA.to_canonical({"description": None, "priority": None, "assignee": None}) == {
        "description": "", "priority": None, "assignee": None}


def test_an_unknown_servicenow_state_is_refused_naming_field_and_value():
    with pytest.raises(UnmappableValue) as caught:
        SERVICENOW.to_canonical({"state": "9"})
    error = caught.value
    assert (error.field, error.value, error.direction) == ("state", "9", "in")
    assert str(error).startswith("remote field 'state': cannot map '9': not in the value_map of status")


def test_an_unknown_jira_status_is_refused_rather_than_guessed():
    with pytest.raises(UnmappableValue, match=r"'status': cannot map 'Blocked'"):
        JIRA.to_canonical({"summary": "x", "status": "Blocked"})


def test_a_reference_without_the_matched_attribute_is_refused():
    with pytest.raises(UnmappableValue, match=r"'assigned_to'.*has no 'email' attribute"):
        SERVICENOW.to_canonical({"assigned_to": {"sys_id": "u1", "user_name": "beth.anglin"}})
    with pytest.raises(UnmappableValue, match=r"expected a reference"):
        SERVICENOW.to_canonical({"assigned_to": "beth.anglin"})


def test_an_empty_status_is_refused():
    with pytest.raises(UnmappableValue, match="not in the value_map of status"):
        SERVICENOW.to_canonical({"state": ""})


def test_a_fallback_catches_remote_values_the_map_does_not_list():
    rules = mapping("""
        system: jira
        fields:
          - canonical: status
            remote: status
            value_map: {"To Do": triggered, "In Progress": acknowledged, Done: resolved}
            fallback: acknowledged
        """)
    assert rules.to_canonical({"status": "Waiting for customer"}) == {"status": "acknowledged"}


def test_value_map_keys_match_numbers_and_their_text_alike():
    rules = mapping("""
        system: servicenow
        fields:
          - canonical: status
            remote: state
            value_map: {1: triggered, 2: acknowledged, 6: resolved}
        """)
    assert rules.to_canonical({"state": "2"}) == rules.to_canonical({"state": 2}) == {"status": "acknowledged"}
    assert rules.to_remote({"status": "resolved"}, context={}, creating=False) == {"state": "6"}


# -- outbound --------------------------------------------------------------------------------------

def test_resolving_in_servicenow_writes_the_close_code_and_the_resolution_note():
    written = SERVICENOW.to_remote({"status": "resolved", "resolution": "Rolled back 4.2"},
                                   context={"number": "SYN-42"}, creating=False)
    assert written == {"state": "6", "close_code": "Solution provided", "close_notes": "Rolled back 4.2"}


def test_resolving_without_a_note_writes_the_default_close_notes_from_context():
    written = SERVICENOW.to_remote({"status": "resolved"}, context={"number": "SYN-42", "resolution": None},
                                   creating=False)
    assert written["close_notes"] == "Resolved in syncd (SYN-42)"
    assert SERVICENOW.to_remote({"status": "resolved"}, context={"number": "SYN-42", "resolution": "db fix"},
                                creating=False)["close_notes"] == "db fix"


def test_acknowledging_writes_no_resolve_fields():
    assert SERVICENOW.to_remote({"status": "acknowledged"}, context={"number": "SYN-1"},
                                creating=False) == {"state": "2"}
    assert JIRA.to_remote({"status": "resolved"}, context={"number": "SYN-1"}, creating=False) == {
        "status": "Done", "resolution": "Done"}


def test_read_only_fields_are_never_written():
    written = SERVICENOW.to_remote({"urgency": "low", "resolution": "x", "service": "checkout"},
                                   context={"number": "SYN-1"}, creating=False)
    assert written == {}


def test_references_go_out_as_refs_for_the_connector_to_resolve():
    assert SERVICENOW.to_remote({"assignee": "beth@example.com", "group": None}, context={},
                                creating=False) == {
        "assigned_to": Ref("email", "beth@example.com"), "assignment_group": None}
    assert JIRA.to_remote({"assignee": "beth@example.com"}, context={}, creating=False) == {
        "assignee": Ref("emailAddress", "beth@example.com")}


def test_no_servicenow_priority_writes_nothing_since_servicenow_computes_it():
    assert SERVICENOW.to_remote({"priority": None}, context={}, creating=False) == {}


def test_an_invalid_canonical_value_is_refused_outbound():
    with pytest.raises(UnmappableValue) as caught:
        JIRA.to_remote({"status": "snoozed"}, context={}, creating=False)
    assert (caught.value.field, caught.value.direction) == ("status", "out")
    assert "must be one of triggered, acknowledged, resolved" in str(caught.value)


def test_a_template_whose_context_is_missing_is_refused():
    with pytest.raises(UnmappableValue, match="'number'.*incident context lacks it"):
        JIRA.to_remote({"title": "Disk full"}, context={}, creating=False)


def test_creating_adds_field_defaults_and_on_create_constants():
    rules = mapping("""
        system: servicenow
        fields:
          - canonical: title
            remote: short_description
          - canonical: group
            remote: assignment_group
            reference: {match: name}
            default: Service Desk
        on_create:
          contact_type: integration
          correlation_display: "syncd {number}"
        """)
    context = {"number": "SYN-3", "group": None}
    assert rules.to_remote({"title": "t", "group": None}, context=context, creating=True) == {
        "contact_type": "integration", "correlation_display": "syncd SYN-3",
        "short_description": "t", "assignment_group": Ref("name", "Service Desk")}
    assert rules.to_remote({"title": "t", "group": None}, context=context, creating=False) == {
        "short_description": "t", "assignment_group": None}
    assert rules.to_remote({"group": "DBA"}, context=context, creating=True)["assignment_group"] == Ref("name", "DBA")


# -- policies and comments -------------------------------------------------------------------------

def test_each_field_has_a_conflict_policy():
    rules = mapping("""
        system: jira
        policy: store_wins
        fields:
          - canonical: title
            remote: summary
          - canonical: status
            remote: status
            policy: remote_wins
            value_map: {"To Do": triggered, "In Progress": acknowledged, Done: resolved}
        """)
    assert rules.policy_for("status") == "remote_wins"
    assert rules.policy_for("title") == "store_wins"
    assert rules.policy_for("priority") == "store_wins"
    assert SERVICENOW.policy_for("status") == "newest_wins"


def test_servicenow_journal_channels_map_to_visibilities_both_ways():
    assert SERVICENOW.comment_visibility("work_notes", False) == "internal"
    assert SERVICENOW.comment_visibility("comments", False) == "public"
    assert SERVICENOW.comment_channel("internal") == ("work_notes", False)
    assert SERVICENOW.comment_channel("public") == ("comments", False)


def test_jira_comments_import_as_internal_and_both_visibilities_go_out_as_plain_comments():
    assert JIRA.comment_visibility("comment", False) == "internal"
    assert JIRA.comment_visibility("comment:Developers", True) == "internal"
    assert JIRA.comment_channel("internal") == ("comment", False)
    assert JIRA.comment_channel("public") == ("comment", False)


def test_comments_can_be_restricted_or_left_out_in_either_direction():
    rules = mapping("""
        system: jira
        fields: []
        comments:
          inbound:
            comment: {plain: public, restricted: null}
          outbound:
            internal: "comment:group:sre-team"
            public: null
        """)
    assert rules.comment_visibility("comment", False) == "public"
    assert rules.comment_visibility("comment:Developers", True) is None
    assert rules.comment_visibility("worklog", False) is None
    assert rules.comment_channel("internal") == ("comment:group:sre-team", True)
    assert rules.comment_channel("public") is None
