"""Review of issue 9's inbound changes: stories that still lose or duplicate data."""

from __future__ import annotations

from syncd.incidents import service as incident_service
from syncd.mapping import default_mapping_path

from tests.engine.test_inbound_defects import mappings  # noqa: F401  (admin-editable copies)
from tests.engine.test_story import raise_sn_incident

DESCRIPTION_RULE = "  - canonical: description\n    remote: description\n\n"


def timeline_of(world, kind):
    with world.store.transaction() as session:
        return [dict(e.data) for e in incident_service.timeline(session=session, incident_id=1)
                if e.kind == kind]


def test_a_field_added_with_store_wins_never_wipes_the_remote(world, mappings, tmp_path):
    sn_file = default_mapping_path("servicenow").read_text()
    assert DESCRIPTION_RULE in sn_file
    edited = tmp_path / "servicenow.yaml"
    edited.write_text(sn_file.replace(DESCRIPTION_RULE, ""))
    assert mappings.reload().applied == ["servicenow"]
    sys_id = raise_sn_incident(world)          # ServiceNow holds "p99 latency 30s"
    world.settle()
    assert not world.incident().description    # the store never read it
    # The admin maps the field now, and wants syncd to be the truth for it.
    edited.write_text(sn_file.replace(
        DESCRIPTION_RULE, "  - canonical: description\n    remote: description\n"
                          "    policy: store_wins\n\n"))
    assert mappings.reload().applied == ["servicenow"]
    world.clock.advance(60)
    world.sn.human_update(sys_id, {"urgency": "2"})     # any edit makes the poll re-read it
    world.settle()
    # An empty value in a store that never carried the field is not an edit: nothing is wiped.
    assert world.sn.get_incident(sys_id)["description"] == "p99 latency 30s"


def test_a_mass_wipe_told_by_webhooks_pauses_like_one_found_by_the_poll(store, clock, simulators,
                                                                         mappings):
    from tests.engine.test_inbound_defects import _linked_sn_records, _sn_only_world
    world = _sn_only_world(store, clock, simulators, mappings)
    sys_ids = _linked_sn_records(world, 25)               # every description: "runbook"
    for sys_id in sys_ids[:12]:                            # a bad bulk edit empties twelve
        world.sn.human_update(sys_id, {"description": ""})
        world.engine.hint("servicenow", sys_id)            # and a webhook tells of each
    world.engine.drain_hints()
    with world.store.transaction() as session:
        descriptions = [i.description for i in
                        incident_service.list_incidents(session=session, limit=100)]
    assert world.engine.inbound.paused_reason("servicenow") is not None
    assert descriptions.count("runbook") == 25


def test_newest_wins_keeps_the_newest_edit_not_the_newest_poll(world):
    sys_id = raise_sn_incident(world)                      # P1 on both sides
    world.settle()
    world.clock.advance(60)
    world.sn.human_update(sys_id, {"impact": "2", "urgency": "2"})          # P3, first
    world.clock.advance(10)
    world.jira.human_update(world.link("jira").remote_key,
                            {"priority": {"name": "Low"}})                    # P4, 10 s later
    world.clock.advance(5)
    world.engine.inbound.poll("servicenow")     # ServiceNow's poll happens to come first
    world.settle()
    assert world.incident().priority == "P4"
    assert world.sn.get_incident(sys_id)["priority"] == "4"
    assert [d["field"] for d in timeline_of(world, "conflict")] == ["priority"]
