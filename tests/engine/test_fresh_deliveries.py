"""Which updates may skip the re-read: only those whose record syncd read after the change was
queued, seconds ago (ADR 0007). The row's own age says nothing about the record."""

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


def test_an_update_queued_seconds_after_a_persons_edit_does_not_overwrite_it_silently(world):
    raise_sn_incident(world)                              # P1 on both sides
    world.settle()
    key = world.link("jira").remote_key
    world.clock.advance(25)
    world.engine.poll("jira")                             # syncd's last read of the issue
    world.clock.advance(25)
    world.jira.human_update(key, {"priority": {"name": "Low"}})    # a person, unseen yet
    world.clock.advance(3)
    sys_id = world.link("servicenow").remote_id
    world.sn.human_update(sys_id, {"impact": "2", "urgency": "2"})  # another person: P3
    world.engine.poll("servicenow")                       # queues the Jira update, 3 s later
    world.engine.deliver_all_due()
    assert conflicts(world) == [("priority", "store")], \
        "the update replaced the person's Jira priority with no conflict recorded"
    world.settle()
    incident = world.incident()
    assert jira_issue(world)["fields"]["priority"]["name"] != "Low"
    assert incident.priority == f"P{world.sn.get_incident(sys_id)['priority']}"


def test_only_a_first_claim_after_a_read_seconds_ago_is_fresh(clock):
    queued = clock.now()
    first = OutboxItem(claim_token=1, created_at=queued)
    read_at = lambda seconds: Link(synced_at=queued + timedelta(seconds=seconds))  # noqa: E731
    now = queued + timedelta(seconds=1)
    assert OutboxDelivery.fresh(first, read_at(0), now)           # the apply that queued it
    assert OutboxDelivery.fresh(first, read_at(0.5), now)         # a poll since
    assert not OutboxDelivery.fresh(first, read_at(-5), now)      # read before it was queued
    assert not OutboxDelivery.fresh(first, read_at(0), now + FRESH_FOR)   # read too long ago
    assert not OutboxDelivery.fresh(OutboxItem(claim_token=2, created_at=queued), read_at(0), now)
