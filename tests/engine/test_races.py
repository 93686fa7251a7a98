"""Races and bad records a reviewer found, as stories: reads older than what syncd already knows,
one bad record in a batch, a delivery outliving its lease, an edit landing while our write is in
flight. Each asserts the invariant that broke before the fix."""

from sqlalchemy import select

from syncd.engine import dead_letters
from syncd.engine.models import OutboxItem
from syncd.incidents import service as incident_service

from .test_story import raise_sn_incident


def test_a_record_read_before_our_own_write_does_not_revert_it(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    sn = world.engine.runtimes["servicenow"].connector
    read_at = world.clock.now()
    stale = sn.fetch(sys_id)                              # a poll read, before our write lands
    world.clock.advance(1)
    world.engine.commands.update(1, {"title": "Renamed by responder"}, actor="r", source="api")
    world.engine.deliver_all_due()
    result = world.engine.inbound.apply("servicenow", stale, read_at=read_at)
    assert result.outcome == "stale"
    assert world.incident().title == "Renamed by responder"
    assert world.engine.hints.qsize() == 1                # it is re-read instead
    world.settle()
    assert world.incident().title == "Renamed by responder"
    assert world.sn.get_incident(sys_id)["short_description"] == "Renamed by responder"


def test_a_webhook_read_older_than_what_a_poll_applied_is_not_applied_over_it(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    sn = world.engine.runtimes["servicenow"].connector
    world.sn.human_update(sys_id, {"short_description": "v5"})
    hint_read_at = world.clock.now()
    old = sn.fetch(sys_id)                                # the hint worker reads v5...
    world.clock.advance(1)
    world.sn.human_update(sys_id, {"short_description": "v6"})
    world.engine.poll("servicenow")                       # ...the poller reads and applies v6
    assert world.engine.inbound.apply("servicenow", old, read_at=hint_read_at).outcome == "stale"
    world.settle()
    assert world.incident().title == "v6"
    assert world.jira.get_issue(world.link("jira").remote_key)["fields"]["summary"].endswith("v6")


def test_one_bad_record_is_a_dead_letter_and_the_poll_goes_on(world):
    first = raise_sn_incident(world)
    world.settle()
    world.sn.human_update(first, {"short_description": ""})       # an incident needs a title
    world.sn.human_create({"short_description": "second, fine", "impact": "3", "urgency": "3"})
    world.settle()
    with world.store.transaction() as session:
        (dead,) = dead_letters.list_dead_letters(session=session)
        assert dead["operation"] == "inbound" and "title" in dead["last_error"]
        titles = sorted(i.title for i in incident_service.list_incidents(session=session))
    assert titles == ["Checkout database down", "second, fine"]


def test_a_cloned_jira_issue_carrying_our_correlation_label_does_not_wedge_the_poll(world):
    world.engine.runtimes["jira"].create_incidents = True
    raise_sn_incident(world)
    world.settle()
    labels = world.jira.get_issue(world.link("jira").remote_key)["fields"]["labels"]
    world.jira.human_create({"summary": "clone", "labels": labels})
    world.sn.human_create({"short_description": "later", "impact": "3", "urgency": "3"})
    world.settle()
    with world.store.transaction() as session:
        titles = sorted(i.title for i in incident_service.list_incidents(session=session))
    assert "later" in titles and "clone" in titles
    assert world.link("jira", 1).remote_key == "OPS-1"


def test_a_retried_inbound_dead_letter_that_still_fails_stays_dead_and_blocks_nothing(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    world.sn.human_update(sys_id, {"state": "9"})                 # no status maps from 9
    world.cycle()
    with world.store.transaction() as session:
        (dead,) = dead_letters.list_dead_letters(session=session)
        dead_letters.retry(session=session, dead_letter_id=dead["id"], now=world.clock.now())
    world.cycle()
    with world.store.transaction() as session:
        assert [d["id"] for d in dead_letters.list_dead_letters(session=session)] == [dead["id"]]
    world.engine.commands.update(1, {"title": "renamed"}, actor="r", source="api")
    world.settle()
    assert world.sn.get_incident(sys_id)["short_description"] == "renamed"


def test_a_remote_edit_that_wins_while_our_write_is_in_flight_goes_out_again(world):
    sys_id = world.sn.human_create({"short_description": "orig", "impact": "1", "urgency": "1"})["sys_id"]
    world.settle()
    sn = world.engine.runtimes["servicenow"].connector
    real_update = sn.update
    interleaved = []

    def update_while_a_person_edits(remote_id, fields):
        if not interleaved:
            interleaved.append(True)
            world.clock.advance(5)
            world.sn.human_update(sys_id, {"short_description": "human edit"})
            world.engine.poll("servicenow")          # the poller runs meanwhile; newest wins
        return real_update(remote_id, fields)

    sn.update = update_while_a_person_edits
    world.clock.advance(5)
    world.engine.commands.update(1, {"title": "store edit"}, actor="r", source="api")
    world.engine.deliver_all_due()
    sn.update = real_update
    world.clock.advance(60)
    world.settle()
    assert world.incident().title == world.sn.get_incident(sys_id)["short_description"]
    assert world.jira.get_issue(world.link("jira").remote_key)["fields"]["summary"].endswith(
        world.incident().title)


def test_a_delivery_that_outlives_its_lease_is_not_repeated_by_another_worker(world):
    world.sn.human_create({"short_description": "orig", "impact": "1", "urgency": "1"})
    world.engine.poll("servicenow")                           # incident 1 and a Jira create row
    jira = world.engine.runtimes["jira"].connector
    real_find = jira.find_by_correlation
    calls = []

    def slow_find(correlation):
        calls.append(correlation)
        found = real_find(correlation)
        if len(calls) == 1:                                   # a long 429 storm
            world.clock.advance(61)                           # past the 60 s lease
            world.engine.outbox.deliver_due("replica-B")      # another worker takes the row
        return found

    jira.find_by_correlation = slow_find
    world.engine.outbox.deliver_due("replica-A")
    jira.find_by_correlation = real_find
    world.settle()
    assert len(world.jira.search("project = OPS")) == 1
    with world.store.transaction() as session:
        assert dead_letters.list_dead_letters(session=session) == []


def test_an_unexpected_error_in_a_delivery_is_recorded_on_the_row(world):
    raise_sn_incident(world)
    world.engine.poll("servicenow")
    jira = world.engine.runtimes["jira"].connector
    real_create = jira.create
    jira.create = lambda fields, correlation_id: (_ for _ in ()).throw(ValueError("bug"))
    world.engine.deliver_all_due()                            # must not raise
    with world.store.transaction() as session:
        row = session.scalars(select(OutboxItem).where(OutboxItem.connector == "jira")).one()
        assert row.state == "pending" and row.last_error == "ValueError: bug"
    jira.create = real_create
    world.clock.advance(120)
    world.settle()
    assert world.link("jira") is not None
