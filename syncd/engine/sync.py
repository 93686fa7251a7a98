"""Inbound sync: a remote record (from a poll or a webhook hint) becomes store changes.

Every record is re-read (events are hints, invariant 7), mapped to canonical fields and diffed
against its link's shadow, the remote's values as syncd last saw or wrote them (invariant 1: our own
writes never come back as changes). What changed is applied to the incident, conflicts are settled by
the field's policy, and the outbox rows for the other systems commit in the same transaction
(invariant 2). Seeing a version already applied is a no-op (invariant 4).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.connectors.base import (
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
from syncd.mapping import UnmappableValue
from syncd.metrics import CONFLICTS, SYNC_CHANGES
from syncd.store.db import transaction

log = logging.getLogger(__name__)

APPLY_ATTEMPTS = 3


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
                 clock: Clock, pause_share: float | None = 0.5, pause_min_links: int = 20,
                 on_stale: Callable[[str, str], None] | None = None):
        self.sessions = sessions
        self.runtimes = runtimes
        self.clock = clock
        # Called with (connector, remote id) when a record read turned out older than what the
        # link already knows: the engine re-reads it (a webhook-style hint).
        self.on_stale = on_stale
        self.pause_share = pause_share          # None: never pause
        self.pause_min_links = pause_min_links  # below this many links a share means little

    # -- entry points -----------------------------------------------------------------------
    def poll(self, connector_name: str, *, still_owner: Callable[[], bool] = lambda: True) -> int:
        """Read every change since the connector's cursor and apply it; returns records applied.
        The cursor only moves once the whole batch is in the store (and only while this process
        still owns the connector's polling), so a crash re-reads, never skips."""
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
        if not accepted and self._mass_change(connector_name, records):
            return 0
        for record in records:
            self.apply_isolated(connector_name, record, read_at=read_at)
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
        """Apply one record of a batch so that it cannot stop the others: anything but a remote
        error (which the batch retries later) makes this record a dead letter with its reason."""
        try:
            return self.apply(connector_name, record, read_at=read_at, repair=repair)
        except RemoteError:
            raise
        except Exception as error:
            log.exception("remote record could not be applied", extra={
                "connector": connector_name, "remote_key": record.key})
            return self._dead_letter(connector_name, record, f"{type(error).__name__}: {error}")

    def reconcile(self, connector_name: str, *, batch: int = 200) -> dict[str, int]:
        """Re-read every linked record of a connector and repair drift both ways. A record that
        vanished is reported on its incident's timeline, never mirrored as a deletion."""
        runtime = self.runtimes[connector_name]
        counts = {"checked": 0, "repaired": 0, "vanished": 0}
        after = 0
        while True:
            with transaction(self.sessions, readonly=True) as session:
                links = sync_service.links_page(session=session, connector=connector_name, after_id=after,
                                           limit=batch)
                pairs = [(link.id, link.incident_id, link.remote_id, link.remote_key)
                         for link in links]
            if not pairs:
                linked = counts["checked"]
                if (self.pause_share is not None and linked >= self.pause_min_links
                        and counts["vanished"] > self.pause_share * linked):
                    self.pause(connector_name, f"{counts['vanished']} of {linked} linked records "
                                               f"vanished at once")
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
                    with transaction(self.sessions) as session:
                        incident_service.append_timeline(
                            session=session, incident_id=incident_id, at=self.clock.now(),
                            kind="remote_vanished", actor=None, source=connector_name,
                            data={"connector": connector_name, "remote_key": remote_key})
                    continue
                if self.apply_isolated(connector_name, record, read_at=read_at,
                                       repair=True).outcome not in ("unchanged", "dead_letter"):
                    counts["repaired"] += 1

    def _mass_change(self, connector_name: str, records: list[RemoteRecord]) -> bool:
        """vdirsyncer's safety: when one poll says most linked records changed at once, pause the
        connector instead of mirroring what is more likely an accident or an outage."""
        if self.pause_share is None or not records:
            return False
        with transaction(self.sessions, readonly=True) as session:
            linked = sync_service.count_links(session=session, connector=connector_name)
            if linked < self.pause_min_links:
                return False
            touched = self._really_changed(session, connector_name, records)
            if touched <= self.pause_share * linked:
                return False
        self.pause(connector_name, f"one poll changed {touched} of {linked} linked records "
                                   f"(more than {self.pause_share:.0%})")
        return True

    def pause(self, connector_name: str, why: str) -> None:
        reason = (f"{why}; inbound sync paused until an operator resumes it "
                  f"(`syncd resume {connector_name}`)")
        with transaction(self.sessions) as session:
            sync_service.set_paused(session=session, connector=connector_name, reason=reason,
                               now=self.clock.now())
        log.error("connector paused", extra={"connector": connector_name, "reason": reason})

    def resume(self, connector_name: str) -> None:
        with transaction(self.sessions) as session:
            sync_service.set_paused(session=session, connector=connector_name, reason=None,
                               now=self.clock.now())
        log.info("connector resumed", extra={"connector": connector_name})

    def _really_changed(self, session: Session, connector_name: str,
                        records: list[RemoteRecord]) -> int:
        """How many linked records in a batch differ from their shadow (our own echoes do not)."""
        mapping = self.runtimes[connector_name].mapping()
        links = sync_service.links_by_remote_id(session=session, connector=connector_name,
                                           remote_ids=[record.remote_id for record in records])
        changed = 0
        for record in records:
            link = links.get(record.remote_id)
            if link is None:
                continue
            try:
                values = mapping.to_canonical(record.fields)
            except UnmappableValue:
                changed += 1
                continue
            shadow = link.shadow or {}
            if any(shadow.get(name) != value for name, value in values.items() if name in shadow):
                changed += 1
        return changed

    def apply_hints(self, connector_name: str, remote_ids: Sequence[str]) -> list[str]:
        """Webhooks said these records changed: re-read them (in one batch where the connector
        can) and apply what they really hold now. Returns the ids syncd does not mirror yet: only
        the poll, which applies the connector's filter or JQL, may create incidents from them.
        A paused connector takes no hints; the poll after the operator's resume catches up."""
        if self.paused_reason(connector_name):
            return []
        with transaction(self.sessions, readonly=True) as session:
            known = set(sync_service.links_by_remote_id(session=session, connector=connector_name,
                                                   remote_ids=list(remote_ids)))
        self.read_and_apply(connector_name, [r for r in remote_ids if r in known])
        return [r for r in remote_ids if r not in known]

    def read_and_apply(self, connector_name: str, remote_ids: Sequence[str]
                       ) -> dict[str, ApplyResult]:
        """Re-read records by id and apply each; a record that no longer exists is "ignored"."""
        if not remote_ids:
            return {}
        read_at = self.clock.now()
        records = self.runtimes[connector_name].connector.fetch_many(list(remote_ids))
        results = {record.remote_id: self.apply_isolated(connector_name, record, read_at=read_at)
                   for record in records}
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
        results = self.read_and_apply(connector_name, [remote_id for _, remote_id in retrying])
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
            # A record syncd created whose link was lost to a crash: adopt it, the store stays truth.
            link = sync_service.create_link(session=session, incident_id=own_incident,
                                       connector=runtime.name, remote_id=record.remote_id,
                                       remote_key=record.key, remote_url=record.url,
                                       remote_version=record.version, shadow=remote_values, now=now)
            self._import_comments(session, runtime, link.incident_id, comments)
            return ApplyResult("adopted", own_incident)
        if not runtime.create_incidents:
            return ApplyResult("ignored")
        fields = {k: v for k, v in remote_values.items() if v is not None or k == "priority"}
        if not (fields.get("title") or "").strip():
            fields["title"] = record.key          # an incident needs a title; the key is one
        incident = incident_service.create_incident(session=session, fields=fields, now=now,
                                           actor=None, source=runtime.name)
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
            if name in shadow and shadow[name] == remote_value:
                continue                                   # the remote did not change it
            store_value = store_values.get(name)
            if store_value == remote_value:
                continue                                   # both sides already agree
            if name not in shadow or store_value == shadow[name]:
                to_store[name] = remote_value              # only the remote changed it
                continue
            conflicts.append(name)                         # both changed it since the last sync
            winner = self._settle(mapping.policy_for(name), record, incident)
            incident_service.append_timeline(session=session, incident_id=incident.id, at=now,
                                    kind="conflict", actor=None, source=runtime.name,
                                    data={"field": name, "store": store_value,
                                          "remote": remote_value, "winner": winner,
                                          "connector": runtime.name})
            if winner == "remote":
                to_store[name] = remote_value
            else:
                push_back[name] = store_value
        changed = {}
        if to_store:
            diff = incident_service.update_incident(session=session, incident_id=incident.id,
                                           changes=to_store, now=now, actor=None,
                                           source=runtime.name)
            changed = {name: new for name, (_, new) in diff.items()}
            propagate_fields(session=session, incident_id=incident.id, fields=changed,
                             runtimes=self.runtimes, now=now, skip=runtime.name)
        if push_back:
            sync_service.enqueue(session=session, incident_id=incident.id, connector=runtime.name,
                            operation="update", fields=push_back, now=now)
        sync_service.record_remote_state(session=session, link=link, shadow={**shadow, **remote_values},
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
    def _settle(policy: str, record: RemoteRecord, incident: Incident) -> str:
        """Which side wins a conflict: "store" or "remote"."""
        if policy == "remote_wins":
            return "remote"
        if policy == "newest_wins":
            return "remote" if record.updated_at > incident.updated_at else "store"
        return "store"

    def _import_comments(self, session: Session, runtime: ConnectorRuntime, incident_id: int,
                         comments: list[RemoteComment]) -> int:
        """Import remote comments not seen before, once each. A comment syncd itself wrote there
        (its link not yet committed, or lost to a crash) is recognised by its body and linked."""
        if not comments:
            return 0
        known = sync_service.linked_remote_comment_ids(session=session, connector=runtime.name,
                                                  remote_comment_ids=[c.remote_id for c in comments])
        unlinked_own = sync_service.comments_without_link(session=session, incident_id=incident_id,
                                                     connector=runtime.name)
        mapping = runtime.mapping()
        now = self.clock.now()
        imported = 0
        for comment in comments:
            if comment.remote_id in known:
                continue
            own = next((c for c in unlinked_own if same_text(c.body, comment.body)), None)
            if own is not None:
                unlinked_own.remove(own)
                sync_service.link_comment(session=session, comment_id=own.id, connector=runtime.name,
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
            log.error("remote record cannot be mapped", extra={"connector": connector_name,
                                                               "remote_key": record.key,
                                                               "reason": reason})
        return ApplyResult("dead_letter", reason=f"{record.key}: {reason}")
