"""Regression tests from the review of issue 10 (each failed before its fix).

Probes of paging paths: reopen, downgrade, low urgency with ack timeout."""



def test_reopened_incident_pages_again(paging):
    incident = paging.incident()
    paging.advance(0)
    paging.commands.resolve(incident, actor="alice", source="api")
    paging.advance(1)
    paging.commands.update(incident, {"status": "triggered"}, actor="beth", source="api")
    paging.advance(0)
    pending = [p for p in paging.pages(incident) if p[2] == "pending"]
    assert pending, paging.pages(incident)


def test_lowering_priority_below_page_on_stops_escalating(paging):
    incident = paging.incident()
    paging.advance(0)
    paging.commands.update(incident, {"priority": "P4"}, actor="beth", source="servicenow")
    paging.advance(10)
    paging.advance(15)
    rows = paging.pages(incident)
    assert not [r for r in rows if r[0] == "erin"], f"P4 incident escalated to erin: {rows}"


def test_a_low_urgency_incident_acknowledged_is_not_paged_again(paging):
    incident = paging.incident(group="Reports", priority="P3")
    paging.advance(0)
    assert paging.escalation(incident).state == "done"
    paging.commands.acknowledge(incident, actor="alice", source="api")
    paging.advance(31)
    rows = paging.pages(incident)
    assert len(rows) == 1, rows


def test_a_by_priority_incident_lowered_to_low_urgency_stops_escalating(store, tmp_path):
    from tests.oncall_escalation.conftest import RESPONSES, Paging
    text = RESPONSES.replace("    escalation_policy: payments\n    ack_timeout: 30m\n",
                             "    escalation_policy: payments\n    urgency: by_priority\n"
                             "    ack_timeout: 30m\n", 1)
    text = text.replace("page_on: {priority: [P1, P2]}", "page_on: {priority: [P1, P2, P3]}", 1)
    paging = Paging(store, tmp_path, text)
    incident = paging.incident(priority="P1")
    paging.advance(0)
    paging.commands.update(incident, {"priority": "P3"}, actor="beth", source="servicenow")
    paging.advance(10)
    rows = paging.pages(incident)
    assert not [r for r in rows if r[0] == "erin"], f"now-low-urgency P3 escalated: {rows}"
