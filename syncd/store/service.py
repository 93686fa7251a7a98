"""Store reads and writes, as keyword-only functions that take the session explicitly.

Nothing here commits: the caller's transaction decides what lands together (an incident change, its
timeline entries and its outbox rows commit as one, invariant 2).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from syncd.store.models import (INCIDENT_STATUSES, PRIORITIES, URGENCIES, Comment, CommentLink,
                                Incident, Link, OutboxItem, SyncCursorRow, TimelineEntry)

# Canonical incident fields that live in their own columns; anything under "custom." goes to JSON.
COLUMN_FIELDS = ("title", "description", "status", "priority", "urgency", "service", "group",
                 "assignee", "resolution")
_ALLOWED = {"status": INCIDENT_STATUSES, "priority": PRIORITIES, "urgency": URGENCIES}


class StoreError(Exception):
    """A store operation refused because of what was asked, not because of the database."""


class NotFound(StoreError):
    pass


class VersionConflict(StoreError):
    """Someone else changed the incident since the caller read it (optimistic concurrency)."""


class InvalidField(StoreError):
    pass


class InvalidTransition(StoreError):
    """The incident's status does not allow the action (e.g. acknowledging a resolved one)."""


# -- incidents ----------------------------------------------------------------------------------

def validate_fields(fields: Mapping[str, Any]) -> None:
    """Refuse unknown canonical fields and values outside their sets, naming the field."""
    for name, value in fields.items():
        if name.startswith("custom."):
            if not name[len("custom."):]:
                raise InvalidField("custom field needs a name after 'custom.'")
            continue
        if name not in COLUMN_FIELDS:
            raise InvalidField(f"unknown incident field {name!r}; known: {', '.join(COLUMN_FIELDS)}, custom.<name>")
        if name == "title" and not (isinstance(value, str) and value.strip()):
            raise InvalidField("title must be a non-empty string")
        allowed = _ALLOWED.get(name)
        if allowed and value is not None and value not in allowed:
            raise InvalidField(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    if "status" in fields and fields["status"] is None:
        raise InvalidField("status cannot be empty")


def incident_fields(incident: Incident) -> dict[str, Any]:
    """The incident's canonical field values, custom fields flattened as custom.<name>."""
    values = {name: getattr(incident, name) for name in COLUMN_FIELDS}
    values.update({f"custom.{k}": v for k, v in (incident.custom or {}).items()})
    return values


def create_incident(*, session: Session, fields: Mapping[str, Any], now: datetime,
                    actor: str | None, source: str) -> Incident:
    fields = dict(fields)
    fields.setdefault("status", "triggered")
    fields.setdefault("description", "")
    validate_fields(fields)
    if "title" not in fields:
        raise InvalidField("title is required")
    incident = Incident(created_at=now, updated_at=now, version=1, custom={})
    _assign(incident, fields, now)
    session.add(incident)
    session.flush()
    append_timeline(session=session, incident_id=incident.id, at=now, kind="incident_created",
                    actor=actor, source=source, data={"fields": incident_fields(incident)})
    return incident


def get_incident(*, session: Session, incident_id: int, for_update: bool = False) -> Incident:
    query = select(Incident).where(Incident.id == incident_id)
    if for_update:
        query = query.with_for_update()
    incident = session.scalars(query).one_or_none()
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist")
    return incident


def update_incident(*, session: Session, incident_id: int, changes: Mapping[str, Any],
                    now: datetime, actor: str | None, source: str,
                    expected_version: int | None = None) -> dict[str, tuple[Any, Any]]:
    """Apply field changes with a version check; returns {field: (old, new)} of what really changed
    and records it on the timeline. A version mismatch raises VersionConflict and changes nothing."""
    validate_fields(changes)
    incident = get_incident(session=session, incident_id=incident_id)
    if expected_version is not None and incident.version != expected_version:
        raise VersionConflict(f"incident {incident_id} is at version {incident.version}, "
                              f"not {expected_version}: re-read it and try again")
    before = incident_fields(incident)
    diff = {name: (before.get(name), value) for name, value in changes.items()
            if before.get(name) != value}
    if not diff:
        return {}
    new_version = incident.version + 1
    # Compare-and-set on the version, so two writers that read the same version cannot both win.
    values = _column_values(incident, {name: new for name, (_, new) in diff.items()}, now)
    result = session.execute(
        update(Incident).where(Incident.id == incident_id, Incident.version == incident.version)
        .values(version=new_version, updated_at=now, **values)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise VersionConflict(f"incident {incident_id} changed while being updated: try again")
    session.refresh(incident)
    append_timeline(session=session, incident_id=incident_id, at=now, kind="fields_changed",
                    actor=actor, source=source,
                    data={"changes": {k: {"from": old, "to": new} for k, (old, new) in diff.items()}})
    return diff


def _column_values(incident: Incident, changes: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Column values for an UPDATE, with status timestamps and custom fields merged."""
    values: dict[str, Any] = {}
    custom = dict(incident.custom or {})
    for name, value in changes.items():
        if name.startswith("custom."):
            key = name[len("custom."):]
            if value is None:
                custom.pop(key, None)
            else:
                custom[key] = value
            values["custom"] = custom
        else:
            values[name] = value
    status = changes.get("status")
    if status == "acknowledged" and incident.acknowledged_at is None:
        values["acknowledged_at"] = now
    if status == "resolved":
        values["resolved_at"] = now
        if incident.acknowledged_at is None:
            values["acknowledged_at"] = now
    if status == "triggered":
        values["acknowledged_at"] = None
        values["resolved_at"] = None
    if status == "acknowledged":
        values["resolved_at"] = None
    return values


def _assign(incident: Incident, fields: Mapping[str, Any], now: datetime) -> None:
    for name, value in _column_values(incident, fields, now).items():
        setattr(incident, name, value)


def list_incidents(*, session: Session, status: str | None = None, limit: int = 100,
                   offset: int = 0) -> list[Incident]:
    query = select(Incident).order_by(Incident.id.desc()).limit(limit).offset(offset)
    if status:
        query = query.where(Incident.status == status)
    return list(session.scalars(query))


# -- timeline -----------------------------------------------------------------------------------

def append_timeline(*, session: Session, incident_id: int, at: datetime, kind: str,
                    actor: str | None, source: str, data: Mapping[str, Any] | None = None
                    ) -> TimelineEntry:
    entry = TimelineEntry(incident_id=incident_id, at=at, kind=kind, actor=actor, source=source,
                          data=dict(data or {}))
    session.add(entry)
    return entry


def timeline(*, session: Session, incident_id: int) -> list[TimelineEntry]:
    return list(session.scalars(select(TimelineEntry).where(TimelineEntry.incident_id == incident_id)
                                .order_by(TimelineEntry.at, TimelineEntry.id)))


# -- links --------------------------------------------------------------------------------------

def find_link(*, session: Session, connector: str, remote_id: str,
              for_update: bool = False) -> Link | None:
    query = select(Link).where(Link.connector == connector, Link.remote_id == remote_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def link_for(*, session: Session, incident_id: int, connector: str) -> Link | None:
    return session.scalars(select(Link).where(Link.incident_id == incident_id,
                                              Link.connector == connector)).one_or_none()


def create_link(*, session: Session, incident_id: int, connector: str, remote_id: str,
                remote_key: str, remote_url: str, remote_version: str | None,
                shadow: Mapping[str, Any], now: datetime) -> Link:
    link = Link(incident_id=incident_id, connector=connector, remote_id=remote_id,
                remote_key=remote_key, remote_url=remote_url, remote_version=remote_version,
                shadow=dict(shadow), created_at=now, synced_at=now)
    session.add(link)
    session.flush()
    return link


def links_page(*, session: Session, connector: str, after_id: int, limit: int) -> list[Link]:
    return list(session.scalars(select(Link).where(Link.connector == connector, Link.id > after_id)
                                .order_by(Link.id).limit(limit)))


def count_links(*, session: Session, connector: str) -> int:
    return session.scalar(select(func.count()).select_from(Link).where(Link.connector == connector))


def links_by_remote_id(*, session: Session, connector: str, remote_ids: list[str]) -> dict[str, Link]:
    if not remote_ids:
        return {}
    return {link.remote_id: link for link in session.scalars(select(Link).where(
        Link.connector == connector, Link.remote_id.in_(set(remote_ids))))}


def record_remote_state(*, session: Session, link: Link, shadow: Mapping[str, Any],
                        remote_version: str | None, now: datetime) -> None:
    """Remember what the remote holds now (after a read or our own write): the no-echo shadow."""
    link.shadow = dict(shadow)
    link.remote_version = remote_version
    link.synced_at = now


# -- comments -----------------------------------------------------------------------------------

def add_comment(*, session: Session, incident_id: int, body: str, author: str | None,
                visibility: str, origin: str, now: datetime) -> Comment:
    if not body.strip():
        raise InvalidField("a comment needs a body")
    if visibility not in ("internal", "public"):
        raise InvalidField(f"visibility must be internal or public, got {visibility!r}")
    comment = Comment(incident_id=incident_id, body=body, author=author, visibility=visibility,
                      origin=origin, created_at=now)
    session.add(comment)
    session.flush()
    append_timeline(session=session, incident_id=incident_id, at=now, kind="comment_added",
                    actor=author, source=origin,
                    data={"comment_id": comment.id, "visibility": visibility, "body": body})
    return comment


def link_comment(*, session: Session, comment_id: int, connector: str, remote_comment_id: str) -> None:
    session.add(CommentLink(comment_id=comment_id, connector=connector,
                            remote_comment_id=remote_comment_id))
    session.flush()


def linked_remote_comment_ids(*, session: Session, connector: str,
                              remote_comment_ids: Iterable[str]) -> set[str]:
    ids = list(remote_comment_ids)
    if not ids:
        return set()
    return set(session.scalars(select(CommentLink.remote_comment_id).where(
        CommentLink.connector == connector, CommentLink.remote_comment_id.in_(ids))))


def comments_without_link(*, session: Session, incident_id: int, connector: str) -> list[Comment]:
    """The incident's comments that did not come from ``connector`` and are not linked to it yet."""
    linked = select(CommentLink.comment_id).where(CommentLink.connector == connector)
    return list(session.scalars(select(Comment).where(
        Comment.incident_id == incident_id, Comment.origin != connector,
        Comment.id.not_in(linked)).order_by(Comment.id)))


def remote_comment_id(*, session: Session, comment_id: int, connector: str) -> str | None:
    return session.scalar(select(CommentLink.remote_comment_id).where(
        CommentLink.comment_id == comment_id, CommentLink.connector == connector))


def comments(*, session: Session, incident_id: int) -> list[Comment]:
    return list(session.scalars(select(Comment).where(Comment.incident_id == incident_id)
                                .order_by(Comment.id)))


# -- outbox -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped; attempts beyond max_attempts go dead."""

    initial: float = 1.0
    maximum: float = 600.0
    max_attempts: int = 10

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** max(0, attempts - 1)))
        return (rng or random).uniform(ceiling / 2, ceiling)


def enqueue(*, session: Session, incident_id: int | None, connector: str, operation: str,
            fields: Mapping[str, Any], now: datetime) -> OutboxItem:
    """Queue a delivery. A pending update for the same incident and connector absorbs the new
    fields (last value per field wins) instead of adding a row: invariant 5's coalescing."""
    if operation == "update" and incident_id is not None:
        pending = session.scalars(
            select(OutboxItem).where(OutboxItem.incident_id == incident_id,
                                     OutboxItem.connector == connector,
                                     OutboxItem.operation == "update",
                                     OutboxItem.state == "pending")
            .order_by(OutboxItem.id.desc()).limit(1).with_for_update()).first()
        if pending is not None and _is_last_open(session, pending):
            pending.fields = {**pending.fields, **fields}
            pending.updated_at = now
            return pending
    item = OutboxItem(incident_id=incident_id, connector=connector, operation=operation,
                      fields=dict(fields), state="pending", attempts=0, next_attempt_at=now,
                      created_at=now, updated_at=now)
    session.add(item)
    session.flush()
    return item


def has_open_create(*, session: Session, incident_id: int, connector: str) -> bool:
    return bool(session.scalar(select(func.count()).select_from(OutboxItem).where(
        OutboxItem.incident_id == incident_id, OutboxItem.connector == connector,
        OutboxItem.operation == "create", OutboxItem.state.in_(("pending", "in_flight")))))


def _is_last_open(session: Session, item: OutboxItem) -> bool:
    """True when no later open row of the pair exists (coalescing must not jump over a comment)."""
    later = session.scalar(select(func.count()).select_from(OutboxItem).where(
        OutboxItem.incident_id == item.incident_id, OutboxItem.connector == item.connector,
        OutboxItem.id > item.id, OutboxItem.state.in_(("pending", "in_flight"))))
    return not later


def claim_due(*, session: Session, worker: str, now: datetime, lease: timedelta,
              limit: int = 10, connector: str | None = None) -> list[OutboxItem]:
    """Claim due rows for delivery: pending ones whose time has come, and in-flight ones whose
    claimer's lease ran out (a crashed worker). Only the oldest open row of each (incident,
    connector) pair is eligible, so deliveries for one incident go out in order (invariant 5).
    On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets replicas claim side by side."""
    earlier = aliased(OutboxItem)
    open_states = ("pending", "in_flight")
    query = (select(OutboxItem)
             .where(OutboxItem.operation != "inbound",
                    or_(and_(OutboxItem.state == "pending", OutboxItem.next_attempt_at <= now),
                        and_(OutboxItem.state == "in_flight", OutboxItem.claimed_until < now)),
                    ~exists().where(earlier.incident_id == OutboxItem.incident_id,
                                    earlier.connector == OutboxItem.connector,
                                    earlier.id < OutboxItem.id,
                                    earlier.operation != "inbound",
                                    earlier.state.in_(open_states)))
             .order_by(OutboxItem.next_attempt_at, OutboxItem.id)
             .limit(limit)
             .with_for_update(skip_locked=True, of=OutboxItem))
    if connector is not None:
        query = query.where(OutboxItem.connector == connector)
    items = list(session.scalars(query))
    for item in items:
        if item.state == "in_flight":
            item.attempts += 1        # its claimer died mid-delivery: that attempt counts
        item.state = "in_flight"
        item.claimed_by = worker
        item.claimed_until = now + lease
        item.updated_at = now
    session.flush()
    return items


def _claimed(session: Session, item_id: int, worker: str) -> OutboxItem:
    item = session.get(OutboxItem, item_id, with_for_update=True)
    if item is None:
        raise NotFound(f"outbox row {item_id} does not exist")
    if item.state != "in_flight" or item.claimed_by != worker:
        raise StoreError(f"outbox row {item_id} is no longer claimed by {worker} "
                         f"(state {item.state}, claimed by {item.claimed_by})")
    return item


def renew_claim(*, session: Session, item_id: int, worker: str, until: datetime) -> None:
    """Extend a claim before the next remote call of a delivery; StoreError if it was lost (the
    lease ran out and another worker took the row), so the old claimer stops instead of writing."""
    _claimed(session, item_id, worker).claimed_until = until


def _unclaim(item: OutboxItem, state: str, now: datetime) -> None:
    item.state = state
    item.claimed_by = None
    item.claimed_until = None
    item.updated_at = now


def complete(*, session: Session, item_id: int, worker: str, now: datetime) -> None:
    """Mark a delivery done; refuses if the claim was lost (the lease ran out and someone else took it)."""
    item = _claimed(session, item_id, worker)
    item.last_error = None
    _unclaim(item, "done", now)


def fail(*, session: Session, item_id: int, worker: str, error: str, transient: bool,
         now: datetime, backoff: Backoff, retry_after: float | None = None) -> str:
    """Record a failed attempt: back off and retry a transient error, dead-letter a permanent one or
    one that ran out of attempts. Returns the new state."""
    item = _claimed(session, item_id, worker)
    item.attempts += 1
    item.last_error = error
    if transient and item.attempts < backoff.max_attempts:
        delay = max(backoff.delay(item.attempts), retry_after or 0.0)
        item.next_attempt_at = now + timedelta(seconds=delay)
        _unclaim(item, "pending", now)
    else:
        _unclaim(item, "dead", now)
    return item.state


def release(*, session: Session, item_id: int, worker: str, now: datetime) -> None:
    """Hand a claimed row back untouched (a clean shutdown before the write was attempted)."""
    _unclaim(_claimed(session, item_id, worker), "pending", now)


def dead_letter(*, session: Session, incident_id: int | None, connector: str, operation: str,
                fields: Mapping[str, Any], error: str, now: datetime,
                remote_id: str | None = None) -> OutboxItem:
    """Record work that cannot proceed without an operator (e.g. a remote record that cannot be mapped)."""
    item = OutboxItem(incident_id=incident_id, connector=connector, operation=operation,
                      fields=dict(fields), remote_id=remote_id, state="dead", attempts=1,
                      next_attempt_at=now, last_error=error, created_at=now, updated_at=now)
    session.add(item)
    session.flush()
    return item


def _open_inbound(session: Session, connector: str, remote_id: str) -> list[OutboxItem]:
    return list(session.scalars(select(OutboxItem).where(
        OutboxItem.connector == connector, OutboxItem.remote_id == remote_id,
        OutboxItem.operation == "inbound", OutboxItem.state.in_(("dead", "pending")))))


def inbound_dead_letter_exists(*, session: Session, connector: str, remote_id: str,
                               version: str) -> bool:
    """An unmappable remote version is recorded once, however often polls see it."""
    return any(row.fields.get("version") == version
               for row in _open_inbound(session, connector, remote_id))


def close_inbound_dead_letters(*, session: Session, connector: str, remote_id: str,
                               now: datetime) -> None:
    for row in _open_inbound(session, connector, remote_id):
        row.state = "done"
        row.updated_at = now


def pending_inbound(*, session: Session, connector: str) -> list[OutboxItem]:
    """Inbound dead letters an operator asked to retry."""
    return list(session.scalars(select(OutboxItem).where(
        OutboxItem.connector == connector, OutboxItem.operation == "inbound",
        OutboxItem.state == "pending").order_by(OutboxItem.id)))


def settle_inbound(*, session: Session, item_id: int, state: str, now: datetime) -> None:
    """After an operator's retry of an inbound dead letter: "done", or "dead" again if the
    record still cannot be applied (it stays on the operator's list, never silently pending)."""
    item = session.get(OutboxItem, item_id, with_for_update=True)
    if item is not None:
        item.state = state
        item.updated_at = now


def dead_letters(*, session: Session, connector: str | None = None) -> list[OutboxItem]:
    query = select(OutboxItem).where(OutboxItem.state == "dead").order_by(OutboxItem.id)
    if connector:
        query = query.where(OutboxItem.connector == connector)
    return list(session.scalars(query))


def retry_dead_letter(*, session: Session, item_id: int, now: datetime) -> OutboxItem:
    item = session.get(OutboxItem, item_id, with_for_update=True)
    if item is None or item.state != "dead":
        raise NotFound(f"dead letter {item_id} does not exist (or is not dead)")
    item.state = "pending"
    item.attempts = 0
    item.next_attempt_at = now
    item.updated_at = now
    return item


def prune_done(*, session: Session, before: datetime, limit: int = 1000) -> int:
    """Delete delivered rows finished before ``before``: the outbox is a queue, not a history
    (the timeline keeps what happened). Bounded per call so it never holds a long lock."""
    ids = list(session.scalars(select(OutboxItem.id).where(
        OutboxItem.state == "done", OutboxItem.updated_at < before).limit(limit)))
    if ids:
        session.execute(delete(OutboxItem).where(OutboxItem.id.in_(ids)))
    return len(ids)


def outbox_counts(*, session: Session) -> dict[tuple[str, str], int]:
    """{(connector, state): rows} for open and dead rows, for the metrics gauges."""
    rows = session.execute(select(OutboxItem.connector, OutboxItem.state, func.count())
                           .where(OutboxItem.state != "done")
                           .group_by(OutboxItem.connector, OutboxItem.state))
    return {(connector, state): count for connector, state, count in rows}


# -- cursors ------------------------------------------------------------------------------------

def get_cursor(*, session: Session, connector: str) -> SyncCursorRow | None:
    return session.get(SyncCursorRow, connector)


def save_cursor(*, session: Session, connector: str, watermark: datetime | None,
                seen: Iterable[str], now: datetime) -> SyncCursorRow:
    row = session.get(SyncCursorRow, connector, with_for_update=True)
    if row is None:
        row = SyncCursorRow(connector=connector, seen=[], updated_at=now, accept_mass_change=False)
        session.add(row)
    row.watermark = watermark
    row.accept_mass_change = False
    row.seen = sorted(seen)
    row.last_poll_at = now
    row.updated_at = now
    session.flush()
    return row


def set_paused(*, session: Session, connector: str, reason: str | None, now: datetime) -> None:
    """Pause a connector's inbound sync with a reason an operator reads; None resumes it, and
    the operator's resume also accepts the mass change that caused the pause."""
    row = session.get(SyncCursorRow, connector, with_for_update=True)
    if row is None:
        row = SyncCursorRow(connector=connector, seen=[], updated_at=now, accept_mass_change=False)
        session.add(row)
    row.paused_reason = reason
    row.accept_mass_change = reason is None
    row.updated_at = now
    session.flush()
