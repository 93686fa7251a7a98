"""Regression tests from the review of issue 10 (each failed before its fix).

Head-of-line blocking in claim_due: the 200 oldest due rows are selected BEFORE the throttle;
when they all belong to one throttled contact, another person's due page is not even looked at."""
from datetime import timedelta

from syncd.notify import service


def test_a_throttled_contact_does_not_hold_back_everyone_elses_pages(paging):
    users = paging.responses.current().users
    now = paging.clock.now()
    with paging.store.transaction() as session:
        first = service.enqueue_test(session=session, user=users["alice"], contact="mail",
                                     now=now - timedelta(seconds=30))
        first.state, first.sent_at = "sent", now - timedelta(seconds=30)
        for n in range(200):
            service.enqueue_test(session=session, user=users["alice"], contact="mail",
                                 now=now - timedelta(seconds=20))
        bob = service.enqueue_test(session=session, user=users["bob"], contact="mail", now=now)
        bob_id = bob.id
    with paging.store.transaction() as session:
        claims = service.claim_due(session=session, now=now, worker_id="w", send_timeout=10)
    claimed = {i for claim in claims for i in claim.ids}
    assert bob_id in claimed, "bob's due message waits behind alice's throttled backlog"
