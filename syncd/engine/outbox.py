"""Outbound delivery: claimed outbox rows become remote writes.

No database transaction is held across a remote call: a row is claimed (with a lease), the remote is
written, and a second transaction completes the row together with the link's new shadow and version.
A crash between the write and that commit leaves the row to be claimed again once its lease runs out;
each operation is safe to repeat: a retried create first looks for its correlation id (invariant 3),
an update re-sends the same values, a retried comment first looks for our own comment saying it.

Every remote request of a delivery runs under a fence (:func:`request_guard`): the claim is renewed
for one lease when the delivery starts, the delivery stops once it has run that long, and before
each request and between retry attempts the claim's fencing token is checked, so a worker whose
row another worker took sends nothing more (invariant 5).

A delivery that is not fresh (see :meth:`OutboxDelivery.fresh`) may be late: a person may have
edited the record since syncd last read it (ADR 0007). It re-reads the record first and, when its version
moved, applies it like an inbound change (conflicts settled by each field's policy, on the
timeline) before writing only what the store still wants (invariant 2).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.connectors.base import RemoteError, RemoteRecord
from syncd.connectors.http import request_guard
from syncd.engine import service as sync_service
from syncd.engine.connector_runtime import (
    ConnectorRuntime,
    correlation_id,
    template_context,
)
from syncd.engine.models import Link, OutboxItem
from syncd.engine.sync import InboundSync
from syncd.incidents import service as incident_service
from syncd.incidents.fields import incident_fields
from syncd.incidents.models import Comment, Incident
from syncd.mapping import UnmappableValue
from syncd.metrics import SYNC_CHANGES
from syncd.store import queue
from syncd.store.db import transaction

log = logging.getLogger(__name__)

# How long after syncd read a record a delivery to it still counts as fresh (see OutboxDelivery.fresh).
FRESH_FOR = timedelta(seconds=10)
FRESH_MARGIN = timedelta(seconds=5)     # slack on top of two poll intervals


class LeaseExhausted(Exception):
    """A delivery ran as long as its lease: it sends nothing more and is retried later (an
    attempt counted), so it cannot write while another worker may hold the row."""


class RemoteCommentTaken(Exception):
    """The remote comment a delivery posted or found was linked to another note meanwhile (an
    inbound import got there first): the note is posted again on the next attempt."""


class OutboxDelivery:
    """Claims due outbox rows and delivers them to their connectors."""

    def __init__(self, *, sessions: sessionmaker[Session], runtimes: Mapping[str, ConnectorRuntime],
                 clock: Clock, backoff: queue.Backoff = queue.Backoff(),
                 lease: timedelta = timedelta(minutes=2), process: str = "",
                 dead_processes: Callable[[], list[str]] = list,
                 may_claim: Callable[[], bool] = lambda: True,
                 after_remote_write: Callable[[OutboxItem], None] | None = None,
                 inbound: InboundSync | None = None):
        self.sessions = sessions
        self.runtimes = runtimes
        self.clock = clock
        self.backoff = backoff
        self.lease = lease
        self.process = process                  # claims name it: they end when it stops beating
        self.dead_processes = dead_processes    # processes whose claims may be taken back now
        self.may_claim = may_claim              # false while this process is taken for dead
        # Fault hook for tests: runs after the remote write and before its commit.
        self.after_remote_write = after_remote_write
        # Applies what a late delivery's re-read found, exactly as a poll would.
        self.inbound = inbound or InboundSync(sessions=sessions, runtimes=runtimes, clock=clock)
        # Webhooks sent while this process was down are lost: until a poll of the connector has
        # completed since then, what syncd knows of its records may be old (see polling_current).
        self.started_at = clock.now()

    def deliver_due(self, worker: str, *, limit: int = 10,
                    stopping: Callable[[], bool] = lambda: False) -> int:
        """Claim up to ``limit`` due rows and deliver each; returns how many were claimed. Once
        ``stopping`` says so, the rows not yet started are handed back for another worker."""
        if not self.may_claim():
            return 0
        with transaction(self.sessions) as session:
            items = sync_service.claim_due(session=session, worker=worker, now=self.clock.now(),
                                      lease=self.lease, limit=limit, process=self.process,
                                      dead_processes=self.dead_processes())
            session.expunge_all()
        for index, item in enumerate(items):
            if stopping():
                with transaction(self.sessions) as session:
                    for unstarted in items[index:]:
                        queue.release(session=session, model=OutboxItem,
                                      claim=queue.claim_of(unstarted), now=self.clock.now())
                break
            self.deliver(item)
        return len(items)

    def deliver(self, item: OutboxItem) -> None:
        """Deliver one claimed row. Whatever goes wrong is recorded on the row (retried with
        backoff, or a dead letter): a worker never dies on one row and strands the rest."""
        runtime = self.runtimes.get(item.connector)
        try:
            if runtime is None:
                raise UnmappableValue(f"connector {item.connector!r} is not configured any more")
            if item.attempts >= self.backoff.max_attempts:
                raise UnmappableValue(f"gave up after {item.attempts} attempts; the last: "
                                      f"{item.last_error or 'its worker stopped mid-delivery'}")
            operation = {"create": self._create, "update": self._update,
                         "comment": self._comment}[item.operation]
            with request_guard(self._fence(item)):
                operation(runtime, item)
            SYNC_CHANGES.labels(item.connector, "out", item.operation).inc()
        except queue.ClaimLost as lost:
            log.warning("claim lost mid-delivery; another worker has the row",
                        extra={"connector": item.connector, "incident": item.incident_id,
                               "error": str(lost)})
        except (LeaseExhausted, RemoteCommentTaken) as error:
            self._failed(item, str(error), transient=True)
        except RemoteError as error:
            self._failed(item, error.message if error.status is None
                         else f"{error.status}: {error.message}", error.transient, error.retry_after)
        except UnmappableValue as error:
            self._failed(item, str(error), transient=False)
        except Exception as error:
            log.exception("delivery failed unexpectedly", extra={
                "connector": item.connector, "incident": item.incident_id})
            self._failed(item, f"{type(error).__name__}: {error}", transient=True)

    def _fence(self, item: OutboxItem) -> Callable[[], None]:
        """Renew the claim now for one whole lease (ClaimLost if another worker took the row)
        and return the check that runs before every remote request of the delivery and between
        its retries: LeaseExhausted once the delivery has run as long as that lease, else a
        read of the fencing token (ClaimLost if the row was taken back, say from a process
        thought dead). The delivery never outlives the claim it renewed, so the check needs no
        write: on SQLite it does not queue behind the store's one writer."""
        claim = queue.claim_of(item)
        self._renew(claim)
        deadline = self.clock.now() + self.lease

        def check() -> None:
            if self.clock.now() >= deadline:
                raise LeaseExhausted(f"the delivery ran past its {self.lease.total_seconds():g} s "
                                     f"lease and stopped before its next request")
            with transaction(self.sessions, readonly=True) as session:
                queue.held(session=session, model=OutboxItem, claim=claim, lock=False)
        return check

    def _renew(self, claim: queue.Claim) -> None:
        with transaction(self.sessions) as session:
            queue.renew(session=session, model=OutboxItem, claim=claim,
                        until=self.clock.now() + self.lease)

    @staticmethod
    def claimed_before(item: OutboxItem) -> bool:
        """Whether an earlier claim of the row may have written already, its outcome unknown (it
        failed, its lease lapsed, its process died, or an operator retried the dead letter):
        every claim bumps the fencing token, so the first claim holds token 1."""
        return item.claim_token > 1

    @staticmethod
    def fresh(item: OutboxItem, link: Link, now: datetime) -> bool:
        """A delivery is fresh (written without a re-read) on the row's first claim, when the row
        is not older than syncd's last read of the record (a read after the row was queued may
        have brought a remote change the row knows nothing of) and was queued at most FRESH_FOR
        ago (a row that waited in a backlog is late). Retried, reclaimed and operator-retried
        rows are late too. A late delivery re-reads the record and settles what moved by policy
        before writing (issue 9, defect 9; ADR 0007)."""
        return (item.claim_token == 1 and item.created_at >= link.synced_at
                and now - item.created_at <= FRESH_FOR)

    def polling_current(self, runtime: ConnectorRuntime, now: datetime) -> bool:
        """Whether syncd can have seen the connector's recent changes: a poll of it completed
        since this process started (webhooks sent while it was down are lost; the poll catches
        them up) and within two poll intervals (an outage or a stalled poller stops it). If not,
        even a fresh delivery re-reads its record first: after a restart or an outage, a person's
        edit syncd has not seen yet is likely, and is settled by policy instead of overwritten."""
        with transaction(self.sessions, readonly=True) as session:
            cursor = sync_service.get_cursor(session=session, connector=runtime.name)
            polled = cursor.last_poll_at if cursor else None
        return (polled is not None and polled >= self.started_at
                and now - polled <= 2 * runtime.poll_interval + FRESH_MARGIN)

    # -- operations ------------------------------------------------------------------------------
    def _create(self, runtime: ConnectorRuntime, item: OutboxItem) -> None:
        incident, values, link = self._read(item, runtime.name)
        if link is not None:                      # already created (a retried or duplicate row)
            self._push(runtime, item, incident, values, link, list(values))
            return
        mapping = runtime.mapping()
        correlation = correlation_id(incident.id)
        # Only a retry can find a record an earlier attempt created: a first attempt just creates.
        record = (runtime.connector.find_by_correlation(correlation)
                  if self.claimed_before(item) else None)
        version = None
        if record is None:
            remote_fields = mapping.to_remote(values, context=template_context(incident), creating=True)
            record = runtime.connector.create(remote_fields, correlation_id=correlation)
            written = {name: value for name, value in values.items()
                       if name in mapping.canonical_fields_out}
            if runtime.connector.writes_answer_exact_record:
                version = record.version
        else:
            log.info("adopting a record created before a crash",
                     extra={"connector": runtime.name, "incident": incident.id,
                            "remote_key": record.key})
            written = {}
        self._hook(item)
        # The record exists now: it is linked whatever its answer holds, or a retry would create
        # it again. An answer the mapping cannot read is an inbound dead letter, for an operator.
        try:
            answered, unmappable = mapping.to_canonical(record.fields), None
        except UnmappableValue as error:
            answered, unmappable = {}, f"{record.key}: {error}"
        shadow = {**answered, **written}
        with transaction(self.sessions) as session:
            if sync_service.link_for(session=session, incident_id=incident.id,
                                connector=runtime.name) is None:
                sync_service.create_link(session=session, incident_id=incident.id,
                                    connector=runtime.name, remote_id=record.remote_id,
                                    remote_key=record.key, remote_url=record.url,
                                    remote_version=version, shadow=shadow, now=self.clock.now())
                incident_service.append_timeline(session=session, incident_id=incident.id,
                                        at=self.clock.now(), kind="linked", actor=None,
                                        source=runtime.name,
                                        data={"connector": runtime.name, "remote_key": record.key,
                                              "url": record.url})
                if unmappable is not None:
                    sync_service.record_inbound_dead_letter(
                        session=session, connector=runtime.name, remote_id=record.remote_id,
                        remote_key=record.key, version=record.version, incident_id=incident.id,
                        reason=unmappable, now=self.clock.now())
            else:
                written = {}      # a poll adopted the new record first, by its correlation id
            if not written:       # adopted: bring the record up to date with the store
                sync_service.enqueue(session=session, incident_id=incident.id, connector=runtime.name,
                                operation="update", fields=dict(values), now=self.clock.now())
            queue.complete(session=session, model=OutboxItem, claim=queue.claim_of(item), now=self.clock.now())
        if unmappable is not None:
            SYNC_CHANGES.labels(runtime.name, "in", "dead_letter").inc()
            log.error("created record's answer cannot be mapped; linked, and a dead letter says why",
                      extra={"connector": runtime.name, "incident": incident.id,
                             "remote_key": record.key, "reason": unmappable})

    def _update(self, runtime: ConnectorRuntime, item: OutboxItem) -> None:
        incident, values, link = self._read(item, runtime.name)
        if link is None:
            raise UnmappableValue(f"incident {item.incident_id} has no {runtime.name} record to update")
        names = list(item.fields)
        now = self.clock.now()
        late = not (self.fresh(item, link, now) and self.polling_current(runtime, now))
        if late and self._changed(runtime, values, link, names):
            if self._apply_remote_changes(runtime, link):
                incident, values, link = self._read(item, runtime.name)
        self._push(runtime, item, incident, values, link, names)

    def _apply_remote_changes(self, runtime: ConnectorRuntime, link: Link) -> bool:
        """Re-read a late delivery's record; when its version moved since the link's, apply it as
        a poll would (each conflicting field settled by its policy, on the timeline). Returns
        whether it applied, so the caller reads the settled store and shadow again."""
        read_at = self.clock.now()
        record = runtime.connector.fetch(link.remote_id)
        if record is None:
            raise UnmappableValue(f"{runtime.name} record {link.remote_key} no longer exists")
        if record.version is not None and record.version == link.remote_version:
            return False
        self.inbound.apply(runtime.name, record, read_at=read_at)
        return True

    @staticmethod
    def _changed(runtime: ConnectorRuntime, values: dict[str, Any], link: Link,
                 names: list[str]) -> dict[str, Any]:
        """The named fields this mapping writes whose store value differs from the shadow (a
        read-only field's shadow must stay what the remote has)."""
        shadow = link.shadow or {}
        writes = runtime.mapping().canonical_fields_out
        return {name: values.get(name) for name in names
                if name in writes and shadow.get(name) != values.get(name)}

    def _push(self, runtime: ConnectorRuntime, item: OutboxItem, incident: Incident,
              values: dict[str, Any], link: Link, names: list[str]) -> None:
        """Write the named fields where the store differs from what the remote last had."""
        mapping = runtime.mapping()
        changed = self._changed(runtime, values, link, names)
        answer = None
        if changed:
            remote_fields = mapping.to_remote(changed, context=template_context(incident),
                                              creating=False)
            if remote_fields:
                answer = runtime.connector.update(link.remote_id, remote_fields)
                self._hook(item)
        with transaction(self.sessions) as session:
            current = sync_service.find_link(session=session, connector=runtime.name,
                                        remote_id=link.remote_id)
            if changed and current is not None:
                # The remote now holds what we wrote. Its version is trusted only when the answer
                # proves our write was the only change since the version we knew; otherwise the
                # next read confirms it, so a human edit that raced our write is still seen.
                sync_service.record_remote_state(session=session, link=current,
                                            shadow={**(current.shadow or {}), **changed},
                                            remote_version=self._trusted_version(
                                                runtime, current.remote_version, answer),
                                            now=self.clock.now())
                # A field the store changed again while we wrote (a remote edit that won its
                # conflict, say) goes out once more, or this remote would keep our older value.
                now_values = incident_fields(
                    incident_service.get_incident(session=session, incident_id=incident.id))
                moved = {name: now_values.get(name) for name, value in changed.items()
                         if now_values.get(name) != value}
                if moved:
                    sync_service.enqueue(session=session, incident_id=incident.id,
                                    connector=runtime.name, operation="update", fields=moved,
                                    now=self.clock.now())
            queue.complete(session=session, model=OutboxItem, claim=queue.claim_of(item), now=self.clock.now())

    @staticmethod
    def _trusted_version(runtime: ConnectorRuntime, known: str | None,
                         answer: RemoteRecord | None) -> str | None:
        connector = runtime.connector
        if (answer is not None and known is not None and connector.writes_answer_exact_record
                and connector.version_follows(known, answer.version)):
            return answer.version
        return None

    def _comment(self, runtime: ConnectorRuntime, item: OutboxItem) -> None:
        comment_id = item.fields["comment_id"]
        with transaction(self.sessions, readonly=True) as session:
            comment = session.get(Comment, comment_id)
            link = sync_service.link_for(session=session, incident_id=item.incident_id,
                                    connector=runtime.name)
            already = sync_service.remote_comment_id(session=session, comment_id=comment_id,
                                                connector=runtime.name)
        if comment is None or already is not None:
            return self._complete(item)
        if link is None:
            raise UnmappableValue(f"incident {item.incident_id} has no {runtime.name} record to comment on")
        target = runtime.mapping().comment_channel(comment.visibility)
        if target is None:
            return self._complete(item)
        channel, _restricted = target     # a restricted Jira channel names its audience: comment:<role>
        found = None
        if self.claimed_before(item):
            # An earlier attempt may have posted it before its outcome was lost. Only our own
            # comment, posted since that attempt and linked to no other note, can be it: a
            # person's "ack" is theirs, and another note's "ack" is that note's.
            with transaction(self.sessions, readonly=True) as session:
                linked = sync_service.incident_remote_comment_ids(
                    session=session, incident_id=item.incident_id, connector=runtime.name)
            found = runtime.connector.find_own_comment(link.remote_id, comment.body,
                                                       since=item.first_attempt_at, exclude=linked,
                                                       channel=channel)
        remote_id = (found or runtime.connector.add_comment(link.remote_id, comment.body,
                                                            channel=channel)).remote_id
        self._hook(item)
        with transaction(self.sessions) as session:
            # The link row's lock orders this with an inbound apply of the same record, which
            # imports and links comments: the check below then cannot race the insert.
            sync_service.find_link(session=session, connector=runtime.name,
                                   remote_id=link.remote_id, for_update=True)
            if sync_service.remote_comment_id(session=session, comment_id=comment_id,
                                              connector=runtime.name) is None:
                holder = sync_service.comment_linked_to(session=session, connector=runtime.name,
                                                        remote_comment_id=remote_id)
                if holder is not None:
                    raise RemoteCommentTaken(f"{runtime.name} comment {remote_id} was linked to "
                                             f"comment {holder} meanwhile; posting again")
                sync_service.link_comment(session=session, comment_id=comment_id,
                                          connector=runtime.name, remote_comment_id=remote_id)
            queue.complete(session=session, model=OutboxItem, claim=queue.claim_of(item), now=self.clock.now())

    # -- helpers ---------------------------------------------------------------------------------
    def _read(self, item: OutboxItem, connector: str):
        with transaction(self.sessions, readonly=True) as session:
            incident = incident_service.get_incident(session=session, incident_id=item.incident_id)
            link = sync_service.link_for(session=session, incident_id=incident.id, connector=connector)
            values = incident_fields(incident)
            session.expunge_all()
        return incident, values, link

    def _hook(self, item: OutboxItem) -> None:
        if self.after_remote_write is not None:
            self.after_remote_write(item)

    def _complete(self, item: OutboxItem) -> None:
        with transaction(self.sessions) as session:
            queue.complete(session=session, model=OutboxItem, claim=queue.claim_of(item), now=self.clock.now())

    def _failed(self, item: OutboxItem, error: str, transient: bool,
                retry_after: float | None = None) -> None:
        try:
            with transaction(self.sessions) as session:
                state = queue.fail(session=session, model=OutboxItem, claim=queue.claim_of(item),
                                   error=error, transient=transient, now=self.clock.now(),
                                   backoff=self.backoff, retry_after=retry_after)
        except queue.ClaimLost as lost:       # the claim ran out: the row is someone else's
            log.warning("could not record a failed delivery", extra={
                "connector": item.connector, "incident": item.incident_id, "error": str(lost)})
            return
        SYNC_CHANGES.labels(item.connector, "out", "retry" if state == "pending" else "dead").inc()
        (log.warning if state == "pending" else log.error)(
            "delivery failed", extra={"connector": item.connector, "incident": item.incident_id,
                                      "operation": item.operation, "error": error, "state": state})

