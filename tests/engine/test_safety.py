"""Safety nets of issue 5: reconcile repairs drift; a mass change pauses a connector."""

from datetime import timedelta

import requests

from syncd.engine import dead_letters
from syncd.engine import service as sync_service
from syncd.engine.models import Link
from syncd.incidents import service as incident_service

from .test_story import jira_issue, raise_sn_incident


def test_reconcile_repairs_a_missed_remote_change_and_a_lost_outbound_one(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    # A remote change the polls never saw: the link already claims its version.
    world.sn.human_update(sys_id, {"short_description": "Checkout DB primary down"})
    with world.store.transaction() as session:
        link = session.query(Link).filter_by(connector="servicenow").one()
        link.remote_version = world.sn.get_incident(sys_id)["sys_mod_count"]
        # ...and a store change whose delivery to Jira was lost.
        incident = incident_service.get_incident(session=session, incident_id=1)
        incident.priority = "P2"
    world.cycle()
    assert world.incident().title == "Checkout database down"     # the poll was fooled
    counts = world.engine.inbound.reconcile("servicenow")
    counts_jira = world.engine.inbound.reconcile("jira")
    world.settle()
    assert counts["checked"] == 1 and counts["repaired"] == 1
    assert counts_jira["checked"] == 1
    assert world.incident().title == "Checkout DB primary down"
    assert jira_issue(world)["fields"]["summary"].endswith("Checkout DB primary down")
    assert jira_issue(world)["fields"]["priority"]["name"] == "High"


def test_a_poll_setting_many_linked_records_to_one_value_pauses_until_resumed(world):
    world.engine.inbound.pause_min_links = 4       # the guard's scale shrunk to five links
    world.engine.inbound.pause_min_records = 4
    for n in range(5):
        world.sn.human_create({"short_description": f"outage {n}", "impact": "2", "urgency": "2"})
    world.settle()
    keys = [world.link("jira", incident_id).remote_key for incident_id in range(1, 6)]
    for key in keys[:4]:                         # someone bulk-edits 4 of 5 issues
        world.jira.human_update(key, {"priority": {"name": "Lowest"}})
    world.cycle()
    with world.store.transaction() as session:
        reason = sync_service.get_cursor(session=session, connector="jira").paused_reason
    assert "priority set to \"P5\" on 4 of 5 linked records" in reason
    assert "paused until an operator resumes it" in reason
    assert {world.incident(n).priority for n in range(1, 6)} == {"P3"}    # nothing mirrored
    world.engine.inbound.resume("jira")
    world.settle()
    assert [world.incident(n).priority for n in range(1, 6)] == ["P5"] * 4 + ["P3"]


def test_reconcile_reports_a_vanished_record_without_deleting_anything(world):
    raise_sn_incident(world)
    world.settle()
    deleted = requests.delete(f"{world.jira.base_url}/rest/api/2/issue/{world.link('jira').remote_key}",
                              auth=("alice", "alice-api-token"), timeout=5)
    assert deleted.status_code == 204
    counts = world.engine.inbound.reconcile("jira")
    assert counts["vanished"] == 1
    with world.store.transaction() as session:
        kinds = [e.kind for e in incident_service.timeline(session=session, incident_id=1)]
    assert "remote_vanished" in kinds and world.incident().status == "triggered"


def test_after_downtime_the_poller_reconciles_before_polling(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    world.sn.human_update(sys_id, {"short_description": "Checkout DB primary down"})
    with world.store.transaction() as session:     # a change the next poll window would miss
        link = session.query(Link).filter_by(connector="servicenow").one()
        link.remote_version = world.sn.get_incident(sys_id)["sys_mod_count"]
    assert not world.engine.reconcile_after_downtime("servicenow")     # no downtime yet
    world.clock.advance(timedelta(hours=1).total_seconds())
    assert world.engine.reconcile_after_downtime("servicenow")
    assert world.incident().title == "Checkout DB primary down"


def test_an_unmappable_record_is_a_dead_letter_until_retried(world):
    sys_id = world.sn.human_create({"short_description": "odd state", "state": "4",
                                    "impact": "3", "urgency": "3"})["sys_id"]
    world.cycle(2)
    with world.store.transaction() as session:
        (dead,) = dead_letters.list_dead_letters(session=session)
        assert dead["operation"] == "inbound" and "state" in dead["last_error"]
        assert incident_service.list_incidents(session=session) == []
    assert world.sn.get_incident(sys_id)["state"] == "4"
    # The operator fixes the mapping (here: the record) and retries the dead letter.
    world.sn.human_update(sys_id, {"state": "2"})
    with world.store.transaction() as session:
        dead_letters.retry(session=session, dead_letter_id=dead["id"], now=world.clock.now())
    world.engine.inbound.retry_dead_inbound("servicenow")
    world.settle()
    with world.store.transaction() as session:
        assert dead_letters.list_dead_letters(session=session) == []
        assert [i.status for i in incident_service.list_incidents(session=session)] == ["acknowledged"]


def test_a_paused_connector_ignores_webhook_hints(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    world.engine.inbound.pause("servicenow", "operator test")
    world.sn.human_update(sys_id, {"short_description": "edited while paused"})
    world.engine.hint("servicenow", sys_id)
    world.settle()
    assert world.incident().title == "Checkout database down"
    world.engine.inbound.resume("servicenow")
    world.settle()
    assert world.incident().title == "edited while paused"


def test_a_record_that_maps_again_closes_its_old_dead_letter(world):
    sys_id = world.sn.human_create({"short_description": "odd state", "state": "4",
                                    "impact": "3", "urgency": "3"})["sys_id"]
    world.cycle()
    world.sn.human_update(sys_id, {"state": "1"})
    world.settle()
    with world.store.transaction() as session:
        assert dead_letters.list_dead_letters(session=session) == []
        assert [i.status for i in incident_service.list_incidents(session=session)] == ["triggered"]


def test_a_webhook_for_a_record_not_yet_mirrored_leaves_creation_to_the_poll(world):
    """Only the poll applies the connector's filter, so only the poll may create an incident."""
    sys_id = world.sn.human_create({"short_description": "new", "impact": "3", "urgency": "3"})["sys_id"]
    world.engine.hint("servicenow", sys_id)
    assert world.engine.drain_hints() == 1
    with world.store.transaction() as session:
        assert incident_service.list_incidents(session=session) == []
    world.engine.poll("servicenow")
    assert world.incident().title == "new"
