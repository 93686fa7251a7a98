"""Regression tests from the second review of issue 10 (each failed before its fix): the
escalation batch's careful path, the acknowledgement timeout, low urgency with nobody on call."""
from __future__ import annotations

from sqlalchemy import select

from syncd.metrics import ESCALATIONS
from syncd.notify.models import Notification
from syncd.oncall.models import Escalation
from tests.oncall_escalation.conftest import START


def _count(service="payments-api"):
    return ESCALATIONS.labels(service)._value.get()


def _plant_duplicate_first_page(paging, incident_id):
    """A row already holding the first step's (alice, mail) page key: the unique backstop trips."""
    with paging.store.transaction() as session:
        esc = session.scalars(select(Escalation).where(Escalation.incident_id == incident_id)).one()
        session.add(Notification(kind="page", incident_id=incident_id, escalation_id=esc.id,
                                 epoch=esc.epoch, loop=0, rule_index=0, user_id="alice",
                                 contact="mail", state="sent", due_at=START, created_at=START,
                                 updated_at=START, subject="", body=""))


def test_a_step_whose_savepoint_failed_is_not_counted_as_an_escalation(paging):
    good = paging.incident()
    bad = paging.incident(title="Second")
    _plant_duplicate_first_page(paging, bad)
    before = _count()
    paging.advance(0)
    assert [p[:3] for p in paging.pages(good)] == [("alice", "mail", "pending"),
                                                   ("alice", "phone", "pending")]
    # The failed step is rolled back and skipped: the next rule (erin) follows at once.
    assert [p[0] for p in paging.pages(bad)] == ["alice", "erin"]      # the planted row, erin
    assert _count() - before == 2, "escalations_total counted the rolled-back step"


def test_a_step_tripping_the_page_backstop_does_not_block_its_escalation_forever(paging):
    bad = paging.incident()
    _plant_duplicate_first_page(paging, bad)
    for _ in range(12):                     # an hour: rule 1 (10 m), rule 2 (15 m), loop again
        paging.advance(5)
    users = {p[0] for p in paging.pages(bad)}
    assert "erin" in users, (paging.escalation(bad).rule_index, paging.pages(bad))


def test_an_acknowledged_incident_lowered_below_page_on_does_not_page_again_at_ack_timeout(paging):
    incident = paging.incident()
    paging.advance(0)
    paging.commands.acknowledge(incident, actor="alice", source="api")
    paging.commands.update(incident, {"priority": "P4"}, actor="beth", source="servicenow")
    before = len(paging.pages(incident))
    paging.advance(31)
    paging.advance(0)
    new = paging.pages(incident)[before:]
    assert not new, f"a P4 incident (below page_on) paged again after the ack timeout: {new}"


def test_low_urgency_with_nobody_on_call_in_the_first_rule_notifies_someone(paging):
    incident = paging.incident(group="Gaps", priority="P1", urgency="low")
    paging.advance(0)
    paging.advance(0)
    assert paging.pages(incident), (paging.escalation(incident).state,
                                    paging.escalation(incident).reason)
