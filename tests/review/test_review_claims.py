"""Review of issue 9's claims: a live replica's claim must not be taken from it."""

from __future__ import annotations

import pytest

from syncd.clock import ManualClock
from tests.store.test_processes import LEASE, STALE, claim_one, heartbeats, queue_a_delivery


@pytest.mark.xfail(strict=True, reason="review: heartbeats compare seen_at written on one "
                   "replica's clock with another's now: a skew beyond stale_after (10 s) makes a "
                   "live replica dead and its in-flight claims are taken at once, lease or not")
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
