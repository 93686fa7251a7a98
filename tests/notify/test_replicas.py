"""Two senders racing over one PostgreSQL store: every due page arrives exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from syncd.notify import service
from syncd.notify.models import Notification
from syncd.notify.sender import NotificationSender

from .conftest import open_incident
from .receivers import JsonReceiver

ROWS = 200


def test_two_senders_deliver_200_due_pages_exactly_once(postgres_store, clock, people):
    store = postgres_store
    incident_id, escalation_id = open_incident(store, clock)
    with JsonReceiver() as receiver:
        with store.transaction() as session:
            for index in range(ROWS):
                user = people.add(f"user{index}", hook=receiver.url(f"u{index}"))
                session.add(Notification(
                    kind="page", incident_id=incident_id, escalation_id=escalation_id, epoch=1,
                    loop=0, rule_index=0, user_id=user.id, contact="hook", subject="s",
                    body=f"page {index}", due_at=clock.now(), created_at=clock.now(),
                    updated_at=clock.now()))
        senders = [NotificationSender(sessions=store.sessions, clock=clock,
                                      responses=people.responses, worker_id=f"replica-{n}",
                                      batch_size=20) for n in (1, 2)]
        errors: list[BaseException] = []

        def run(sender):
            try:
                for _ in range(200):
                    sender.cycle()
                    with store.transaction() as session:
                        if service.pending_count(session=session) == 0:
                            return
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(sender,)) for sender in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors
        arrived = Counter(receiver.paths())
    assert len(arrived) == ROWS and set(arrived.values()) == {1}
    with store.transaction() as session:
        rows = session.query(Notification).all()
        assert {row.state for row in rows} == {"sent"}
        assert {row.claimed_by for row in rows} == {"replica-1", "replica-2"}
        clock.advance(timedelta(hours=1).total_seconds())
    for sender in senders:
        sender.cycle()
    assert sum(Counter(receiver.paths()).values()) == ROWS
