"""Regression tests from the review of issue 11.

Races on PostgreSQL: two threads, paused at chosen points with monkeypatch."""
import threading
import time

import pytest

from syncd.alerts import service as alert_service


def _run(target, errors):
    def wrapped():
        try:
            target()
        except BaseException as error:        # reported in the test's thread
            errors.append(error)
    thread = threading.Thread(target=wrapped)
    thread.start()
    return thread


@pytest.fixture
def pg_world(world):
    if world.store.kind != "postgresql":
        pytest.skip("row locks race on PostgreSQL only")
    return world


def test_a_trigger_joining_races_a_resolve_of_the_groups_other_alert(pg_world, monkeypatch):
    """T1 holds the group row (FOR UPDATE) and is about to update the incident; T2 resolves the
    incident and its hook then waits for the group row: lock order group->incident vs
    incident->group. Both are valid events: neither may fail."""
    world = pg_world
    world.trigger("time", dedup_key="a")
    holding_group = threading.Event()
    real_join = alert_service._join

    def slow_join(*args, **kwargs):
        holding_group.set()
        time.sleep(1.5)                        # let the resolve reach the group row
        return real_join(*args, **kwargs)
    monkeypatch.setattr(alert_service, "_join", slow_join)
    errors: list[BaseException] = []
    t1 = _run(lambda: world.intake.enqueue(
        __import__("syncd.alerts.events", fromlist=["x"]).alert_event(
            __import__("tests.alerts.conftest", fromlist=["x"]).event("time", dedup_key="b")),
        world.intake.service_for(__import__("tests.alerts.conftest",
                                            fromlist=["x"]).KEYS["time"])), errors)
    assert holding_group.wait(10)
    t2 = _run(lambda: world.send("time", "resolve", "a"), errors)
    t1.join(30)
    t2.join(30)
    assert not errors, [type(e).__name__ + ": " + str(e)[:160] for e in errors]


def test_a_join_races_a_hand_acknowledge(pg_world, monkeypatch):
    """The join reads the incident without a lock, then compare-and-sets its version: a person
    acknowledging meanwhile makes the trigger fail with VersionConflict (a 500)."""
    world = pg_world
    world.trigger("time", dedup_key="a")
    [incident] = world.incidents()
    paused, go = threading.Event(), threading.Event()
    real_update = alert_service._update

    def paused_update(*args, **kwargs):
        paused.set()
        go.wait(10)
        return real_update(*args, **kwargs)
    monkeypatch.setattr(alert_service, "_update", paused_update)
    errors: list[BaseException] = []
    t1 = _run(lambda: world.trigger("time", dedup_key="b"), errors)
    assert paused.wait(10)
    monkeypatch.setattr(alert_service, "_update", real_update)
    acked = threading.Event()
    t2 = _run(lambda: (world.commands.acknowledge(incident.id, actor="alice", source="api"),
                       acked.set()), errors)
    print("ACK DONE WHILE JOIN PAUSED:", acked.wait(3))
    go.set()
    t1.join(30)
    t2.join(30)
    assert not errors, [type(e).__name__ + ": " + str(e)[:160] for e in errors]


def test_a_join_races_a_hand_acknowledge_state(pg_world, monkeypatch):
    test_a_join_races_a_hand_acknowledge(pg_world, monkeypatch)
    [incident] = pg_world.incidents()
    print("STATE", incident.status, incident.version, repr(incident.description),
          [(a.dedup_key, a.status, a.incident_id) for a in pg_world.alerts()])
    assert [a.status for a in pg_world.alerts()] == ["acknowledged", "acknowledged"], \
        "acknowledging the incident acknowledges its alerts, including the one joining"
