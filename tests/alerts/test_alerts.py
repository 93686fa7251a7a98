"""A monitoring tool's day: alerts open, repeat, group, acknowledge and resolve incidents."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from syncd.alerts import service as alert_service
from syncd.oncall.models import Escalation

from .conftest import AUTH, KEYS


def test_a_trigger_opens_an_incident_that_pages_and_names_its_alert(world):
    dedup_key = world.trigger(dedup_key="db-1/disk", component="postgres")
    [incident] = world.incidents()
    assert (incident.title, incident.service, incident.priority, incident.urgency,
            incident.status) == ("Disk full on db-1", "checkout", "P1", "high", "triggered")
    assert "[triggered] critical: Disk full on db-1" in incident.description
    detail = world.incident(incident.id)
    assert [a["dedup_key"] for a in detail["alerts"]] == [dedup_key] == ["db-1/disk"]
    assert detail["escalation"]["state"] == "active", "the alert's incident does not page"
    assert "critical alert Disk full on db-1 from db-1.example.com opened the incident" \
        in world.timeline(incident.id)


def test_no_dedup_key_gets_a_new_one_and_a_new_alert_each_time(world):
    first, second = world.trigger(), world.trigger()
    assert first != second and len(first) == 32
    assert len(world.alerts()) == 2 and len(world.incidents()) == 2


def test_a_repeated_trigger_adds_to_the_open_alert_until_it_resolves(world):
    world.trigger(dedup_key="k1")
    world.clock.advance(30)
    world.trigger(dedup_key="k1", summary="Disk full on db-1 (99%)", severity="error")
    [alert] = world.alerts()
    assert (alert.event_count, alert.summary, alert.severity) == (2, "Disk full on db-1 (99%)",
                                                                 "error")
    words = world.timeline(alert.incident_id)
    assert "fired again (2 events)" in words[-2]
    assert "Alerts (1):\n- [triggered] error: Disk full on db-1 (99%)" in words[-1], \
        "the description follows the new summary and severity"
    assert world.send("none", "resolve", "k1")["dedup_key"] == "k1"
    world.trigger(dedup_key="k1")
    alerts = world.alerts()
    assert [a.status for a in alerts] == ["resolved", "triggered"]
    assert alerts[0].incident_id != alerts[1].incident_id
    assert [i.status for i in world.incidents()] == ["resolved", "triggered"]


def test_acknowledge_and_resolve_for_unknown_or_resolved_keys_are_dropped(world):
    before = world.counts()
    assert world.send("none", "acknowledge", "never-seen")["status"] == "success"
    assert world.send("none", "resolve", "never-seen")["status"] == "success"
    assert world.counts() == before
    world.trigger(dedup_key="k2")
    world.send("none", "resolve", "k2")
    after_resolve = world.counts()
    world.send("none", "resolve", "k2")
    world.send("none", "acknowledge", "k2")
    world.send("time", "resolve", "k2")          # same key, another service: not its alert
    assert world.counts() == after_resolve


@pytest.mark.parametrize("severity,priority,urgency", [
    ("critical", "P1", "high"), ("error", "P2", "high"), ("warning", "P3", "low"),
    ("info", "P4", "low")])
def test_severity_sets_priority_and_urgency(world, severity, priority, urgency):
    world.trigger(severity=severity)
    [incident] = world.incidents()
    assert (incident.priority, incident.urgency) == (priority, urgency)


def test_grouping_none_opens_an_incident_per_alert(world):
    world.trigger(dedup_key="a")
    world.trigger(dedup_key="b")
    assert len(world.incidents()) == 2


def test_time_grouping_joins_alerts_within_the_window_of_the_first(world):
    world.trigger("time", dedup_key="a", summary="Disk full on db-1")
    world.clock.advance(4 * 60)
    world.trigger("time", dedup_key="b", summary="Replica lag on db-2", severity="warning")
    [incident] = world.incidents()
    assert incident.title == "Disk full on db-1", "the title is the first alert's"
    assert "Alerts (2)" in incident.description and "Replica lag on db-2" in incident.description
    assert any("Replica lag on db-2 from db-1.example.com joined the incident" in text
               for text in world.timeline(incident.id))
    world.clock.advance(61)                      # 5m01s after the first: a new group
    world.trigger("time", dedup_key="c")
    assert [len(world.incident(i.id)["alerts"]) for i in world.incidents()] == [2, 1]


def test_content_grouping_joins_same_field_values_within_the_window(world):
    world.trigger("content", dedup_key="a", component="db", custom_details={"region": "eu"})
    world.trigger("content", dedup_key="b", component="db", custom_details={"region": "eu"})
    world.trigger("content", dedup_key="c", component="db", custom_details={"region": "us"})
    world.trigger("content", dedup_key="d", component="cache", custom_details={"region": "eu"})
    world.clock.advance(11 * 60)
    world.trigger("content", dedup_key="e", component="db", custom_details={"region": "eu"})
    groups = sorted(sorted(a.dedup_key for a in world.alerts() if a.incident_id == i.id)
                    for i in world.incidents())
    assert groups == [["a", "b"], ["c"], ["d"], ["e"]]


def test_a_resolved_incident_takes_no_more_alerts_of_its_group(world):
    world.trigger("time", dedup_key="a")
    [incident] = world.incidents()
    world.commands.resolve(incident.id, actor="alice", source="api")
    assert [a.status for a in world.alerts()] == ["resolved"], "resolving resolves its alerts"
    world.trigger("time", dedup_key="a")
    assert len(world.incidents()) == 2


def test_the_incident_resolves_when_all_its_alerts_have(world):
    world.trigger("time", dedup_key="a")
    world.trigger("time", dedup_key="b")
    [incident] = world.incidents()
    world.send("time", "resolve", "a")
    assert world.incidents()[0].status == "triggered"
    assert "[resolved] critical" in world.incidents()[0].description
    world.send("time", "resolve", "b")
    incident = world.incidents()[0]
    assert (incident.status, incident.resolution) == ("resolved", "all its alerts resolved")
    assert world.incident(incident.id)["escalation"]["state"] == "stopped"


def test_a_service_may_keep_its_incident_open_when_alerts_resolve(world):
    world.trigger("keep", dedup_key="a")
    world.send("keep", "resolve", "a")
    assert world.incidents()[0].status == "triggered"


def test_acknowledging_the_incident_acknowledges_its_alerts(world):
    world.trigger("time", dedup_key="a")
    world.trigger("time", dedup_key="b")
    [incident] = world.incidents()
    world.commands.acknowledge(incident.id, actor="alice", source="api")
    assert [a.status for a in world.alerts()] == ["acknowledged", "acknowledged"]


def test_an_acknowledge_event_acknowledges_the_incident_only_when_its_only_alert(world):
    world.trigger("none", dedup_key="solo")
    world.send("none", "acknowledge", "solo")
    assert world.incidents()[0].status == "acknowledged"
    with world.store.transaction() as session:
        assert session.scalars(select(Escalation)).one().state == "acknowledged"
    world.trigger("time", dedup_key="a")
    world.trigger("time", dedup_key="b")
    world.send("time", "acknowledge", "a")
    shared = world.incidents()[1]
    assert shared.status == "triggered", "one alert's source acknowledged a shared incident"
    assert [a.status for a in world.alerts()][1:] == ["acknowledged", "triggered"]


def test_change_events_go_on_open_incidents_and_never_page(world):
    world.trigger("time", dedup_key="a")
    before = world.counts()
    answer = world.post({"routing_key": KEYS["time"], "links": [{"href": "https://ci/1"}],
                         "payload": {"summary": "Deployed storage 2.4.1", "source": "ci"}},
                        "/v2/change/enqueue")
    assert answer.status_code == 202 and answer.json()["status"] == "success"
    after = world.counts()
    assert after["change_event"] == 1 and after["escalation"] == before["escalation"]
    assert after["incident"] == before["incident"]
    assert world.timeline(world.incidents()[0].id)[-1] == "change from ci: Deployed storage 2.4.1"


def test_the_alerts_api_filters_by_service_status_and_dedup_key(world):
    world.trigger("none", dedup_key="a")
    world.trigger("time", dedup_key="b")
    world.send("time", "resolve", "b")
    assert world.client.get("/api/v1/alerts").status_code == 401

    def keys(**params):
        answer = world.client.get("/api/v1/alerts", params=params, headers=AUTH)
        assert answer.status_code == 200, answer.text
        return [a["dedup_key"] for a in answer.json()["alerts"]]
    assert keys() == ["b", "a"]
    assert keys(service="storage") == ["b"]
    assert keys(status="triggered") == ["a"]
    assert keys(dedup_key="a", service="checkout") == ["a"]


def test_two_requests_racing_one_grouping_key_make_one_incident(world, monkeypatch):
    """Both read "no open group" before either inserts: the database's unique index lets one
    insert, the other re-reads and joins. On SQLite writers queue (BEGIN IMMEDIATE), so the
    barrier times out and they run one after the other; the result must be the same."""
    barrier = threading.Barrier(2, timeout=2 if world.store.kind == "postgresql" else 0.2)
    real_place = alert_service._place

    def place_after_both_read(session, alert, event_in, service, now, runtimes):
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        return real_place(session, alert, event_in, service, now, runtimes)
    monkeypatch.setattr(alert_service, "_place", place_after_both_read)
    errors: list[BaseException] = []

    def send(key: str) -> None:
        try:
            world.trigger("time", dedup_key=key)
        except BaseException as error:     # reported below, in the test's thread
            errors.append(error)
    threads = [threading.Thread(target=send, args=(key,)) for key in ("race-a", "race-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors, errors
    assert len(world.incidents()) == 1
    assert {a.incident_id for a in world.alerts()} == {world.incidents()[0].id}


def test_two_triggers_racing_one_dedup_key_make_one_alert(world):
    barrier = threading.Barrier(2)

    def send() -> None:
        barrier.wait()
        world.trigger("none", dedup_key="same")
    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    [alert] = world.alerts()
    assert alert.event_count == 2 and len(world.incidents()) == 1
