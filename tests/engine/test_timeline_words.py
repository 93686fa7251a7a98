"""The timeline says what changed, where and by whom, in words the console and postmortem print."""

from __future__ import annotations

from syncd.incidents import service as incident_service
from syncd.incidents.timeline import describe
from tests.engine.test_story import raise_sn_incident


def sentences(world, incident_id: int = 1) -> list[str]:
    with world.store.transaction() as session:
        return [describe(e) for e in incident_service.timeline(session=session,
                                                               incident_id=incident_id)]


def test_a_ticket_edit_is_told_with_old_and_new_value_the_system_and_the_person(world):
    sys_id = world.sn.human_create({"short_description": "Checkout database down",
                                    "impact": "2", "urgency": "2"}, user="beth.anglin")["sys_id"]
    world.settle()
    world.sn.human_update(sys_id, {"impact": "1", "urgency": "1"}, user="beth.anglin")
    world.settle()
    told = sentences(world)
    assert told[0] == "incident created in servicenow by beth.anglin: Checkout database down"
    assert "priority P3 → P1 in servicenow by beth.anglin" in told
    assert any(line.startswith("linked to OPS-1 in jira") for line in told)


def test_a_command_names_the_token_that_ran_it(world):
    raise_sn_incident(world)
    world.settle()
    world.engine.commands.acknowledge(1, actor="ops-bot", source="api")
    assert sentences(world)[-1] == "status triggered → acknowledged in api by ops-bot"
