"""Process heartbeats: a claim ends with its process, not only with its lease."""

from __future__ import annotations

from datetime import timedelta

from syncd.engine import service as sync_service
from syncd.engine.models import OutboxItem
from syncd.incidents import service as incident_service
from syncd.metrics import CLAIMS_ORPHANED, CLAIMS_RECOVERED
from syncd.store.models import ProcessHeartbeat
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


def test_a_killed_replica_is_dead_to_an_observer_that_starts_later_after_the_stale_time(store,
                                                                                     clock):
    killed = heartbeats(store, clock, "host:1:killed")
    killed.register(sole=False)
    queue_a_delivery(store, clock)
    claim_one(store, clock, killed.process)
    clock.advance(3600)                                 # long dead, but the newcomer cannot know
    newcomer = heartbeats(store, clock, "host:2:new")
    newcomer.register(sole=False)
    assert newcomer.dead_processes() == []
    clock.advance(STALE.total_seconds() + 1)
    newcomer.beat()
    assert newcomer.dead_processes() == [killed.process]


def test_a_replica_taken_for_dead_claims_nothing_until_it_registered_again(store, clock):
    """a froze for longer than the stale time; b took it for dead and deleted its row. When a
    wakes its claims are being taken back: it must not claim until every observer sees it again."""
    a, b = heartbeats(store, clock, "host:1:a"), heartbeats(store, clock, "host:2:b")
    a.register(sole=False)
    b.register(sole=False)
    assert a.may_claim()
    clock.advance(STALE.total_seconds() + 1)
    b.beat()                                            # a is silent: its row goes
    with store.transaction() as session:
        assert session.get(ProcessHeartbeat, a.process) is None
    a.beat()                                            # a wakes, finds its row gone
    assert not a.may_claim()
    with store.transaction() as session:
        assert session.get(ProcessHeartbeat, a.process) is not None     # registered again
    clock.advance(2)
    b.beat()
    assert not a.may_claim() and b.dead_processes() == []
    clock.advance(STALE.total_seconds())
    a.beat()
    assert a.may_claim()


def test_a_row_taken_over_by_another_start_stops_claims_too(store, clock):
    a = heartbeats(store, clock, "host:1:a")
    a.register(sole=False)
    with store.transaction() as session:
        session.get(ProcessHeartbeat, a.process).started_at = clock.now() - timedelta(hours=1)
    a.beat()
    assert not a.may_claim()
    with store.transaction() as session:
        assert session.get(ProcessHeartbeat, a.process).started_at == a.started_at


def test_a_stopped_process_claims_nothing(store, clock):
    a = heartbeats(store, clock, "host:1:a")
    assert not a.may_claim()
    a.register(sole=False)
    a.unregister()
    a.beat()
    assert not a.may_claim()
    with store.transaction() as session:
        assert session.get(ProcessHeartbeat, a.process) is None


def test_a_killed_process_of_this_host_is_dead_at_the_first_look_after_a_restart(store, clock):
    import socket
    import subprocess
    import sys
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    killed = f"{socket.gethostname()}:{finished.stdout.strip()}:20260101T000000.000000Z"
    live_elsewhere = "another-host:1:20260101T000000.000000Z"
    before, restarted = heartbeats(store, clock, killed), heartbeats(store, clock, "host:9:new")
    elsewhere = heartbeats(store, clock, live_elsewhere)
    before.register(sole=False)
    elsewhere.register(sole=False)
    queue_a_delivery(store, clock)
    assert claim_one(store, clock, killed) == [1]                  # then it is killed
    restarted.register(sole=False)
    restarted.beat()                                                # no stale_after to wait
    assert restarted.dead_processes() == [killed]
    assert claim_one(store, clock, restarted.process, restarted.dead_processes()) == [1]
    assert elsewhere.process not in restarted.dead_processes()
