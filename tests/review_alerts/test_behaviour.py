"""Regression tests from the review of issue 11.

Alert semantics against issue 11 and DESIGN.md invariant 9."""
from datetime import timedelta

from sqlalchemy import select

from syncd.incidents.models import TimelineEntry
from syncd.oncall.models import Escalation
from tests.alerts.conftest import KEYS


def _entries(world, incident_id):
    with world.store.transaction() as session:
        return list(session.scalars(select(TimelineEntry).where(
            TimelineEntry.incident_id == incident_id).order_by(TimelineEntry.id)))


def test_an_event_cannot_name_a_person_as_the_actor(world):
    """Invariant 9: the payload's free-text source becomes the timeline actor, so an alert
    source 'alice' (a user id) reads as if Alice did it."""
    world.trigger("none", dedup_key="x", source="alice")
    world.send("none", "acknowledge", "x")
    [incident] = world.incidents()
    actors = {e.kind: e.actor for e in _entries(world, incident.id)}
    assert actors["alert_triggered"] != "alice", actors
    assert actors["alert_acknowledged"] != "alice", actors


def test_a_change_event_without_source_has_an_actor(world):
    world.trigger("time", dedup_key="a")
    answer = world.post({"routing_key": KEYS["time"], "payload": {"summary": "Deployed 2.4.2"}},
                        "/v2/change/enqueue")
    assert answer.status_code == 202
    [incident] = world.incidents()
    entry = [e for e in _entries(world, incident.id) if e.kind == "change_event"][-1]
    assert entry.actor, "every timeline entry names its actor (invariant 9)"


def test_description_is_current_after_a_repeat_with_a_new_summary(world):
    world.trigger("none", dedup_key="a", summary="Disk 91% full")
    world.trigger("none", dedup_key="a", summary="Disk 99% full")
    [incident] = world.incidents()
    assert "Disk 99% full" in incident.description, incident.description


def test_description_is_current_after_an_acknowledge_event(world):
    world.trigger("time", dedup_key="a")
    world.trigger("time", dedup_key="b")
    world.send("time", "acknowledge", "a")
    [incident] = world.incidents()
    assert "[acknowledged]" in incident.description, incident.description


def test_hand_resolve_then_same_dedup_key_opens_a_new_alert_and_incident(world):
    world.trigger("time", dedup_key="a")
    [first] = world.incidents()
    world.commands.resolve(first.id, actor="alice", source="api")
    world.trigger("time", dedup_key="a")
    alerts = world.alerts()
    assert [a.status for a in alerts] == ["resolved", "triggered"]
    assert len(world.incidents()) == 2 and alerts[1].incident_id != first.id


def test_content_grouping_missing_null_and_empty_group_the_same(world):
    """grouping.py's docstring: 'a missing field counts as empty'."""
    world.trigger("content", dedup_key="m", component="db")
    world.trigger("content", dedup_key="n", component="db", custom_details={"region": None})
    world.trigger("content", dedup_key="e", component="db", custom_details={"region": ""})
    assert len({a.incident_id for a in world.alerts()}) == 1, \
        [(a.dedup_key, a.incident_id) for a in world.alerts()]


def test_window_edge(world):
    world.trigger("time", dedup_key="a")
    world.clock.advance(timedelta(minutes=5).total_seconds() - 0.001)
    world.trigger("time", dedup_key="b")
    world.clock.advance(0.001)
    world.trigger("time", dedup_key="c")           # exactly window end
    print([(a.dedup_key, a.incident_id) for a in world.alerts()])
    assert world.alerts()[0].incident_id == world.alerts()[1].incident_id


def test_alert_incident_pages_and_resolution_stops_paging(world):
    world.trigger("none", dedup_key="a")
    with world.store.transaction() as session:
        assert session.scalars(select(Escalation)).one().state == "active"
    world.send("none", "resolve", "a")
    with world.store.transaction() as session:
        assert session.scalars(select(Escalation)).one().state == "stopped"
    assert world.incidents()[0].status == "resolved"


def test_keep_open_service_after_all_alerts_resolve_next_trigger(world):
    world.trigger("keep", dedup_key="a")
    world.send("keep", "resolve", "a")
    world.trigger("keep", dedup_key="a")
    assert [a.status for a in world.alerts()] == ["resolved", "triggered"]


def test_ack_for_another_services_dedup_key_is_dropped(world):
    world.trigger("none", dedup_key="shared")
    world.send("time", "acknowledge", "shared")
    world.send("time", "resolve", "shared")
    assert world.alerts()[0].status == "triggered"
    assert world.incidents()[0].status == "triggered"
