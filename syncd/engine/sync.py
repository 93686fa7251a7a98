"""Inbound sync: a remote record (from a poll or a webhook hint) becomes store changes.

Every record is re-read (events are hints, invariant 7), mapped to canonical fields and diffed
against its link's shadow, the remote's values as syncd last saw or wrote them (invariant 1: our own
writes never come back as changes). What changed is applied to the incident, conflicts are settled by
the field's policy, and the outbox rows for the other systems commit in the same transaction
(invariant 2). Seeing a version already applied is a no-op (invariant 4).

A field without a baseline in the shadow (the mapping gained it since the link's last read) is a
conflict settled by the field's policy like any other, never taken as "only the remote changed it";
and when the policy would let an empty remote value replace a non-empty one there, the store's
value is kept and written back instead (an empty field in a system that never carried it is not an
edit). ``newest_wins`` compares, per field, when the store last changed it with the remote record's
update time converted to syncd's clock (``Connector.to_local_time``).

Errors are sorted by what they say. A database error (locked, failover, a lost connection) or a
transient remote one says nothing about the record: the poll stops, logs and counts it, and leaves
the cursor where it was, so the next poll reads the batch again. What is wrong with one record (an
unmappable value, an invalid field such as an empty title, a permanent remote error for that record,
a value the store cannot hold, a constraint it still breaks after the apply's retries) makes that
record a dead letter, and the rest of the batch goes on.

The mass-change guard is vdirsyncer's safety against mirrored damage, not against busy people: it
pauses a connector when one poll would apply the *same destructive change* to many linked records,
that is the same field emptied, or the same field set to one identical value, or (in reconcile)
records vanishing. "Many" scales with the connector: at least ``pause_min_records`` (10) records and
``pause_share`` (20%) of its links, and the guard stays off below ``pause_min_links`` (20) links,
where a share means little. A catch-up poll after an outage holds many records but varied edits,
and passes. Webhook hints are checked the same way, each batch read for them before it is applied;
because hints often come one record at a time, the guard counts every batch (polls' and hints')
together with the destructive changes it let through in the last ``guard_window`` (5 minutes) on
that connector, so twelve wipes hinted one by one pause at the tenth. The window lives in the
process: with replicas, hints spread over several of them are counted by each apart (the poll's
own batch still is counted whole). The reason (field, value, how many of how many) goes on the
cursor (``/readyz``, the ``syncd_connector_paused`` gauge) and on the timeline of every affected
incident; ``syncd resume`` accepts the change, and the window is forgotten: the next poll applies
it, and hints until then are not checked.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, Sequence

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock, utc
from syncd.connectors.base import (
    AuthError,
    RemoteComment,
    RemoteError,
    RemoteRecord,
    SyncCursor,
    same_text,
)
from syncd.engine import service as sync_service
from syncd.engine.connector_runtime import (
    ConnectorRuntime,
    incident_id_from_correlation,
)
from syncd.engine.models import Link
from syncd.engine.propagation import (
    propagate_comment,
    propagate_fields,
    propagate_new_incident,
)
from syncd.incidents import service as incident_service
from syncd.incidents.fields import incident_fields
from syncd.incidents.models import Incident
from syncd.mapping import Mapping as SyncMapping
from syncd.mapping import UnmappableValue
from syncd.metrics import CONFLICTS, SYNC_CHANGES
from syncd.store.db import transaction

log = logging.getLogger(__name__)

APPLY_ATTEMPTS = 3
# Remote ids per store query (an IN list) and per remote read of a hint or retry batch.
CHUNK = 500

# The store is unavailable or busy (locked, failing over, a pool timeout, a race lost thrice).
STORE_ERRORS = (DBAPIError, PoolTimeout, incident_service.VersionConflict)
# What an apply may raise that says nothing about the record: the batch is read again later.
RETRY_LATER = (RemoteError, *STORE_ERRORS)


def retry_batch_later(error: BaseException) -> bool:
    """True for errors of the store or the remote as a whole (retry the batch, cursor unmoved);
    False for what is wrong with one record (dead-letter it, the batch goes on)."""
    if isinstance(error, RemoteError):
        return error.transient or isinstance(error, AuthError)
    if isinstance(error, DataError):       # a value this store cannot hold: the record's problem
        return False
    if isinstance(error, IntegrityError):  # a constraint the record still breaks after the
        return False                       # apply's retries (a lost race re-reads and passes)
    return isinstance(error, RETRY_LATER)


def _is_empty(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or value == []


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _chunks(items: Sequence[str]) -> list[list[str]]:
    return [list(items[start:start + CHUNK]) for start in range(0, len(items), CHUNK)]


@dataclass
class ApplyResult:
    outcome: str    # applied, unchanged, created, adopted, ignored, unknown, stale, dead_letter
    incident_id: int | None = None
    changed: dict[str, Any] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    reason: str | None = None     # why a dead letter


class InboundSync:
    """Reads remote records and applies them to the store, one transaction per record."""

    def __init__(self, *, sessions: sessionmaker[Session], runtimes: Mapping[str, ConnectorRuntime],
                 clock: Clock, pause_share: float | None = 0.2, pause_min_links: int = 20,
                 pause_min_records: int = 10, guard_window: timedelta = timedelta(minutes=5),
                 on_stale: Callable[[str, str], None] | None = None):
        self.sessions = sessions
        self.runtimes = runtimes
        self.clock = clock
        # Called with (connector, remote id) when a record read turned out older than what the
        # link already knows: the engine re-reads it (a webhook-style hint).
        self.on_stale = on_stale
        # The mass-change guard (module docstring): pause when one change hits at least
        # max(pause_min_records, pause_share of the links) records; off below pause_min_links.
        self.pause_share = pause_share          # None: never pause
        self.pause_min_links = pause_min_links
        self.pause_min_records = pause_min_records
        # What the guard counted recently, per connector: {(field, value): {incident: when}}.
        # Hints come one at a time, so one batch alone would never reach the threshold.
        self.guard_window = guard_window
        self._recent: dict[str, dict[tuple[str, str | None], dict[int, datetime]]] = {}
        self._recent_lock = threading.Lock()      # the poller and the hint worker share it

    # -- entry points -----------------------------------------------------------------------
    def poll(self, connector_name: str, *, still_owner: Callable[[], bool] = lambda: True) -> int:
        """Read every change since the connector's cursor and apply it; returns records applied.
        The cursor only moves once the whole batch is in the store (and only while this process
        still owns the connector's polling), so a crash or a database error re-reads, never skips.
        A remote error of the read itself is raised; one of a record's apply stops the batch."""
        try:
            return self._poll_once(connector_name, still_owner)
        except STORE_ERRORS as error:
            self._batch_stopped(connector_name, error)
            return 0

    def _batch_stopped(self, connector_name: str, error: Exception,
                       record: RemoteRecord | None = None) -> None:
        SYNC_CHANGES.labels(connector_name, "in", "batch_retry").inc()
        log.warning("inbound batch stopped; the next poll reads it again", extra={
            "connector": connector_name, "remote_key": record.key if record else None,
            "error": f"{type(error).__name__}: {error}"})

    def _poll_once(self, connector_name: str, still_owner: Callable[[], bool]) -> int:
        runtime = self.runtimes[connector_name]
        with transaction(self.sessions, readonly=True) as session:
            row = sync_service.get_cursor(session=session, connector=connector_name)
            if row is not None and row.paused_reason:
                log.warning("inbound sync paused", extra={"connector": connector_name,
                                                          "reason": row.paused_reason})
                return 0
            cursor = SyncCursor(row.watermark, frozenset(row.seen)) if row else SyncCursor()
            accepted = bool(row and row.accept_mass_change)
        read_at = self.clock.now()
        records, next_cursor = runtime.connector.fetch_changes(cursor)
        if accepted:
            self._forget_recent(connector_name)     # the operator accepted what it counted
        elif self._mass_change(connector_name, records, told_by="one poll"):
            return 0
        for applied, record in enumerate(records):
            try:
                self.apply_isolated(connector_name, record, read_at=read_at)
            except RETRY_LATER as error:
                self._batch_stopped(connector_name, error, record)
                return applied
        if not still_owner():
            log.warning("lost the poller lock during a poll; the cursor stays for the new owner",
                        extra={"connector": connector_name})
            return len(records)
        with transaction(self.sessions) as session:
            sync_service.save_cursor(session=session, connector=connector_name,
                                watermark=next_cursor.watermark, seen=next_cursor.seen,
                                now=self.clock.now())
        return len(records)

    def apply_isolated(self, connector_name: str, record: RemoteRecord, *, read_at: datetime,
                       repair: bool = False) -> ApplyResult:
        """Apply one record of a batch so that it cannot stop the others: what is wrong with this
        record makes it a dead letter with its reason; an error of the store or of the remote as a
        whole (see :func:`retry_batch_later`) is raised, for the caller to retry the batch."""
        try:
            return self.apply(connector_name, record, read_at=read_at, repair=repair)
        except Exception as error:
            if retry_batch_later(error):
                raise
            log.exception("remote record could not be applied", extra={
                "connector": connector_name, "remote_key": record.key})
            return self._dead_letter(connector_name, record, f"{type(error).__name__}: {error}")

    def reconcile(self, connector_name: str, *, batch: int = 200) -> dict[str, int]:
        """Re-read every linked record of a connector and repair drift both ways. A record that
        vanished is reported on its incident's timeline, never mirrored as a deletion."""
        runtime = self.runtimes[connector_name]
        counts = {"checked": 0, "repaired": 0, "vanished": 0}
        vanished: list[int] = []
        after = 0
        while True:
            with transaction(self.sessions, readonly=True) as session:
                links = sync_service.links_page(session=session, connector=connector_name, after_id=after,
                                           limit=batch)
                pairs = [(link.id, link.incident_id, link.remote_id, link.remote_key)
                         for link in links]
            if not pairs:
                linked = counts["checked"]
                threshold = self._pause_threshold(linked)
                if threshold is not None and len(vanished) >= threshold:
                    self.pause(connector_name, f"reconcile found {len(vanished)} of {linked} "
                                               f"linked records vanished at once (the guard "
                                               f"pauses at {threshold})", incident_ids=vanished)
                return counts
            after = pairs[-1][0]
            read_at = self.clock.now()
            found = {record.remote_id: record for record in
                     runtime.connector.fetch_many([remote_id for _, _, remote_id, _ in pairs])}
            for _, incident_id, remote_id, remote_key in pairs:
                counts["checked"] += 1
                record = found.get(remote_id)
                if record is None:
                    counts["vanished"] += 1
                    vanished.append(incident_id)
                    with transaction(self.sessions) as session:
                        incident_service.append_timeline(
                            session=session, incident_id=incident_id, at=self.clock.now(),
                            kind="remote_vanished", actor=None, source=connector_name,
                            data={"connector": connector_name, "remote_key": remote_key})
                    continue
                if self.apply_isolated(connector_name, record, read_at=read_at,
                                       repair=True).outcome not in ("unchanged", "dead_letter"):
                    counts["repaired"] += 1

    def _pause_threshold(self, linked: int) -> int | None:
        """How many records one destructive change must hit to pause; None: the guard is off."""
        if self.pause_share is None or linked < self.pause_min_links:
            return None
        return max(self.pause_min_records, math.ceil(self.pause_share * linked))

    def _mass_change(self, connector_name: str, records: list[RemoteRecord], *,
                     told_by: str) -> bool:
        """Pause the connector when a batch (a poll's, or a read of webhook hints), together
        with what the guard counted in the last ``guard_window``, would apply the same
        destructive change to many linked records (module docstring), instead of mirroring an
        accident everywhere. A batch that passes is added to the window."""
        if not records:          # a quiet poll: nothing to count, no store work
            return False
        now = self.clock.now()
        with transaction(self.sessions, readonly=True) as session:
            linked = sync_service.count_links(session=session, connector=connector_name)
            threshold = self._pause_threshold(linked)
            if threshold is None:
                return False
            changes = self._destructive_changes(session, connector_name, records)
        with self._recent_lock:
            recent = self._recent.setdefault(connector_name, {})
            for key in list(recent):
                kept = {incident: at for incident, at in recent[key].items()
                        if now - at < self.guard_window}
                if kept:
                    recent[key] = kept
                else:
                    del recent[key]
            counted = {key: set(recent.get(key, {})) | changes.get(key, set())
                       for key in {*recent, *changes}}
            if not counted:
                return False
            # The largest change; ties by field name, so the reason is the same on every run.
            (name, value), incident_ids = min(counted.items(),
                                              key=lambda item: (-len(item[1]), str(item[0])))
            if len(incident_ids) < threshold:
                for key, ids in changes.items():
                    recent.setdefault(key, {}).update(dict.fromkeys(ids, now))
                return False
        what = f"{name} emptied" if value is None else f"{name} set to {value}"
        if len(changes.get((name, value), ())) < threshold:
            told_by = f"{told_by} with the changes of the last {_duration(self.guard_window)}"
        self.pause(connector_name, f"{told_by} would mirror {what} on {len(incident_ids)} of "
                                   f"{linked} linked records (the guard pauses at {threshold})",
                   incident_ids=sorted(incident_ids))
        return True

    def _forget_recent(self, connector_name: str) -> None:
        with self._recent_lock:
            self._recent.pop(connector_name, None)

    def _destructive_changes(self, session: Session, connector_name: str,
                             records: list[RemoteRecord]) -> dict[tuple[str, str | None], set[int]]:
        """{(field, new value as JSON, None when emptied): incidents} over the linked records of a
        batch. A change is measured against the shadow (our own echoes are no change) or, for a
        field without a baseline there, against the store's value."""
        mapping = self.runtimes[connector_name].mapping()
        links = self._links_by_remote_id(session, connector_name,
                                         [record.remote_id for record in records])
        changes: dict[tuple[str, str | None], set[int]] = defaultdict(set)
        for record in records:
            link = links.get(record.remote_id)
            if link is None:
                continue
            try:
                values = mapping.to_canonical(record.fields)
            except UnmappableValue:
                continue                         # a dead letter, not a mirrored change
            shadow = link.shadow or {}
            store_values: dict[str, Any] | None = None
            for name, value in values.items():
                if name in shadow:
                    before = shadow[name]
                else:
                    if store_values is None:
                        store_values = incident_fields(session.get(Incident, link.incident_id))
                    before = store_values.get(name)
                if before == value or (_is_empty(before) and _is_empty(value)):
                    continue
                key = None if _is_empty(value) else json.dumps(value, sort_keys=True, default=str)
                changes[(name, key)].add(link.incident_id)
        return changes

    def pause(self, connector_name: str, why: str, *, incident_ids: Sequence[int] = ()) -> None:
        """Pause a connector's inbound sync, saying why on its cursor (``/readyz``) and on the
        timeline of each incident the paused change would have touched."""
        reason = (f"{why}; inbound sync paused until an operator resumes it "
                  f"(`syncd resume {connector_name}`)")
        now = self.clock.now()
        with transaction(self.sessions) as session:
            sync_service.set_paused(session=session, connector=connector_name, reason=reason,
                                    now=now)
            for incident_id in incident_ids:
                incident_service.append_timeline(
                    session=session, incident_id=incident_id, at=now, kind="sync_paused",
                    actor=None, source=connector_name,
                    data={"connector": connector_name, "reason": reason})
        log.error("connector paused", extra={"connector": connector_name, "reason": reason,
                                             "incidents": len(incident_ids)})

    def resume(self, connector_name: str) -> None:
        with transaction(self.sessions) as session:
            sync_service.set_paused(session=session, connector=connector_name, reason=None,
                               now=self.clock.now())
        self._forget_recent(connector_name)
        log.info("connector resumed", extra={"connector": connector_name})

    @staticmethod
    def _links_by_remote_id(session: Session, connector_name: str,
                            remote_ids: Sequence[str]) -> dict[str, Link]:
        """Links of many records, CHUNK ids per query: a drained hint queue or a poll's batch
        may be long, and one unbounded IN list is slow and can exceed a driver's limits."""
        links: dict[str, Link] = {}
        for chunk in _chunks(list(dict.fromkeys(remote_ids))):
            links.update(sync_service.links_by_remote_id(session=session, connector=connector_name,
                                                         remote_ids=chunk))
        return links

    def apply_hints(self, connector_name: str, remote_ids: Sequence[str]) -> list[str]:
        """Webhooks said these records changed: re-read them (in one batch where the connector
        can), check each read with the mass-change guard like a poll's batch, and apply what they
        really hold now. Returns the ids syncd does not mirror yet: only the poll, which applies
        the connector's filter or JQL, may create incidents from them. A paused connector takes
        no hints; the poll after the operator's resume catches up, as it does after a store
        error drops a batch of hints."""
        connector = self.runtimes[connector_name].connector
        try:
            with transaction(self.sessions, readonly=True) as session:
                row = sync_service.get_cursor(session=session, connector=connector_name)
                if row is not None and row.paused_reason:
                    return []
                accepted = bool(row and row.accept_mass_change)
                known = set(self._links_by_remote_id(session, connector_name, remote_ids))
            if accepted:
                self._forget_recent(connector_name)
            for chunk in _chunks([r for r in dict.fromkeys(remote_ids) if r in known]):
                read_at = self.clock.now()
                records = connector.fetch_many(chunk)
                if not accepted and self._mass_change(connector_name, records,
                                                      told_by="webhook hints"):
                    return []
                for record in records:
                    self.apply_isolated(connector_name, record, read_at=read_at)
        except STORE_ERRORS as error:
            log.warning("webhook hints could not be applied; the next poll reads the records",
                        extra={"connector": connector_name, "hints": len(remote_ids),
                               "error": f"{type(error).__name__}: {error}"})
            return []
        return [r for r in remote_ids if r not in known]

    def read_and_apply(self, connector_name: str, remote_ids: Sequence[str]
                       ) -> dict[str, ApplyResult]:
        """Re-read records by id, CHUNK at a time, and apply each; a record that no longer exists
        is "ignored". Errors of the store or of the remote as a whole are raised."""
        results: dict[str, ApplyResult] = {}
        connector = self.runtimes[connector_name].connector
        for chunk in _chunks(list(dict.fromkeys(remote_ids))):
            read_at = self.clock.now()
            for record in connector.fetch_many(chunk):
                results[record.remote_id] = self.apply_isolated(connector_name, record,
                                                                read_at=read_at)
        return {remote_id: results.get(remote_id, ApplyResult("ignored")) for remote_id in remote_ids}

    def paused_reason(self, connector_name: str) -> str | None:
        with transaction(self.sessions, readonly=True) as session:
            row = sync_service.get_cursor(session=session, connector=connector_name)
            return row.paused_reason if row else None

    def retry_dead_inbound(self, connector_name: str) -> int:
        """Re-read records whose inbound dead letter an operator asked to retry."""
        with transaction(self.sessions, readonly=True) as session:
            retrying = [(row.id, row.remote_id)
                        for row in sync_service.retrying_inbound(session=session,
                                                                 connector=connector_name)]
        try:
            results = self.read_and_apply(connector_name,
                                          [remote_id for _, remote_id in retrying])
        except RETRY_LATER as error:
            log.warning("dead letters could not be retried now; they stay queued for the next "
                        "poll", extra={"connector": connector_name,
                                       "error": f"{type(error).__name__}: {error}"})
            return 0
        for row_id, remote_id in retrying:
            result = results[remote_id]
            with transaction(self.sessions) as session:
                sync_service.settle_inbound(session=session, row_id=row_id,
                                            applied=result.outcome != "dead_letter",
                                            reason=result.reason, now=self.clock.now())
        return len(retrying)

    # -- one record -------------------------------------------------------------------------
    def apply(self, connector_name: str, record: RemoteRecord, *, read_at: datetime,
              repair: bool = False) -> ApplyResult:
        """Apply one remote record. With ``repair`` (reconcile), the version short-cut is skipped
        and any field where the store and the remote still disagree is queued to go out again.

        Another worker or replica may apply the same record at the same moment (a webhook hint on
        one, the poll on another): the loser's transaction fails on the incident's version or the
        link's unique key, and re-reading then finds the work done. ``read_at`` is when the record
        was read: if the link changed after that (our own write, or a newer read applied first),
        the record may be older than what the link knows, so it is not applied but re-read."""
        for attempt in range(1, APPLY_ATTEMPTS + 1):
            try:
                return self._apply_once(connector_name, record, read_at=read_at, repair=repair)
            except (incident_service.VersionConflict, IntegrityError):
                if attempt == APPLY_ATTEMPTS:
                    raise
                log.info("concurrent apply; re-reading", extra={"connector": connector_name,
                                                                "remote_key": record.key})
        raise AssertionError("unreachable")

    def _apply_once(self, connector_name: str, record: RemoteRecord, *, read_at: datetime,
                    repair: bool) -> ApplyResult:
        runtime = self.runtimes[connector_name]
        mapping = runtime.mapping()
        try:
            remote_values = mapping.to_canonical(record.fields)
        except UnmappableValue as error:
            return self._dead_letter(connector_name, record, str(error))

        with transaction(self.sessions, readonly=True) as session:
            link = sync_service.find_link(session=session, connector=connector_name,
                                     remote_id=record.remote_id)
            if link is not None and link.remote_version == record.version and not repair:
                SYNC_CHANGES.labels(connector_name, "in", "unchanged").inc()
                return ApplyResult("unchanged", link.incident_id)
        comments = self._comments(runtime, record)

        with transaction(self.sessions) as session:
            link = sync_service.find_link(session=session, connector=connector_name,
                                     remote_id=record.remote_id, for_update=True)
            if link is not None and link.synced_at > read_at:
                result = ApplyResult("stale", link.incident_id)
            elif link is None:
                result = self._unlinked(session, runtime, record, remote_values, comments)
            else:
                result = self._linked(session, runtime, link, record, remote_values, comments)
                if repair:
                    self._queue_drift(session, runtime, link.incident_id, remote_values)
            if result.outcome != "stale":
                # The record maps now: an older version's dead letter has nothing left to say.
                sync_service.close_inbound_dead_letters(session=session, connector=connector_name,
                                                   remote_id=record.remote_id, now=self.clock.now())
        if result.outcome == "stale" and self.on_stale is not None:
            self.on_stale(connector_name, record.remote_id)
        SYNC_CHANGES.labels(connector_name, "in", result.outcome).inc()
        for name in result.conflicts:
            CONFLICTS.labels(connector_name, name).inc()
        if result.outcome in ("applied", "created"):
            log.info("remote change applied", extra={
                "connector": connector_name, "remote_key": record.key,
                "incident": result.incident_id, "outcome": result.outcome,
                "fields": ",".join(sorted(result.changed))})
        return result

    def _comments(self, runtime: ConnectorRuntime, record: RemoteRecord) -> list[RemoteComment]:
        """The record's comments: those its read already carried, else one list_comments call."""
        if record.comments is not None:
            return list(record.comments)
        return runtime.connector.list_comments(record.remote_id)

    def _unlinked(self, session: Session, runtime: ConnectorRuntime, record: RemoteRecord,
                  remote_values: dict[str, Any], comments: list[RemoteComment]) -> ApplyResult:
        now = self.clock.now()
        own_incident = incident_id_from_correlation(record.correlation_id)
        if (own_incident is not None and session.get(Incident, own_incident) is not None
                and sync_service.link_for(session=session, incident_id=own_incident,
                                     connector=runtime.name) is None):
            # A record syncd created whose link is not committed yet (its create is in flight) or
            # was lost to a crash: adopt it, the store stays truth.
            link = sync_service.create_link(session=session, incident_id=own_incident,
                                       connector=runtime.name, remote_id=record.remote_id,
                                       remote_key=record.key, remote_url=record.url,
                                       remote_version=record.version, shadow=remote_values, now=now)
            incident_service.append_timeline(session=session, incident_id=own_incident, at=now,
                                             kind="linked", actor=None, source=runtime.name,
                                             data={"connector": runtime.name,
                                                   "remote_key": record.key, "url": record.url})
            self._import_comments(session, runtime, link.incident_id, comments)
            return ApplyResult("adopted", own_incident)
        if not runtime.create_incidents:
            return ApplyResult("ignored")
        fields = {k: v for k, v in remote_values.items() if v is not None or k == "priority"}
        if not (fields.get("title") or "").strip():
            fields["title"] = record.key          # an incident needs a title; the key is one
        incident = incident_service.create_incident(session=session, fields=fields, now=now,
                                                    actor=record.updated_by, source=runtime.name)
        sync_service.create_link(session=session, incident_id=incident.id, connector=runtime.name,
                            remote_id=record.remote_id, remote_key=record.key,
                            remote_url=record.url, remote_version=record.version,
                            shadow=remote_values, now=now)
        incident_service.append_timeline(session=session, incident_id=incident.id, at=now, kind="linked",
                                actor=None, source=runtime.name,
                                data={"connector": runtime.name, "remote_key": record.key,
                                      "url": record.url})
        propagate_new_incident(session=session, incident_id=incident.id, runtimes=self.runtimes,
                               now=now, skip=runtime.name)
        self._import_comments(session, runtime, incident.id, comments)
        return ApplyResult("created", incident.id, changed=fields)

    def _linked(self, session: Session, runtime: ConnectorRuntime, link: Link, record: RemoteRecord,
                remote_values: dict[str, Any], comments: list[RemoteComment]) -> ApplyResult:
        now = self.clock.now()
        incident = incident_service.get_incident(session=session, incident_id=link.incident_id)
        store_values = incident_fields(incident)
        shadow = link.shadow or {}
        mapping = runtime.mapping()
        to_store: dict[str, Any] = {}
        push_back: dict[str, Any] = {}
        conflicts: list[str] = []
        for name, remote_value in remote_values.items():
            baseline = name in shadow
            if baseline and shadow[name] == remote_value:
                continue                                   # the remote did not change it
            store_value = store_values.get(name)
            if store_value == remote_value or (_is_empty(store_value) and _is_empty(remote_value)):
                continue                                   # both sides already agree
            if baseline and store_value == shadow[name]:
                to_store[name] = remote_value              # only the remote changed it
                continue
            # Both changed it since the last sync, or nothing says what the remote held before
            # (the mapping gained the field): a conflict, settled by the field's policy.
            conflicts.append(name)
            policy = mapping.policy_for(name)
            data = {"field": name, "store": store_value, "remote": remote_value,
                    "policy": policy, "connector": runtime.name}
            if not baseline and _is_empty(store_value) != _is_empty(remote_value):
                # An empty field in a system that never carried it is not an edit, whichever
                # side it is on and whatever the policy: the value is kept, never wiped.
                winner, empty = (("store", "remote") if _is_empty(remote_value)
                                 else ("remote", "store"))
                data["reason"] = (f"no baseline and the {empty} value is empty: the {winner}'s "
                                  f"value is kept on both sides")
            else:
                winner = self._settle(policy, name, runtime, record, incident)
                if not baseline:
                    data["reason"] = "no baseline: the mapping did not read this field before"
            data["winner"] = winner
            incident_service.append_timeline(session=session, incident_id=incident.id, at=now,
                                             kind="conflict", actor=None, source=runtime.name,
                                             data=data)
            if winner == "remote":
                to_store[name] = remote_value
            else:
                push_back[name] = store_value
        changed = {}
        if to_store:
            # The fields changed when the remote edit was made, not when this poll saw it: an
            # older edit polled late must not look newer than one made here since (newest_wins).
            edited_at = min(now, utc(runtime.connector.to_local_time(record.updated_at)))
            diff = incident_service.update_incident(session=session, incident_id=incident.id,
                                                    changes=to_store, now=now,
                                                    actor=record.updated_by, source=runtime.name,
                                                    changed_at=edited_at)
            changed = {name: new for name, (_, new) in diff.items()}
            propagate_fields(session=session, incident_id=incident.id, fields=changed,
                             runtimes=self.runtimes, now=now, skip=runtime.name)
        if push_back:
            sync_service.enqueue(session=session, incident_id=incident.id, connector=runtime.name,
                            operation="update", fields=push_back, now=now)
        # Fields the mapping no longer maps leave the shadow: if one comes back, it has no
        # baseline (a conflict settled by policy), so a store change made meanwhile is not lost.
        mapped = mapping.canonical_fields_in | mapping.canonical_fields_out
        sync_service.record_remote_state(session=session, link=link,
                                         shadow={name: value for name, value in
                                                 {**shadow, **remote_values}.items()
                                                 if name in mapped},
                                         remote_version=record.version, now=now)
        imported = self._import_comments(session, runtime, incident.id, comments)
        outcome = "applied" if changed or imported or conflicts else "unchanged"
        return ApplyResult(outcome, incident.id, changed=changed, conflicts=conflicts)

    def _queue_drift(self, session: Session, runtime: ConnectorRuntime, incident_id: int,
                     remote_values: dict[str, Any]) -> None:
        """After a repair read: what the remote still holds differently from the store goes out."""
        mapping = runtime.mapping()
        incident = incident_service.get_incident(session=session, incident_id=incident_id)
        store_values = incident_fields(incident)
        drift = {name: store_values.get(name) for name in mapping.canonical_fields_out
                 if name in remote_values and remote_values[name] != store_values.get(name)}
        if drift:
            sync_service.enqueue(session=session, incident_id=incident_id, connector=runtime.name,
                            operation="update", fields=drift, now=self.clock.now())
            incident_service.append_timeline(session=session, incident_id=incident_id, at=self.clock.now(),
                                    kind="drift_repaired", actor=None, source=runtime.name,
                                    data={"connector": runtime.name, "fields": sorted(drift)})

    @staticmethod
    def _settle(policy: str, name: str, runtime: ConnectorRuntime, record: RemoteRecord,
                incident: Incident) -> str:
        """Which side wins a conflict on field ``name``: "store" or "remote". ``newest_wins``
        compares, on syncd's clock, when the store last changed this field with when the remote
        record last changed (the remote's clock, converted; a tie keeps the store's value)."""
        if policy == "remote_wins":
            return "remote"
        if policy == "newest_wins":
            remote_at = utc(runtime.connector.to_local_time(record.updated_at))
            store_at = utc(incident_service.field_changed_at(incident, name))
            return "remote" if remote_at > store_at else "store"
        return "store"

    def _import_comments(self, session: Session, runtime: ConnectorRuntime, incident_id: int,
                         comments: list[RemoteComment]) -> int:
        """Import remote comments not seen before, once each. A comment syncd itself wrote there
        (its link not yet committed, or lost to a crash) is recognised by its author, syncd's own
        user, its body and its channel, and linked to the store's comment still being delivered
        there (an open outbox row, on the channel its visibility maps to); a person's comment is
        always imported, even when it says what a pending note says ("ack")."""
        if not comments:
            return 0
        known = sync_service.linked_remote_comment_ids(session=session, connector=runtime.name,
                                                  remote_comment_ids=[c.remote_id for c in comments])
        mapping = runtime.mapping()
        awaiting_link = sync_service.comments_awaiting_link(
            session=session, incident_id=incident_id, connector=runtime.name)
        now = self.clock.now()
        imported = 0
        for comment in comments:
            if comment.remote_id in known:
                continue
            ours = next((c for c in awaiting_link if same_text(c.body, comment.body)
                         and self._channel_of(mapping, c.visibility) == comment.channel),
                        None) if comment.own else None
            if ours is not None:
                awaiting_link.remove(ours)
                sync_service.link_comment(session=session, comment_id=ours.id,
                                          connector=runtime.name,
                                          remote_comment_id=comment.remote_id)
                continue
            # Jira reports a restricted comment's audience in its channel (comment:<role>).
            base_channel = comment.channel.split(":", 1)[0]
            visibility = mapping.comment_visibility(base_channel, comment.restricted)
            if visibility is None:
                continue
            stored = incident_service.add_comment(session=session, incident_id=incident_id, body=comment.body,
                                         author=comment.author, visibility=visibility,
                                         origin=runtime.name, now=now)
            sync_service.link_comment(session=session, comment_id=stored.id, connector=runtime.name,
                                 remote_comment_id=comment.remote_id)
            propagate_comment(session=session, incident_id=incident_id, comment_id=stored.id,
                              runtimes=self.runtimes, now=now, skip=runtime.name)
            imported += 1
        return imported

    @staticmethod
    def _channel_of(mapping: SyncMapping, visibility: str) -> str | None:
        """The remote channel a note of this visibility is posted on; None: never exported."""
        target = mapping.comment_channel(visibility)
        return target[0] if target is not None else None

    def _dead_letter(self, connector_name: str, record: RemoteRecord, reason: str) -> ApplyResult:
        with transaction(self.sessions) as session:
            link = sync_service.find_link(session=session, connector=connector_name,
                                          remote_id=record.remote_id)
            recorded = sync_service.record_inbound_dead_letter(
                session=session, connector=connector_name, remote_id=record.remote_id,
                remote_key=record.key, version=record.version,
                incident_id=link.incident_id if link else None,
                reason=f"{record.key}: {reason}", now=self.clock.now())
        if recorded is not None:
            SYNC_CHANGES.labels(connector_name, "in", "dead_letter").inc()
            log.error("remote record is a dead letter", extra={"connector": connector_name,
                                                               "remote_key": record.key,
                                                               "reason": reason})
        return ApplyResult("dead_letter", reason=f"{record.key}: {reason}")
