"""The review's inbound findings that had no test yet: a record that always violates a constraint,
a field unmapped and mapped again, the empty side of a field without a baseline, own comments on
another channel, and a mass wipe hinted one webhook at a time."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from syncd.engine import service as sync_service
from syncd.incidents import service as incident_service
from syncd.mapping import default_mapping_path

from .test_inbound_defects import (  # noqa: F401  (mappings: the admin-editable copies)
    _linked_sn_records,
    _sn_only_world,
    cursor_of,
    inbound_dead_letters,
    incident_of,
    mappings,
)
from .test_outbound_defects import open_rows
from .test_story import raise_sn_incident

JIRA_DESCRIPTION_RULE = "  - canonical: description\n    remote: description\n\n"


def test_a_record_that_always_violates_a_constraint_is_a_dead_letter_and_the_poll_goes_on(world):
    sys_ids = [raise_sn_incident(world, short_description=f"outage {n}") for n in range(2)]
    world.settle()
    before = cursor_of(world, "servicenow")
    for n, sys_id in enumerate(sys_ids):
        world.clock.advance(1)
        world.sn.human_update(sys_id, {"short_description": f"outage {n} (worse)"})
    violations = []

    def violates_a_constraint(conn, cursor, statement, parameters, context, executemany):
        # Every apply of the first record breaks a constraint, however often it is retried.
        if statement.lstrip().upper().startswith("UPDATE INCIDENT") \
                and "outage 0 (worse)" in str(parameters):
            violations.append(statement)
            raise IntegrityError(statement, parameters, Exception("constraint failed"))

    event.listen(world.store.engine, "before_cursor_execute", violates_a_constraint)
    try:
        world.engine.poll("servicenow")
    finally:
        event.remove(world.store.engine, "before_cursor_execute", violates_a_constraint)
    assert len(violations) == 3                               # the apply's retries, then given up
    assert [remote_id for remote_id, _ in inbound_dead_letters(world)] == [sys_ids[0]]
    assert "IntegrityError" in inbound_dead_letters(world)[0][1]
    assert cursor_of(world, "servicenow") != before           # the batch did not stop on it
    assert incident_of(world, sys_ids[1]).title == "outage 1 (worse)"


def test_a_store_change_made_while_a_field_was_unmapped_goes_out_when_it_is_mapped_again(
        world, mappings, tmp_path):
    sys_id = raise_sn_incident(world)                  # description "p99 latency 30s" everywhere
    world.settle()
    key = world.link("jira").remote_key
    jira_file = default_mapping_path("jira").read_text()
    assert JIRA_DESCRIPTION_RULE in jira_file
    edited = tmp_path / "jira.yaml"
    edited.write_text(jira_file.replace(JIRA_DESCRIPTION_RULE, ""))
    assert mappings.reload().applied == ["jira"]
    world.clock.advance(60)
    world.jira.human_update(key, {"priority": {"name": "High"}})   # a read while unmapped
    world.settle()
    world.clock.advance(60)
    world.sn.human_update(sys_id, {"description": "p99 latency 45s"})    # Jira cannot hear it
    world.settle()
    assert world.jira.get_issue(key)["fields"]["description"] == "p99 latency 30s"
    edited.write_text(jira_file.replace(
        JIRA_DESCRIPTION_RULE, "  - canonical: description\n    remote: description\n"
                               "    policy: store_wins\n\n"))
    assert mappings.reload().applied == ["jira"]
    world.clock.advance(60)
    world.jira.human_update(key, {"priority": {"name": "Medium"}})  # the next read of the issue
    world.settle()
    assert world.incident().description == "p99 latency 45s"
    assert world.jira.get_issue(key)["fields"]["description"] == "p99 latency 45s"


def test_a_field_added_without_a_baseline_takes_the_remote_value_over_an_empty_store(
        world, mappings, tmp_path):
    """The other side of the review's store_wins test: remote_wins never empties the remote, and
    the remote's value reaches the store and the other system, on the timeline."""
    sn_file = default_mapping_path("servicenow").read_text()
    rule = "  - canonical: description\n    remote: description\n\n"
    edited = tmp_path / "servicenow.yaml"
    edited.write_text(sn_file.replace(rule, ""))
    assert mappings.reload().applied == ["servicenow"]
    sys_id = raise_sn_incident(world)
    world.settle()
    assert not world.incident().description
    edited.write_text(sn_file.replace(rule, "  - canonical: description\n    remote: description\n"
                                            "    policy: remote_wins\n\n"))
    assert mappings.reload().applied == ["servicenow"]
    world.clock.advance(60)
    world.jira.human_update(world.link("jira").remote_key, {"description": ""})   # still empty
    world.sn.human_update(sys_id, {"urgency": "2"})
    world.settle()
    assert world.incident().description == "p99 latency 30s"
    assert world.sn.get_incident(sys_id)["description"] == "p99 latency 30s"
    with world.store.transaction() as session:
        conflicts = [e.data for e in incident_service.timeline(session=session, incident_id=1)
                     if e.kind == "conflict" and e.data["field"] == "description"]
    assert [(c["connector"], c["winner"]) for c in conflicts][:1] == [("servicenow", "remote")]
    assert "store value is empty" in conflicts[0]["reason"]


def test_a_comment_by_the_integration_user_on_another_channel_is_not_taken_for_a_note(world):
    """A public note waits to be posted to ServiceNow's comments when the integration user
    writes the same words as a work note (an admin script under syncd's account): that work
    note is imported, not linked to the note, and the note still reaches the comments."""
    sys_id = raise_sn_incident(world)
    world.settle()
    world.engine.commands.add_note(1, "investigating", author="dave", source="api",
                                   visibility="public")
    world.clock.advance(5)
    world.sn.human_add_journal(sys_id, "work_notes", "investigating", user="admin")
    world.engine.poll("servicenow")                 # before the note's delivery
    world.settle()
    assert open_rows(world) == []
    assert sorted((e["element"], e["value"]) for e in world.sn.journal(sys_id)) == \
        [("comments", "investigating"), ("work_notes", "investigating")]
    with world.store.transaction() as session:
        assert [(c.visibility, c.origin) for c in
                incident_service.comments(session=session, incident_id=1)] == \
            [("public", "api"), ("internal", "servicenow")]


def test_a_mass_wipe_hinted_one_webhook_at_a_time_pauses_within_the_window(store, clock,
                                                                           simulators, mappings):
    world = _sn_only_world(store, clock, simulators, mappings)
    sys_ids = _linked_sn_records(world, 25)               # every description: "runbook"
    for sys_id in sys_ids[:12]:                            # a bulk edit empties twelve, slowly
        world.clock.advance(5)
        world.sn.human_update(sys_id, {"description": ""})
        world.engine.hint("servicenow", sys_id)
        world.engine.drain_hints()                         # each hint applied on its own
    reason = world.engine.inbound.paused_reason("servicenow")
    assert reason is not None and "description emptied on 10 of 25" in reason
    with world.store.transaction() as session:
        descriptions = [i.description for i in
                        incident_service.list_incidents(session=session, limit=100)]
    assert descriptions.count("runbook") == 16             # the ninth was the last mirrored
    world.engine.inbound.resume("servicenow")              # the operator accepts the change
    world.settle()
    assert world.engine.inbound.paused_reason("servicenow") is None
    with world.store.transaction() as session:
        descriptions = [i.description for i in
                        incident_service.list_incidents(session=session, limit=100)]
    assert descriptions.count("runbook") == 13


def test_wipes_spread_wider_than_the_window_do_not_pause(store, clock, simulators, mappings):
    world = _sn_only_world(store, clock, simulators, mappings)
    sys_ids = _linked_sn_records(world, 25)
    for sys_id in sys_ids[:12]:                            # ordinary work: one an hour
        world.clock.advance(3600)
        world.sn.human_update(sys_id, {"description": ""})
        world.engine.hint("servicenow", sys_id)
        world.engine.drain_hints()
        world.engine.poll("servicenow")
    assert world.engine.inbound.paused_reason("servicenow") is None
    with world.store.transaction() as session:
        assert sync_service.count_links(session=session, connector="servicenow") == 25
        descriptions = [i.description for i in
                        incident_service.list_incidents(session=session, limit=100)]
    assert descriptions.count("runbook") == 13
