"""Webhook hints are bounded: a flood cannot grow memory without limit nor build one huge query;
a hint that does not fit is dropped, counted, and the connector polls at once instead."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import event

from syncd.engine.sync_engine import HINT_BATCH, SyncEngine
from syncd.metrics import HINTS_DROPPED

from .test_story import raise_sn_incident


def engine_with(world, **settings) -> SyncEngine:
    return SyncEngine(sessions=world.store.sessions, runtimes=world.engine.runtimes,
                      clock=world.clock, settings=replace(world.engine.settings, **settings))


def test_a_hint_beyond_the_queue_is_dropped_counted_and_the_poll_finds_the_change(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    engine = engine_with(world, hint_queue=2)
    world.sn.human_update(sys_id, {"short_description": "Checkout DB primary down"})
    before = HINTS_DROPPED.labels("servicenow")._value.get()
    for remote_id in ("unrelated-1", "unrelated-2", sys_id):
        engine.hint("servicenow", remote_id)
    assert engine.hints.qsize() == 2
    assert HINTS_DROPPED.labels("servicenow")._value.get() - before == 1
    assert engine._poll_now["servicenow"].is_set(), "the poller was not asked to poll now"
    engine.drain_hints()
    assert world.incident().title != "Checkout DB primary down"   # the hint itself was lost
    engine.poll("servicenow")
    assert world.incident().title == "Checkout DB primary down"


def test_a_drained_flood_of_hints_is_read_in_bounded_batches(world):
    biggest = []

    def count_parameters(_conn, _cursor, statement, parameters, _context, _many):
        if "link" in statement and " IN " in statement.upper():
            biggest.append(len(parameters))

    event.listen(world.store.engine, "before_cursor_execute", count_parameters)
    try:
        for n in range(2 * HINT_BATCH + 50):
            world.engine.hint("servicenow", f"unknown-{n}")
        assert world.engine.drain_hints() == 2 * HINT_BATCH + 50
    finally:
        event.remove(world.store.engine, "before_cursor_execute", count_parameters)
    assert len(biggest) == 3 and max(biggest) <= HINT_BATCH + 1
