"""Issue 9's inbound defects, each told as the story that reproduced it: a field added to a mapping,
a person's short comment, errors of one record against errors of the store, newest_wins on one
time base, the mass-change guard after an outage, and hint batches without an unbounded IN list."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
import requests
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from syncd.clock import ManualClock
from syncd.engine import service as sync_service
from syncd.engine.models import CommentLink
from syncd.incidents import service as incident_service
from syncd.incidents.models import TimelineEntry
from syncd.incidents.timeline import describe
from syncd.mapping import default_mapping_path
from syncd.mapping.reload import MappingSet
from syncd.simulators.base import Fault
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import ServiceNowSimulator

from .conftest import World, make_engine
from .test_story import jira_issue, raise_sn_incident


@pytest.fixture
def mappings(tmp_path):
    """Copies of the default mappings an admin may edit (and the daemon hot-reloads)."""
    paths = {}
    for system in ("servicenow", "jira"):
        paths[system] = tmp_path / f"{system}.yaml"
        shutil.copy(default_mapping_path(system), paths[system])
    return MappingSet(paths)


def timeline_of(world, incident_id=1, kind=None):
    with world.store.transaction() as session:
        entries = incident_service.timeline(session=session, incident_id=incident_id)
        return [(e.kind, dict(e.data)) for e in entries if kind is None or e.kind == kind]


def cursor_of(world, connector):
    with world.store.transaction() as session:
        row = sync_service.get_cursor(session=session, connector=connector)
        return (row.watermark, sorted(row.seen), row.paused_reason) if row else None


def incident_of(world, sys_id):
    """The incident linked to a ServiceNow record (polls create them in their own order)."""
    with world.store.transaction() as session:
        link = sync_service.find_link(session=session, connector="servicenow", remote_id=sys_id)
        return incident_service.get_incident(session=session, incident_id=link.incident_id)


def inbound_dead_letters(world):
    with world.store.transaction() as session:
        return [(row.remote_id, row.reason)
                for row in sync_service.inbound_dead_letters(session=session)]


# -- defect 1: a field without a baseline ---------------------------------------------------------

def test_a_field_added_back_to_the_mapping_never_wipes_the_store(world, mappings, tmp_path):
    jira_file = default_mapping_path("jira").read_text()
    rule = "  - canonical: description\n    remote: description\n\n"
    assert rule in jira_file
    edited = tmp_path / "jira.yaml"
    edited.write_text(jira_file.replace(rule, ""))
    assert mappings.reload().applied == ["jira"]
    sys_id = raise_sn_incident(world)          # its description: "p99 latency 30s"
    world.settle()
    assert "description" not in world.link("jira").shadow
    edited.write_text(jira_file)               # the admin puts the rule back
    assert mappings.reload().applied == ["jira"]
    world.clock.advance(60)
    world.jira.human_update(world.link("jira").remote_key, {"priority": {"name": "Low"}})
    world.settle()
    assert world.incident().priority == "P4"
    assert world.incident().description == "p99 latency 30s"
    assert world.sn.get_incident(sys_id)["description"] == "p99 latency 30s"
    assert jira_issue(world)["fields"]["description"] == "p99 latency 30s"   # pushed out instead
    (conflict,) = [data for _, data in timeline_of(world, kind="conflict")]
    assert (conflict["field"], conflict["store"], conflict["winner"], conflict["policy"]) == \
        ("description", "p99 latency 30s", "store", "newest_wins")
    assert conflict["remote"] in (None, "") and "no baseline" in conflict["reason"]


def test_a_field_without_a_baseline_counts_toward_the_mass_change_pause(store, clock, simulators,
                                                                          mappings, tmp_path):
    world = _sn_only_world(store, clock, simulators, mappings)
    sn_file = default_mapping_path("servicenow").read_text()
    rule = "  - canonical: description\n    remote: description\n\n"
    edited = tmp_path / "servicenow.yaml"
    edited.write_text(sn_file.replace(rule, ""))
    mappings.reload()
    sys_ids = _linked_sn_records(world, 20, description="")
    with world.store.transaction() as session:     # the store knows descriptions SN never had
        for incident in incident_service.list_incidents(session=session, limit=100):
            incident.description = f"runbook {incident.id}"
    edited.write_text(sn_file)
    mappings.reload()
    for n, sys_id in enumerate(sys_ids[:12]):     # twelve ordinary edits make them re-read
        world.sn.human_update(sys_id, {"short_description": f"outage {n}: update"})
    world.cycle()
    assert "description" in cursor_of(world, "servicenow")[2]


# -- defect 2, inbound: a person's short comment ---------------------------------------------------

def test_a_persons_ack_is_imported_even_while_syncd_has_an_ack_pending(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    world.engine.commands.add_note(1, "ack", author="carol", source="api")
    world.jira.human_comment(world.link("jira").remote_key, "ack")        # a person, meanwhile
    world.engine.inbound.poll("jira")             # before syncd's note has gone out
    world.settle()
    with world.store.transaction() as session:
        stored = [(c.body, c.origin) for c in incident_service.comments(session=session,
                                                                        incident_id=1)]
    assert sorted(stored) == [("ack", "api"), ("ack", "jira")]
    assert [c["body"] for c in world.jira.comments(world.link("jira").remote_key)] == ["ack", "ack"]
    assert [e["value"] for e in world.sn.journal(sys_id)] == ["ack", "ack"]


def test_our_own_servicenow_note_whose_link_was_lost_is_linked_not_imported(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    from .test_outbound_defects import Crash

    def crash(item):
        if item.operation == "comment" and item.connector == "servicenow":
            raise Crash()

    world.engine.outbox.after_remote_write = crash
    world.engine.commands.add_note(1, "rolling back", author="carol", source="api")
    with pytest.raises(Crash):                       # the commit of the delivery was lost
        world.engine.deliver_all_due()
    world.engine = make_engine(world.store, world.clock, world.sn, world.jira, world.mappings)
    world.sn.human_update(sys_id, {"urgency": "2"})  # anything that makes the poll re-read it
    world.engine.poll("servicenow")                  # before the row's retry looks for it
    with world.store.transaction() as session:
        assert session.query(CommentLink).filter_by(connector="servicenow").count() == 1
    world.clock.advance(180)                         # the dead process's claims lapse
    world.settle()
    with world.store.transaction() as session:
        assert [c.body for c in incident_service.comments(session=session, incident_id=1)] == \
            ["rolling back"]
    assert [e["value"] for e in world.sn.journal(sys_id)] == ["rolling back"]
    assert [c["body"] for c in world.jira.comments(world.link("jira").remote_key)] == ["rolling back"]


# -- defect 4: errors of one record against errors of the store ------------------------------------

def test_a_database_error_retries_the_batch_with_the_cursor_unmoved(world):
    sys_ids = [raise_sn_incident(world, short_description=f"outage {n}") for n in range(2)]
    world.settle()
    before = cursor_of(world, "servicenow")
    for n, sys_id in enumerate(sys_ids):
        world.sn.human_update(sys_id, {"short_description": f"outage {n} (worse)"})
    failures = []

    def database_is_locked(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE INCIDENT") and not failures:
            failures.append(statement)
            raise OperationalError(statement, parameters, Exception("database is locked"))

    event.listen(world.store.engine, "before_cursor_execute", database_is_locked)
    try:
        world.engine.poll("servicenow")
    finally:
        event.remove(world.store.engine, "before_cursor_execute", database_is_locked)
    assert failures and inbound_dead_letters(world) == []
    assert cursor_of(world, "servicenow") == before       # the next poll re-reads the batch
    world.settle()
    assert [incident_of(world, s).title for s in sys_ids] == ["outage 0 (worse)", "outage 1 (worse)"]
    assert inbound_dead_letters(world) == []


def test_a_permanent_error_of_one_record_dead_letters_it_and_the_batch_goes_on(world):
    sys_ids = [raise_sn_incident(world, short_description=f"outage {n}") for n in range(2)]
    world.settle()
    for n, sys_id in enumerate(sys_ids):
        world.sn.human_update(sys_id, {"short_description": f"outage {n} (worse)"})
    # The batched journal read fails for a passing reason, so each record's journal is read on its
    # own; the first of those reads answers 404.
    world.sn.inject(Fault("status", status=503, path=r"sys_journal_field", times=2))
    world.sn.inject(Fault("status", status=404, path=r"sys_journal_field", times=1))
    world.engine.poll("servicenow")
    world.sn.clear_faults()
    (dead,) = inbound_dead_letters(world)
    assert dead[0] in sys_ids and "404" in dead[1]
    other = 1 if dead[0] == sys_ids[0] else 0
    assert incident_of(world, sys_ids[other]).title == f"outage {other} (worse)"
    assert cursor_of(world, "servicenow")[1] != []        # the cursor moved past the batch


def test_a_transient_error_of_one_record_retries_the_whole_batch(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    before = cursor_of(world, "servicenow")
    world.sn.human_update(sys_id, {"short_description": "Checkout DB primary down"})
    world.sn.inject(Fault("status", status=503, path=r"sys_journal_field", times=4))
    world.engine.poll("servicenow")
    assert cursor_of(world, "servicenow") == before and inbound_dead_letters(world) == []
    world.sn.clear_faults()
    world.settle()
    assert world.incident().title == "Checkout DB primary down"


# -- defect 5: newest_wins per field, on syncd's clock ---------------------------------------------

@pytest.fixture
def skewed_world(store, clock, mappings):
    """Both simulators on a clock of their own that runs 90 s behind the engine's."""
    remote_clock = ManualClock(clock.now() - timedelta(seconds=90))
    sn = ServiceNowSimulator(clock=remote_clock).start()
    jira = JiraSimulator(deployment="Cloud", clock=remote_clock).start()
    world = World(store, clock, sn, jira, make_engine(store, clock, sn, jira, mappings), mappings)
    world.remote_clock = remote_clock
    yield world
    for runtime in world.engine.runtimes.values():
        runtime.connector.close()
    sn.stop()
    jira.stop()


def _minutes_pass(world, minutes):
    world.clock.advance(minutes * 60)
    world.remote_clock.advance(minutes * 60)


def test_newest_wins_compares_each_fields_own_change_times(skewed_world):
    world = skewed_world
    raise_sn_incident(world)
    world.settle()
    key = world.link("jira").remote_key
    _minutes_pass(world, 10)
    world.engine.commands.update(1, {"priority": "P3"}, actor="carol", source="api")
    _minutes_pass(world, 10)
    world.jira.human_update(key, {"priority": {"name": "Lowest"}})    # newer than carol's P3
    _minutes_pass(world, 10)
    world.engine.commands.update(1, {"title": "Checkout DB down"}, actor="carol", source="api")
    world.engine.inbound.poll("jira")      # the incident as a whole changed last in the store
    world.settle()
    assert world.incident().priority == "P5"
    _minutes_pass(world, 10)
    world.jira.human_update(key, {"priority": {"name": "High"}})
    _minutes_pass(world, 10)
    world.engine.commands.update(1, {"priority": "P1"}, actor="carol", source="api")  # newer
    world.engine.inbound.poll("jira")
    world.settle()
    assert world.incident().priority == "P1"
    assert jira_issue(world)["fields"]["priority"]["name"] == "Highest"
    winners = [(data["field"], data["winner"]) for _, data in timeline_of(world, kind="conflict")]
    assert winners == [("priority", "remote"), ("priority", "store")]


# -- defect 8: the mass-change guard ---------------------------------------------------------------

def _sn_only_world(store, clock, simulators, mappings):
    """ServiceNow creates incidents, nothing creates Jira issues: many links, few requests."""
    sn, jira = simulators
    return World(store, clock, sn, jira, make_engine(store, clock, sn, jira, mappings,
                                                     jira_creates_tickets=False), mappings)


def _linked_sn_records(world, count, **fields):
    sys_ids = [world.sn.human_create({"short_description": f"outage {n}", "description": "runbook",
                                      "impact": "2", "urgency": "2", **fields})["sys_id"]
               for n in range(count)]
    world.settle()
    return sys_ids


@pytest.fixture
def sn_world(store, clock, simulators, mappings):
    world = _sn_only_world(store, clock, simulators, mappings)
    yield world
    for runtime in world.engine.runtimes.values():
        runtime.connector.close()


def test_the_catch_up_poll_after_an_outage_full_of_ordinary_edits_does_not_pause(sn_world):
    world = sn_world
    sys_ids = _linked_sn_records(world, 25)
    world.sn.inject(Fault("status", status=503))      # a 20 s outage; people keep working
    world.cycle()
    edits = ([{"short_description": f"outage {n}: cause found"} for n in range(5)]
             + [{"impact": "1", "urgency": "1"}, {"impact": "3", "urgency": "3"},
                {"impact": "1", "urgency": "2"}, {"impact": "2", "urgency": "3"}]
             + [{"state": "2"}] * 3 + [{"description": "failover done"}, {"description": ""}])
    for sys_id, change in zip(sys_ids, edits):
        world.sn.human_update(sys_id, change)
    world.sn.clear_faults()
    world.cycle()
    assert cursor_of(world, "servicenow")[2] is None
    incidents = [incident_of(world, sys_id) for sys_id in sys_ids[:14]]
    assert [i.title for i in incidents[:5]] == [f"outage {n}: cause found" for n in range(5)]
    assert [i.status for i in incidents[9:12]] == ["acknowledged"] * 3
    assert incidents[13].description == ""


def test_thirty_of_forty_records_emptied_in_one_field_pause_the_connector(sn_world):
    world = sn_world
    sys_ids = _linked_sn_records(world, 40)
    for sys_id in sys_ids[:30]:
        world.sn.human_update(sys_id, {"description": ""})
    world.cycle()
    reason = cursor_of(world, "servicenow")[2]
    assert "description" in reason and "emptied" in reason and "30 of 40" in reason
    assert {world.incident(n).description for n in range(1, 41)} == {"runbook"}
    emptied = sorted(incident_of(world, sys_id).id for sys_id in sys_ids[:30])
    assert [n for n in range(1, 41) if timeline_of(world, n, kind="sync_paused")] == emptied
    (_, data), = timeline_of(world, emptied[0], kind="sync_paused")
    assert data == {"connector": "servicenow", "reason": reason}
    with world.store.transaction() as session:
        entry = session.query(TimelineEntry).filter_by(kind="sync_paused").first()
        assert describe(entry).startswith("sync from servicenow paused: one poll would mirror")
    world.engine.inbound.resume("servicenow")       # the operator says it was meant
    world.cycle()
    assert [incident_of(world, sys_ids[n]).description for n in (0, 29, 30)] == ["", "", "runbook"]
    assert cursor_of(world, "servicenow")[2] is None


def test_thirty_of_forty_records_set_to_one_priority_pause_the_connector(sn_world):
    world = sn_world
    sys_ids = _linked_sn_records(world, 40)
    for sys_id in sys_ids[:30]:
        world.sn.human_update(sys_id, {"impact": "3", "urgency": "3"})
    world.cycle()
    reason = cursor_of(world, "servicenow")[2]
    assert "priority" in reason and "30 of 40" in reason
    assert {world.incident(n).priority for n in range(1, 41)} == {"P3"}


def test_records_vanishing_at_once_pause_the_connector_and_say_so_on_their_timelines(sn_world):
    world = sn_world
    sys_ids = _linked_sn_records(world, 20)
    gone = sorted(incident_of(world, sys_id).id for sys_id in sys_ids[:10])
    for sys_id in sys_ids[:10]:                      # someone deletes half of them
        deleted = requests.delete(f"{world.sn.base_url}/api/now/table/incident/{sys_id}",
                                  auth=("admin", "admin"), timeout=5)
        assert deleted.status_code == 204
    counts = world.engine.inbound.reconcile("servicenow")
    assert counts["vanished"] == 10
    reason = cursor_of(world, "servicenow")[2]
    assert "10 of 20" in reason and "vanished" in reason
    assert [n for n in range(1, 21) if timeline_of(world, n, kind="sync_paused")] == gone


# -- defect 10 part: hint batches read the store in chunks -----------------------------------------

def test_a_huge_hint_batch_reads_links_in_bounded_queries(world):
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM link" in statement:
            statements.append(len(parameters) if hasattr(parameters, "__len__") else 0)

    hinted = [f"{n:032x}" for n in range(1200)]
    event.listen(world.store.engine, "before_cursor_execute", record)
    try:
        unknown = world.engine.inbound.apply_hints("servicenow", hinted)
    finally:
        event.remove(world.store.engine, "before_cursor_execute", record)
    assert unknown == hinted
    assert statements and max(statements) <= 501
