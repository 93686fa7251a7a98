"""Which updates may skip the re-read (ADR 0007): a first claim, queued seconds ago and not before
syncd's last read of the record. Any other is late: it re-reads and settles by policy first."""

from __future__ import annotations

from datetime import timedelta

from syncd.engine.models import Link, OutboxItem
from syncd.engine.outbox import FRESH_FOR, OutboxDelivery
from syncd.incidents.models import TimelineEntry

from .test_story import jira_issue, raise_sn_incident


def conflicts(world) -> list[tuple[str, str]]:
    with world.store.transaction() as session:
        return [(entry.data["field"], entry.data["winner"])
                for entry in session.query(TimelineEntry).filter_by(kind="conflict")]


def test_an_update_queued_before_a_newer_read_settles_the_read_by_policy_first(world):
    raise_sn_incident(world)                              # P1 on both sides
    world.settle()
    key = world.link("jira").remote_key
    sys_id = world.link("servicenow").remote_id
    world.sn.human_update(sys_id, {"impact": "2", "urgency": "2"})  # a person: P3
    world.engine.poll("servicenow")                       # queues the Jira update
    world.clock.advance(3)
    world.jira.human_update(key, {"priority": {"name": "Low"}})    # another person, in Jira
    world.engine.runtimes["jira"].connector.fetch(world.link("jira").remote_id)
    with world.store.transaction() as session:            # syncd read Jira after the row was queued
        link = session.query(Link).filter_by(connector="jira").one()
        link.synced_at = world.clock.now()
    world.engine.deliver_all_due()
    # Jira's newest_wins: the person's later edit wins the conflict, recorded, not overwritten.
    assert conflicts(world) == [("priority", "remote")], \
        "the late update replaced the person's Jira priority with no conflict recorded"
    world.settle()
    assert jira_issue(world)["fields"]["priority"]["name"] == "Low"
    assert world.incident().priority == f"P{world.sn.get_incident(sys_id)['priority']}" != "P3"


def test_only_a_first_claim_not_older_than_the_last_read_and_seconds_old_is_fresh(clock):
    queued = clock.now()
    first = OutboxItem(claim_token=1, created_at=queued)
    read_at = lambda seconds: Link(synced_at=queued + timedelta(seconds=seconds))  # noqa: E731
    now = queued + timedelta(seconds=1)
    assert OutboxDelivery.fresh(first, read_at(0), now)           # the apply that queued it
    assert OutboxDelivery.fresh(first, read_at(-25), now)         # read before it was queued
    assert not OutboxDelivery.fresh(first, read_at(0.5), now)     # a read came since
    assert not OutboxDelivery.fresh(first, read_at(0), queued + FRESH_FOR + timedelta(seconds=1))
    assert not OutboxDelivery.fresh(OutboxItem(claim_token=2, created_at=queued), read_at(0), now)
