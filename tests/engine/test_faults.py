"""Breaking things on purpose: rate-limit and outage storms, a crash between a remote write and its
commit, a webhook racing a poll, edits on both sides at once. The invariants of DESIGN.md must hold."""

import pytest

from syncd.engine import service as sync_service
from syncd.engine.models import OutboxItem
from syncd.incidents import service as incident_service
from syncd.incidents.models import TimelineEntry
from syncd.simulators.base import Fault

from .conftest import make_engine
from .test_story import jira_issue, raise_sn_incident


class Crash(BaseException):
    """Stands for the process dying at the worst moment."""


def settle_with_time(world, cycles=12, step=120):
    """Cycle while moving the clock on, so backed-off deliveries come due."""
    for _ in range(cycles):
        world.cycle()
        world.clock.advance(step)


def test_429_and_503_storms_delay_delivery_but_lose_nothing(world):
    world.jira.inject(Fault("status", status=429, retry_after="1", times=6))
    world.sn.inject(Fault("status", status=503, path=r"/incident", method="PATCH", times=6))
    sys_id = raise_sn_incident(world)
    settle_with_time(world)
    world.jira.clear_faults()
    world.jira.inject(Fault("status", status=503, times=6))
    world.jira.human_update(world.link("jira").remote_key, {"priority": {"name": "High"}})
    world.jira.clear_faults()
    world.jira.inject(Fault("status", status=503, times=6))
    world.sn.human_add_journal(sys_id, "work_notes", "failing over")
    settle_with_time(world)
    world.jira.clear_faults()
    world.settle()
    assert world.incident().priority == "P2"
    assert world.sn.get_incident(sys_id)["priority"] == "2"
    assert [c["body"] for c in world.jira.comments(world.link("jira").remote_key)] == ["failing over"]
    assert world.jira.count_requests("POST", r"/issue$") - _failed_creates(world) == 1
    with world.store.transaction() as session:
        assert sync_service.dead_letters(session=session) == []


def _failed_creates(world):
    return sum(1 for r in world.jira.request_log()
               if r.method == "POST" and r.path.endswith("/issue") and r.status >= 400)


def test_a_crash_between_remote_create_and_commit_neither_duplicates_nor_loses(world, mappings):
    crashes = []

    def crash_once(item):
        if item.operation == "create" and not crashes:
            crashes.append(item.id)
            raise Crash()

    world.engine.outbox.after_remote_write = crash_once
    raise_sn_incident(world)
    with pytest.raises(Crash):
        world.cycle()
    assert world.link("jira") is None                   # the commit never happened
    # Restart: a new engine on the same store, after the dead worker's lease ran out.
    world.engine = make_engine(world.store, world.clock, world.sn, world.jira, mappings)
    world.clock.advance(120)
    world.settle()
    creates = [r for r in world.jira.request_log() if r.method == "POST" and r.path.endswith("/issue")]
    assert len(creates) == 1, "the retry must find the issue by correlation id, not create another"
    assert jira_issue(world)["fields"]["priority"]["name"] == "Highest"
    with world.store.transaction() as session:     # adopted or found, the timeline says so once
        linked = [e.data["connector"] for e in session.query(TimelineEntry).filter_by(kind="linked")]
    assert linked.count("jira") == 1, linked


def test_a_crash_between_a_comment_write_and_its_commit_posts_it_once(world, mappings):
    sys_id = raise_sn_incident(world)
    world.settle()

    def crash(item):
        if item.operation == "comment":
            raise Crash()

    world.engine.outbox.after_remote_write = crash
    world.sn.human_add_journal(sys_id, "work_notes", "rolling back deploy 42")
    with pytest.raises(Crash):
        world.cycle()
    world.engine = make_engine(world.store, world.clock, world.sn, world.jira, mappings)
    world.clock.advance(120)
    world.settle()
    bodies = [c["body"] for c in world.jira.comments(world.link("jira").remote_key)]
    assert bodies == ["rolling back deploy 42"]
    with world.store.transaction() as session:
        assert [c.body for c in incident_service.comments(session=session, incident_id=1)] == \
            ["rolling back deploy 42"]


def test_a_webhook_and_a_poll_seeing_the_same_change_apply_it_once(world):
    raise_sn_incident(world)
    world.settle()
    key = world.link("jira").remote_key
    world.jira.human_update(key, {"priority": {"name": "Low"}})
    world.engine.hint("jira", world.link("jira").remote_id)
    world.engine.hint("jira", world.link("jira").remote_id)     # a retried delivery
    world.settle()
    with world.store.transaction() as session:
        changes = [e for e in session.query(TimelineEntry).filter_by(kind="fields_changed",
                                                                     source="jira")]
    assert len(changes) == 1 and changes[0].data["changes"]["priority"]["to"] == "P4"
    assert world.sn.count_requests("PATCH") == 1


@pytest.mark.parametrize("newer, incident_priority, jira_priority, sn_priority", [
    ("store", "P3", "Medium", "3"), ("jira", "P5", "Lowest", "5")])
def test_the_same_field_edited_on_both_sides_goes_to_the_newer_edit_on_the_timeline(
        world, newer, incident_priority, jira_priority, sn_priority):
    raise_sn_incident(world)
    world.settle()
    key = world.link("jira").remote_key

    def store_edit():
        world.engine.commands.update(1, {"priority": "P3"}, actor="carol", source="api")

    def jira_edit():
        world.jira.human_update(key, {"priority": {"name": "Lowest"}})

    # The Jira mapping's policy is newest_wins. The simulators share the engine's clock, so the
    # later edit is the newer one whatever today's date.
    first, second = (jira_edit, store_edit) if newer == "store" else (store_edit, jira_edit)
    first()
    world.clock.advance(30)
    second()
    world.engine.inbound.poll("jira")          # Jira's edit arrives before ours goes out
    world.settle()
    assert world.incident().priority == incident_priority
    assert jira_issue(world)["fields"]["priority"]["name"] == jira_priority
    assert world.sn.get_incident(world.link("servicenow").remote_id)["priority"] == sn_priority
    with world.store.transaction() as session:
        conflicts = session.query(TimelineEntry).filter_by(kind="conflict").all()
    winner = "store" if newer == "store" else "remote"
    assert [(c.data["field"], c.data["winner"]) for c in conflicts] == [("priority", winner)]


def test_a_stopping_worker_hands_back_the_rows_it_has_not_started(world):
    for n in range(3):
        world.sn.human_create({"short_description": f"outage {n}", "impact": "3", "urgency": "3"})
    world.engine.poll("servicenow")
    asked = []

    def stop_after_first():
        asked.append(True)
        return len(asked) > 1

    claimed = world.engine.outbox.deliver_due("w1", limit=10, stopping=stop_after_first)
    assert claimed == 3
    with world.store.transaction() as session:
        states = sorted(item.state for item in session.query(OutboxItem).all())
    assert states == ["done", "pending", "pending"]
    world.settle()
    assert world.jira.count_requests("POST", r"/issue$") == 3


def test_hints_queued_together_are_read_as_one_batch(world):
    for n in range(3):
        world.sn.human_create({"short_description": f"outage {n}", "impact": "3", "urgency": "3"})
    world.settle()
    asked = []
    connector = world.engine.runtimes["servicenow"].connector
    real_fetch_many = connector.fetch_many
    connector.fetch_many = lambda ids: asked.append(list(ids)) or real_fetch_many(ids)
    sys_ids = [world.link("servicenow", n).remote_id for n in (1, 2, 3)]
    for n, sys_id in enumerate(sys_ids):
        world.sn.human_update(sys_id, {"short_description": f"outage {n} (worse)"})
        world.engine.hint("servicenow", sys_id)
        world.engine.hint("servicenow", sys_id)          # a retried delivery
    assert world.engine.drain_hints() == 6
    assert asked == [sys_ids]
    assert [world.incident(n).title for n in (1, 2, 3)] == [f"outage {n} (worse)" for n in range(3)]
