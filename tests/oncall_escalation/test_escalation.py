"""Escalation on a movable clock: levels, repeat, acknowledgement (from syncd and from a ticket),
the acknowledgement timeout, low urgency, nobody on call, and steps fired once by racing workers
(issue 10, "Escalation"; DESIGN.md invariant 6)."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from syncd.incidents import service as incident_service
from syncd.incidents.timeline import describe
from syncd.notify.models import Notification
from tests.oncall_escalation.conftest import RESPONSES, Paging


def timeline(paging: Paging, incident_id: int) -> list[str]:
    with paging.store.transaction() as session:
        return [describe(entry) for entry in incident_service.timeline(
            session=session, incident_id=incident_id)]


def test_a_p1_pages_the_on_call_person_at_once_then_escalates_and_repeats(paging):
    incident = paging.incident()
    paging.advance(0)
    assert paging.pages(incident) == [("alice", "mail", "pending", "0"),
                                      ("alice", "phone", "pending", "3")]
    paging.advance(9.9)
    assert len(paging.pages(incident)) == 2, "the next rule waits its escalate_after"
    paging.advance(0.1)
    assert paging.pages(incident)[2:] == [("erin", "mail", "pending", "10")]
    paging.advance(15)                                  # repeat: 1, so the policy runs again
    assert paging.pages(incident)[3:] == [("alice", "mail", "pending", "25"),
                                          ("alice", "phone", "pending", "28")]
    paging.advance(10)
    assert paging.pages(incident)[5:] == [("erin", "mail", "pending", "35")]
    paging.advance(60)
    assert len(paging.pages(incident)) == 6, "after its repeats the policy is done"
    assert paging.escalation(incident).state == "done"
    words = timeline(paging, incident)
    assert "paging started (created): policy payments, high urgency" in words
    assert "escalation rule 1 of 2, loop 1 of 2: paged alice (schedule primary)" in words
    assert "escalation rule 2 of 2, loop 2 of 2: paged erin (user erin)" in words
    assert words[-1] == "escalation finished: the policy ran 2 time(s) without an acknowledgement"


def test_acknowledging_stops_escalation_and_cancels_contacts_not_yet_due(paging):
    incident = paging.incident()
    paging.advance(0)
    paging.advance(1)
    paging.commands.acknowledge(incident, actor="alice", source="ack-link")
    paging.advance(20)
    # No sender ran here: the mail was still waiting too (tests/notify covers sent ones).
    assert paging.pages(incident) == [("alice", "mail", "cancelled", "0"),
                                      ("alice", "phone", "cancelled", "3")]
    assert paging.escalation(incident).state == "acknowledged"
    assert any(text.startswith("paging stopped: acknowledged") for text in
               timeline(paging, incident))


def test_an_acknowledgement_from_the_ticket_stops_escalation_too(paging):
    incident = paging.incident()
    paging.advance(0)
    with paging.store.transaction() as session:        # what an inbound sync applies
        incident_service.update_incident(session=session, incident_id=incident,
                                         changes={"status": "acknowledged"},
                                         now=paging.clock.now(), actor="beth.anglin",
                                         source="servicenow")
    paging.advance(29)                                 # within the service's ack_timeout
    assert [page[0] for page in paging.pages(incident)] == ["alice", "alice"]
    assert paging.escalation(incident).state == "acknowledged"


def test_an_acknowledgement_that_times_out_triggers_the_incident_and_restarts_the_policy(paging):
    incident = paging.incident()
    paging.advance(0)
    paging.advance(2)
    paging.commands.acknowledge(incident, actor="alice", source="api")
    paging.advance(29.9)
    assert paging.escalation(incident).state == "acknowledged"
    paging.advance(0.1)                                # ack_timeout: 30m after the ack
    with paging.store.transaction() as session:
        assert incident_service.get_incident(session=session,
                                             incident_id=incident).status == "triggered"
    assert paging.pages(incident)[2:] == [("alice", "mail", "pending", "32"),
                                          ("alice", "phone", "pending", "35")]
    assert paging.escalation(incident).epoch == 2
    paging.advance(10)
    assert paging.pages(incident)[4:] == [("erin", "mail", "pending", "42")]


def test_resolving_stops_escalation_for_good(paging):
    incident = paging.incident()
    paging.advance(0)
    paging.commands.resolve(incident, actor="alice", source="cli")
    paging.advance(120)
    assert [page[2] for page in paging.pages(incident)] == ["cancelled", "cancelled"]
    assert paging.escalation(incident).state == "stopped"


def test_low_urgency_notifies_the_first_rule_once_and_never_escalates(paging):
    incident = paging.incident(group="Reports", priority="P3")
    paging.advance(0)
    paging.advance(120)
    assert paging.pages(incident) == [("alice", "mail", "pending", "0")]
    assert paging.escalation(incident).state == "done"


def test_below_page_on_nothing_pages_until_the_priority_is_raised(paging):
    incident = paging.incident(priority="P3")
    paging.advance(5)
    assert paging.pages(incident) == []
    paging.commands.update(incident, {"priority": "P1"}, actor="beth", source="servicenow")
    paging.advance(0)
    assert paging.pages(incident) == [("alice", "mail", "pending", "5"),
                                      ("alice", "phone", "pending", "8")]
    assert "paging started (priority P3 → P1): policy payments, high urgency" in \
        timeline(paging, incident)


def test_a_title_edit_of_a_paging_incident_starts_nothing_new(paging):
    incident = paging.incident()
    paging.advance(0)
    paging.commands.update(incident, {"title": "Checkout very down"}, actor="beth",
                           source="servicenow")
    paging.advance(0)
    assert len(paging.pages(incident)) == 2
    assert paging.escalation(incident).epoch == 1


def test_nobody_on_call_is_on_the_timeline_and_the_next_rule_follows_at_once(paging):
    incident = paging.incident(group="Gaps")
    paging.advance(0)
    assert paging.pages(incident) == [("erin", "mail", "pending", "0")]
    assert "nobody paged from schedule empty: nobody on call" in timeline(paging, incident)


def test_a_running_escalation_keeps_the_policy_it_started_with(paging):
    incident = paging.incident()
    paging.advance(0)
    paging.file.write_text(paging.file.read_text().replace("{targets: [{user: erin}], "
                                                           "escalate_after: 15m}",
                                                           "{targets: [{user: bob}], "
                                                           "escalate_after: 15m}"))
    assert paging.responses.reload()
    paging.advance(10)
    assert paging.pages(incident)[2][0] == "erin"


def test_two_workers_racing_fire_every_step_exactly_once(paging):
    incidents = [paging.incident(title=f"Outage {n}") for n in range(40)]
    barrier = threading.Barrier(2)

    def work():
        barrier.wait()
        while paging.escalations.cycle():
            pass

    for minutes in (0, 10, 15, 10):
        paging.clock.advance(minutes * 60)
        threads = [threading.Thread(target=work) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    with paging.store.transaction() as session:
        rows = session.execute(select(Notification.incident_id, func.count())
                               .group_by(Notification.incident_id)).all()
    per_incident = {incident: count for incident, count in rows}
    assert per_incident == {incident: 6 for incident in incidents}


def test_a_step_that_fails_is_skipped_on_the_timeline_and_the_others_still_fire(paging,
                                                                                monkeypatch):
    broken, fine = paging.incident(title="broken"), paging.incident(title="fine")
    fire = paging.escalations._fire

    def failing(session, escalation, incident, now, overrides):
        if escalation.incident_id == broken and escalation.rule_index == 0:
            raise RuntimeError("bad data")
        return fire(session, escalation, incident, now, overrides)

    monkeypatch.setattr(paging.escalations, "_fire", failing)
    paging.advance(0)
    assert len(paging.pages(fine)) == 2
    assert paging.pages(broken) == [("erin", "mail", "pending", "0")], "the next rule at once"
    assert "nobody paged at rule 1: the step failed (RuntimeError: bad data)" in \
        timeline(paging, broken)


def test_one_page_per_contact_per_step_even_when_the_rules_name_a_contact_twice(store, tmp_path):
    text = RESPONSES.replace("high: [{contact: mail, after: 0m}, {contact: phone, after: 3m}]",
                             "high: [{contact: mail, after: 0m}, {contact: mail, after: 5m}]")
    assert text != RESPONSES
    paging = Paging(store, tmp_path, text)
    incident = paging.incident()
    paging.advance(0)
    assert paging.pages(incident) == [("alice", "mail", "pending", "0")]
