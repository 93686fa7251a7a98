"""Regression tests from the review of issue 10 (each failed before its fix).

A page whose send FAILED while the incident was being acknowledged/resolved goes back to
pending and is sent again later: a resolved incident still pages (invariant 6 / issue 10)."""
from sqlalchemy import select

from syncd.notify.channels import Delivery
from syncd.notify.models import Notification
from syncd.notify.sender import NotificationSender


def test_a_failed_send_is_not_retried_after_the_incident_is_resolved(paging):
    incident = paging.incident()
    paging.advance(0)                      # escalation writes alice/mail (due now)
    sent = []

    def deliver(url, *, title, body, timeout):
        sent.append((url, paging.clock.now()))
        if len(sent) == 1:
            # while the send is in flight the person resolves the incident elsewhere
            paging.commands.resolve(incident, actor="alice", source="api")
            return Delivery("failed", "smtp 451 try later", 0.1)
        return Delivery("sent", "ok", 0.1)

    sender = NotificationSender(sessions=paging.store.sessions, clock=paging.clock,
                                responses=paging.responses.current, worker_id="w1",
                                deliver=deliver)
    sender.cycle()
    assert len(sent) == 1
    paging.clock.advance(60)
    sender.cycle()
    with paging.store.transaction() as session:
        states = [(r.contact, r.state) for r in session.scalars(
            select(Notification).where(Notification.incident_id == incident))]
    # Expected: the mail row is cancelled/failed, never sent again for a resolved incident.
    assert len(sent) == 1, f"resolved incident paged again: {sent} rows={states}"
