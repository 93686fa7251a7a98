"""Which incidents page, pure: service matching, urgency, and which changes start paging."""

from syncd.oncall.definitions import Service
from syncd.oncall.paging import pages_at, service_for, starts_paging, urgency_for


def service(**overrides) -> Service:
    return Service.model_validate({"id": "payments-api", "name": "Payments API",
                                   "escalation_policy": "payments",
                                   "match": {"group": ["Payments"]},
                                   "page_on": {"priority": ["P1", "P2"]}, **overrides})


def fields(**values):
    return {"status": "triggered", "priority": "P1", "group": "Payments", **values}


def test_the_service_field_wins_then_the_first_match_in_file_order():
    first, second = service(), service(id="other", match={"group": ["Payments"]})
    services = {"payments-api": first, "other": second}
    assert service_for(fields(service="other"), services) is second
    assert service_for(fields(), services) is first
    assert service_for(fields(group="Network"), services) is None
    assert service_for(fields(service="unknown", group="Network"), services) is None


def test_a_service_without_match_rules_takes_only_incidents_that_name_it():
    bare = service(match={})
    assert service_for(fields(), {"payments-api": bare}) is None
    assert service_for(fields(service="payments-api"), {"payments-api": bare}) is bare


def test_urgency_from_the_incident_then_the_service_then_the_priority():
    assert urgency_for(fields(urgency="low"), service()) == "low"
    assert urgency_for(fields(), service(urgency="low")) == "low"
    assert urgency_for(fields(priority="P2"), service(urgency="by_priority")) == "high"
    assert urgency_for(fields(priority="P3"), service(urgency="by_priority")) == "low"


def test_only_a_triggered_incident_at_a_page_on_priority_pages():
    assert pages_at(fields(), service())
    assert not pages_at(fields(priority="P3"), service())
    assert not pages_at(fields(status="acknowledged"), service())
    assert not pages_at(fields(), service(page_on={}))


def test_becoming_pageable_starts_paging_and_other_edits_do_not():
    svc = service()
    assert starts_paging({}, fields(), svc, last_urgency=None, active=False)        # created at P1
    assert starts_paging(fields(priority="P3"), fields(), svc, last_urgency=None, active=False)
    assert starts_paging(fields(status="resolved"), fields(), svc, last_urgency="high",
                         active=False)                                             # re-opened
    assert not starts_paging(fields(title="a"), fields(title="b"), svc, last_urgency="high",
                             active=True)
    assert not starts_paging(fields(title="a"), fields(title="b"), svc, last_urgency="high",
                             active=False)                                         # ran its course
    assert not starts_paging(fields(), fields(priority="P3"), svc, last_urgency="high",
                             active=True)


def test_a_running_escalation_is_not_started_again_by_the_change_that_restarted_it():
    """The acknowledgement timeout restarts the row, then triggers the incident."""
    assert not starts_paging(fields(status="acknowledged"), fields(), service(),
                             last_urgency="high", active=True)


def test_a_low_urgency_incident_raised_to_high_urgency_starts_paging_again():
    svc = service(urgency="by_priority", page_on={"priority": ["P1", "P2", "P3"]})
    for active in (True, False):
        assert starts_paging(fields(priority="P3"), fields(priority="P1"), svc,
                             last_urgency="low", active=active)
    assert not starts_paging(fields(priority="P2"), fields(priority="P1"), svc,
                             last_urgency="high", active=True)


def test_lowering_out_of_page_on_or_to_low_urgency_ends_a_running_escalation():
    from syncd.oncall.paging import stops_paging
    svc = service(urgency="by_priority", page_on={"priority": ["P1", "P2", "P3"]})
    assert stops_paging(fields(), fields(priority="P4"), svc, running_urgency="high") == \
        "priority lowered to P4, below page_on"
    assert stops_paging(fields(), fields(priority="P3"), svc, running_urgency="high") == \
        "urgency lowered to low: low urgency does not escalate"
    assert stops_paging(fields(), fields(priority="P2"), svc, running_urgency="high") is None
    assert stops_paging(fields(), fields(status="resolved"), svc, running_urgency="high") is None


def test_an_incident_opened_by_an_alert_pages_whatever_page_on_says():
    svc = service()                                          # page_on: P1, P2
    assert starts_paging({}, fields(priority="P3"), svc, last_urgency=None, active=False,
                         from_alert=True)
    assert not starts_paging({}, fields(priority="P3"), svc, last_urgency=None, active=False)
