"""Review of issue 9's claims: a live replica's claim must not be taken from it."""

from __future__ import annotations

from syncd.clock import ManualClock
from tests.store.test_processes import LEASE, STALE, claim_one, heartbeats, queue_a_delivery


def test_a_live_replica_whose_clock_runs_behind_keeps_its_claims(store, clock):
    behind = ManualClock(clock.now() - STALE * 1.5)       # NTP broken on one host: 15 s slow
    a, b = heartbeats(store, behind, "host:1:a"), heartbeats(store, clock, "host:2:b")
    a.register(sole=False)
    b.register(sole=False)
    queue_a_delivery(store, behind)
    assert claim_one(store, behind, a.process) == [1]      # a is delivering it now
    a.beat()                                               # and a is alive: it just beat
    b.beat()
    assert b.dead_processes() == []
    assert claim_one(store, clock, b.process, b.dead_processes()) == [], \
        f"a live replica's row was taken {LEASE} before its lease ends"


def test_skew_in_either_direction_never_makes_a_beating_replica_dead(store, clock):
    """A minute of skew both ways (two apart, far beyond the stale time), while time passes:
    only silence on the observer's own clock counts. (The lease is still written on the
    claimer's clock: a skew beyond the lease would end claims early, fenced but wasted.)"""
    behind = ManualClock(clock.now() - STALE * 6)
    ahead = ManualClock(clock.now() + STALE * 6)
    a, b, c = (heartbeats(store, behind, "host:1:a"), heartbeats(store, clock, "host:2:b"),
               heartbeats(store, ahead, "host:3:c"))
    for replica in (a, b, c):
        replica.register(sole=False)
    queue_a_delivery(store, behind)
    assert claim_one(store, behind, a.process) == [1]
    for _ in range(15):                                    # 30 s, a beat every 2 s everywhere
        for each in (behind, clock, ahead):
            each.advance(2)
        for replica in (a, b, c):
            replica.beat()
        assert b.dead_processes() == [] and c.dead_processes() == []
    assert claim_one(store, ahead, c.process, c.dead_processes()) == []


def test_a_beat_late_by_less_than_the_stale_time_costs_nothing(store, clock):
    a, b = heartbeats(store, clock, "host:1:a"), heartbeats(store, clock, "host:2:b")
    a.register(sole=False)
    b.register(sole=False)
    queue_a_delivery(store, clock)
    claim_one(store, clock, a.process)
    for _ in range(4):                  # a's beats arrive 8 s apart (a slow database, a GC pause)
        for _ in range(4):
            clock.advance(2)
            b.beat()
            assert b.dead_processes() == []
        a.beat()
    assert a.may_claim()
