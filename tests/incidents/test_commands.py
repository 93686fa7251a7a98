"""Incident commands are each one transaction with the version check: a resolve that commits while
an acknowledge runs is never overwritten (issue 9, defect 6)."""

from __future__ import annotations

import threading

import pytest

from syncd.incidents import service as incident_service
from syncd.incidents.commands import IncidentCommands


def new_incident(store, clock) -> int:
    with store.transaction() as session:
        return incident_service.create_incident(session=session, fields={"title": "DB down"},
                                                now=clock.now(), actor="t", source="test").id


def test_an_acknowledge_racing_a_resolve_never_reopens_it(store, clock):
    incident_id = new_incident(store, clock)
    commands = IncidentCommands(sessions=store.sessions, runtimes={}, clock=clock)
    resolving, acknowledged = threading.Event(), {}

    def acknowledge():
        resolving.wait(10)
        try:
            acknowledged["diff"] = commands.acknowledge(incident_id, actor="bob", source="api")
        except incident_service.InvalidTransition as refused:
            acknowledged["refused"] = str(refused)

    thread = threading.Thread(target=acknowledge)
    thread.start()
    with store.transaction() as session:       # a resolve holds the row while the ack starts
        incident_service.update_incident(session=session, incident_id=incident_id,
                                         changes={"status": "resolved"}, now=clock.now(),
                                         actor="carol", source="api")
        resolving.set()
        thread.join(0.5)                        # the ack waits for the row (or the write lock)
        assert thread.is_alive(), "the acknowledge must wait for the resolve's transaction"
    thread.join(10)
    assert "resolved; it cannot be acknowledged" in acknowledged.get("refused", "")
    with store.transaction() as session:
        incident = incident_service.get_incident(session=session, incident_id=incident_id)
        assert (incident.status, incident.resolved_at) == ("resolved", clock.now())


def test_acknowledge_and_resolve_twice_change_nothing_more(store, clock):
    incident_id = new_incident(store, clock)
    commands = IncidentCommands(sessions=store.sessions, runtimes={}, clock=clock)
    assert commands.acknowledge(incident_id, actor="bob", source="api") == {
        "status": ("triggered", "acknowledged")}
    assert commands.acknowledge(incident_id, actor="bob", source="api") == {}
    assert commands.resolve(incident_id, actor="bob", source="api", resolution="rollback")
    assert commands.resolve(incident_id, actor="bob", source="api", resolution="other") == {}
    with pytest.raises(incident_service.InvalidTransition):
        commands.acknowledge(incident_id, actor="bob", source="api")
    with store.transaction() as session:
        incident = incident_service.get_incident(session=session, incident_id=incident_id)
        assert (incident.status, incident.resolution) == ("resolved", "rollback")
