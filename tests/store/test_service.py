"""The store's service layer, on SQLite and PostgreSQL: incidents, timeline, links, comments,
outbox and cursors."""

import threading
from datetime import timedelta

import pytest

from syncd.engine import service as sync_service
from syncd.engine.models import OutboxItem
from syncd.incidents import service as incident_service
from syncd.store import db, queue


def new_incident(store, clock, **fields):
    with store.transaction() as session:
        return incident_service.create_incident(session=session, fields={"title": "DB down", **fields},
                                       now=clock.now(), actor="alice", source="api").id


def test_created_incident_has_number_timestamps_and_a_timeline(store, clock):
    incident_id = new_incident(store, clock, priority="P2")
    with store.transaction() as session:
        incident = incident_service.get_incident(session=session, incident_id=incident_id)
        assert incident.number == f"SYN-{incident_id}"
        assert incident.status == "triggered" and incident.priority == "P2"
        assert incident.created_at == clock.now() and incident.created_at.tzinfo is not None
        entries = incident_service.timeline(session=session, incident_id=incident_id)
        assert [e.kind for e in entries] == ["incident_created"]


def test_update_records_only_real_changes_and_bumps_the_version(store, clock):
    incident_id = new_incident(store, clock)
    clock.advance(60)
    with store.transaction() as session:
        diff = incident_service.update_incident(session=session, incident_id=incident_id,
                                       changes={"title": "DB down", "status": "acknowledged",
                                                "custom.region": "eu"},
                                       now=clock.now(), actor="bob", source="jira",
                                       expected_version=1)
    assert diff == {"status": ("triggered", "acknowledged"), "custom.region": (None, "eu")}
    with store.transaction() as session:
        incident = incident_service.get_incident(session=session, incident_id=incident_id)
        assert incident.version == 2 and incident.acknowledged_at == clock.now()
        assert incident.custom == {"region": "eu"}
        kinds = [e.kind for e in incident_service.timeline(session=session, incident_id=incident_id)]
        assert kinds == ["incident_created", "fields_changed"]


def test_a_stale_version_is_refused_and_changes_nothing(store, clock):
    incident_id = new_incident(store, clock)
    with store.transaction() as session:
        incident_service.update_incident(session=session, incident_id=incident_id, changes={"priority": "P1"},
                                now=clock.now(), actor=None, source="api", expected_version=1)
    with pytest.raises(incident_service.VersionConflict, match="version 2, not 1"):
        with store.transaction() as session:
            incident_service.update_incident(session=session, incident_id=incident_id,
                                    changes={"priority": "P3"}, now=clock.now(), actor=None,
                                    source="api", expected_version=1)
    with store.transaction() as session:
        assert incident_service.get_incident(session=session, incident_id=incident_id).priority == "P1"


@pytest.mark.parametrize("changes, message", [
    ({"priority": "P9"}, "priority must be one of"),
    ({"status": "closed"}, "status must be one of"),
    ({"colour": "red"}, "unknown incident field 'colour'"),
    ({"title": "  "}, "title must be a non-empty string"),
])
def test_bad_field_values_are_refused_naming_the_field(store, clock, changes, message):
    incident_id = new_incident(store, clock)
    with pytest.raises(incident_service.InvalidField, match=message):
        with store.transaction() as session:
            incident_service.update_incident(session=session, incident_id=incident_id, changes=changes,
                                    now=clock.now(), actor=None, source="api")


def test_link_is_unique_per_incident_and_connector(store, clock):
    incident_id = new_incident(store, clock)
    with store.transaction() as session:
        sync_service.create_link(session=session, incident_id=incident_id, connector="jira",
                            remote_id="10001", remote_key="OPS-1", remote_url="u",
                            remote_version="v1", shadow={"summary": "x"}, now=clock.now())
    with pytest.raises(Exception):
        with store.transaction() as session:
            sync_service.create_link(session=session, incident_id=incident_id, connector="jira",
                                remote_id="10002", remote_key="OPS-2", remote_url="u",
                                remote_version="v1", shadow={}, now=clock.now())
    with store.transaction() as session:
        link = sync_service.find_link(session=session, connector="jira", remote_id="10001")
        assert link.shadow == {"summary": "x"} and link.incident_id == incident_id


def test_a_remote_comment_is_linked_once(store, clock):
    incident_id = new_incident(store, clock)
    with store.transaction() as session:
        comment = incident_service.add_comment(session=session, incident_id=incident_id, body="on it",
                                      author="bob", visibility="internal", origin="jira",
                                      now=clock.now())
        sync_service.link_comment(session=session, comment_id=comment.id, connector="jira",
                             remote_comment_id="c1")
    with store.transaction() as session:
        assert sync_service.linked_remote_comment_ids(session=session, connector="jira",
                                                 remote_comment_ids=["c1", "c2"]) == {"c1"}
    with pytest.raises(Exception):
        with store.transaction() as session:
            other = incident_service.add_comment(session=session, incident_id=incident_id, body="dup",
                                        author=None, visibility="public", origin="jira",
                                        now=clock.now())
            sync_service.link_comment(session=session, comment_id=other.id, connector="jira",
                                 remote_comment_id="c1")


def test_pending_updates_coalesce_last_value_wins(store, clock):
    incident_id = new_incident(store, clock)
    with store.transaction() as session:
        sync_service.enqueue(session=session, incident_id=incident_id, connector="jira",
                        operation="update", fields={"title": "a", "priority": "P2"}, now=clock.now())
        sync_service.enqueue(session=session, incident_id=incident_id, connector="jira",
                        operation="update", fields={"priority": "P1"}, now=clock.now())
    with store.transaction() as session:
        rows = session.query(OutboxItem).all()
        assert len(rows) == 1 and rows[0].fields == {"title": "a", "priority": "P1"}


def test_updates_do_not_coalesce_across_a_comment(store, clock):
    incident_id = new_incident(store, clock)
    with store.transaction() as session:
        for operation, fields in [("update", {"priority": "P2"}), ("comment", {"comment_id": 1}),
                                  ("update", {"priority": "P1"})]:
            sync_service.enqueue(session=session, incident_id=incident_id, connector="jira",
                            operation=operation, fields=fields, now=clock.now())
    with store.transaction() as session:
        assert session.query(OutboxItem).count() == 3


def test_claims_deliver_one_incident_in_order(store, clock):
    incident_id = new_incident(store, clock)
    with store.transaction() as session:
        first = sync_service.enqueue(session=session, incident_id=incident_id, connector="jira",
                                operation="create", fields={}, now=clock.now()).id
        sync_service.enqueue(session=session, incident_id=incident_id, connector="jira",
                        operation="update", fields={"priority": "P1"}, now=clock.now())
    lease = timedelta(seconds=30)
    with store.transaction() as session:
        claimed = sync_service.claim_due(session=session, worker="w1", now=clock.now(), lease=lease)
        assert [item.id for item in claimed] == [first]
        claim = queue.claim_of(claimed[0])
    with store.transaction() as session:      # the update waits behind the in-flight create
        assert sync_service.claim_due(session=session, worker="w2", now=clock.now(), lease=lease) == []
        queue.complete(session=session, model=OutboxItem, claim=claim, now=clock.now())
    with store.transaction() as session:
        claimed = sync_service.claim_due(session=session, worker="w2", now=clock.now(), lease=lease)
        assert [item.operation for item in claimed] == ["update"]


def test_a_lapsed_lease_is_reclaimed_and_the_old_worker_cannot_complete(store, clock):
    incident_id = new_incident(store, clock)
    with store.transaction() as session:
        item_id = sync_service.enqueue(session=session, incident_id=incident_id, connector="sn",
                                  operation="update", fields={"title": "x"}, now=clock.now()).id
        old = queue.claim_of(sync_service.claim_due(session=session, worker="dead", now=clock.now(),
                                                    lease=timedelta(seconds=30))[0])
    clock.advance(31)
    with store.transaction() as session:
        claimed = sync_service.claim_due(session=session, worker="alive", now=clock.now(),
                                    lease=timedelta(seconds=30))
        assert [item.id for item in claimed] == [item_id]
        assert claimed[0].claim_token == old.token + 1
    with pytest.raises(queue.ClaimLost, match="no longer claimed by dead"):
        with store.transaction() as session:
            queue.complete(session=session, model=OutboxItem, claim=old, now=clock.now())
    with pytest.raises(queue.ClaimLost):
        with store.transaction() as session:
            queue.renew(session=session, model=OutboxItem, claim=old, until=clock.now())


def test_transient_failures_back_off_then_go_dead_and_can_be_retried(store, clock):
    incident_id = new_incident(store, clock)
    backoff = queue.Backoff(initial=1, maximum=8, max_attempts=3)
    with store.transaction() as session:
        item_id = sync_service.enqueue(session=session, incident_id=incident_id, connector="sn",
                                  operation="update", fields={"title": "x"}, now=clock.now()).id
    states = []
    for _ in range(3):
        with store.transaction() as session:
            claimed = sync_service.claim_due(session=session, worker="w", now=clock.now(),
                                        lease=timedelta(seconds=30))
            assert [item.id for item in claimed] == [item_id]
            states.append(queue.fail(session=session, model=OutboxItem,
                                     claim=queue.claim_of(claimed[0]),
                                     error="503 Service unavailable", transient=True,
                                     now=clock.now(), backoff=backoff, retry_after=2))
        with store.transaction() as session:   # not due again before its backoff
            assert sync_service.claim_due(session=session, worker="w", now=clock.now(),
                                     lease=timedelta(seconds=30)) == []
        clock.advance(10)
    assert states == ["pending", "pending", "dead"]
    with store.transaction() as session:
        dead = sync_service.dead_letters(session=session)
        assert [d.id for d in dead] == [item_id] and dead[0].last_error == "503 Service unavailable"
        assert sync_service.outbox_counts(session=session) == {("sn", "dead"): 1}
        queue.retry_dead(session=session, model=OutboxItem, row_id=item_id, now=clock.now())
    with store.transaction() as session:
        assert [i.id for i in sync_service.claim_due(session=session, worker="w", now=clock.now(),
                                                lease=timedelta(seconds=30))] == [item_id]


def test_a_permanent_failure_goes_dead_at_once(store, clock):
    incident_id = new_incident(store, clock)
    with store.transaction() as session:
        sync_service.enqueue(session=session, incident_id=incident_id, connector="jira",
                             operation="update", fields={"status": "Gone"}, now=clock.now())
        claimed = sync_service.claim_due(session=session, worker="w", now=clock.now(),
                                         lease=timedelta(seconds=30))
        state = queue.fail(session=session, model=OutboxItem, claim=queue.claim_of(claimed[0]),
                           error="no transition leads to Gone", transient=False,
                           now=clock.now(), backoff=queue.Backoff())
    assert state == "dead"


def test_cursor_round_trip_and_pause(store, clock):
    with store.transaction() as session:
        assert sync_service.get_cursor(session=session, connector="jira") is None
        sync_service.save_cursor(session=session, connector="jira", watermark=clock.now(),
                            seen={"1@v2", "0@v1"}, now=clock.now())
        sync_service.set_paused(session=session, connector="jira", reason="80% vanished", now=clock.now())
    with store.transaction() as session:
        row = sync_service.get_cursor(session=session, connector="jira")
        assert row.watermark == clock.now() and row.seen == ["0@v1", "1@v2"]
        assert row.paused_reason == "80% vanished"


def test_concurrent_claimers_never_get_the_same_row(store, clock):
    """Real threads claim side by side (SKIP LOCKED on PostgreSQL, BEGIN IMMEDIATE on SQLite)."""
    with store.transaction() as session:
        for n in range(60):
            incident = incident_service.create_incident(session=session, fields={"title": f"i{n}"},
                                               now=clock.now(), actor=None, source="test")
            sync_service.enqueue(session=session, incident_id=incident.id, connector="jira",
                            operation="update", fields={"title": f"i{n}"}, now=clock.now())
    claimed: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def claimer(name):
        start.wait()
        mine = claimed.setdefault(name, [])
        while True:
            with store.transaction() as session:
                items = sync_service.claim_due(session=session, worker=name, now=clock.now(),
                                          lease=timedelta(minutes=5), limit=3)
                if not items:
                    return
                mine.extend(item.id for item in items)

    threads = [threading.Thread(target=claimer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [item_id for ids in claimed.values() for item_id in ids]
    assert len(every) == 60 and len(set(every)) == 60
    if store.kind == "postgresql":
        assert sum(1 for ids in claimed.values() if ids) >= 2, "claims should spread over workers"


def test_delivered_rows_are_pruned_after_a_while_and_open_ones_never(store, clock):
    incident_id = new_incident(store, clock)
    with store.transaction() as session:
        sync_service.enqueue(session=session, incident_id=incident_id, connector="jira",
                               operation="create", fields={}, now=clock.now()).id
        claimed = sync_service.claim_due(session=session, worker="w", now=clock.now(),
                                         lease=timedelta(minutes=1))
        queue.complete(session=session, model=OutboxItem, claim=queue.claim_of(claimed[0]),
                       now=clock.now())
        sync_service.enqueue(session=session, incident_id=incident_id, connector="jira",
                        operation="update", fields={"title": "x"}, now=clock.now())
    with store.transaction() as session:
        assert sync_service.prune_done(session=session, before=clock.now()) == 0
    clock.advance(3600)
    with store.transaction() as session:
        assert sync_service.prune_done(session=session, before=clock.now()) == 1
    with store.transaction() as session:
        assert [item.state for item in session.query(OutboxItem).all()] == ["pending"]


def test_a_reader_does_not_wait_for_a_writer(store, clock):
    """A read-only transaction runs while another transaction holds the write lock."""
    incident_id = new_incident(store, clock)
    with store.transaction() as writer:
        incident_service.update_incident(session=writer, incident_id=incident_id, changes={"priority": "P1"},
                                now=clock.now(), actor=None, source="test")
        result = {}

        def read():
            with db.transaction(store.sessions, readonly=True) as reader:
                result["priority"] = incident_service.get_incident(session=reader,
                                                          incident_id=incident_id).priority

        thread = threading.Thread(target=read)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "the reader waited for the writer"
    assert result == {"priority": None}      # it saw the last committed state
