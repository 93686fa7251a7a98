"""Process heartbeats: a claim ends with its process, not only with its lease."""

from __future__ import annotations

from datetime import timedelta

from syncd.engine import service as sync_service
from syncd.engine.models import OutboxItem
from syncd.incidents import service as incident_service
from syncd.metrics import CLAIMS_ORPHANED, CLAIMS_RECOVERED
from syncd.store.processes import Heartbeats

LEASE = timedelta(minutes=10)
STALE = timedelta(seconds=10)


def heartbeats(store, clock, process: str) -> Heartbeats:
    return Heartbeats(sessions=store.sessions, clock=clock, process=process, stale_after=STALE,
                      queues={"outbox": OutboxItem})


def claim_one(store, clock, process: str, dead: list[str] = ()) -> list[int]:
    with store.transaction() as session:
        rows = sync_service.claim_due(session=session, worker=f"{process}/outbox-0",
                                      process=process, now=clock.now(), lease=LEASE,
                                      dead_processes=list(dead))
        return [row.id for row in rows]


def queue_a_delivery(store, clock) -> None:
    with store.transaction() as session:
        incident = incident_service.create_incident(session=session, fields={"title": "DB down"},
                                                    now=clock.now(), actor=None, source="test")
        sync_service.enqueue(session=session, incident_id=incident.id, connector="jira",
                             operation="create", fields={}, now=clock.now())


def test_a_replica_that_stops_beating_loses_its_claims_long_before_the_lease(store, clock):
    a, b = heartbeats(store, clock, "host:1:a"), heartbeats(store, clock, "host:2:b")
    a.register(sole=False)
    b.register(sole=False)
    queue_a_delivery(store, clock)
    assert claim_one(store, clock, a.process) == [1]           # then a is killed: no more beats
    clock.advance(STALE.total_seconds() - 1)
    b.beat()
    assert b.dead_processes() == [] and claim_one(store, clock, b.process, b.dead_processes()) == []
    clock.advance(2)
    b.beat()
    assert b.dead_processes() == [a.process]
    assert CLAIMS_ORPHANED.labels("outbox")._value.get() == 1
    before = CLAIMS_RECOVERED.labels("outbox", "process_gone")._value.get()
    assert claim_one(store, clock, b.process, b.dead_processes()) == [1]
    assert CLAIMS_RECOVERED.labels("outbox", "process_gone")._value.get() - before == 1
    b.beat()
    assert b.dead_processes() == [] and CLAIMS_ORPHANED.labels("outbox")._value.get() == 0


def test_a_clean_stop_hands_over_at_once(store, clock):
    a, b = heartbeats(store, clock, "host:1:a"), heartbeats(store, clock, "host:2:b")
    a.register(sole=False)
    b.register(sole=False)
    queue_a_delivery(store, clock)
    claim_one(store, clock, a.process)                # a delivery a could not finish in time
    a.unregister()
    b.beat()
    assert b.dead_processes() == [a.process]


def test_a_sole_process_takes_back_every_earlier_claim_at_its_start(store, clock):
    """SQLite: the file lock proves the earlier process is gone, however fresh its last beat."""
    killed = heartbeats(store, clock, "host:1:killed")
    killed.register(sole=True)
    queue_a_delivery(store, clock)
    claim_one(store, clock, killed.process)
    restarted = heartbeats(store, clock, "host:1:restarted")
    restarted.register(sole=True)
    assert restarted.dead_processes() == [killed.process]
    assert claim_one(store, clock, restarted.process, restarted.dead_processes()) == [1]
