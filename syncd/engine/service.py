"""Sync store reads and writes: links and their shadows, comment links, the outbox, inbound dead
letters and cursors. Keyword-only functions that take the session; nothing here commits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session, aliased

from syncd.engine.models import (
    CommentLink,
    InboundDeadLetter,
    Link,
    OutboxItem,
    SyncCursorRow,
)
from syncd.incidents.models import Comment
from syncd.store import queue
from syncd.store.errors import NotFound

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


# -- comment links ---------------------------------------------------------------------------

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


def comments_awaiting_link(*, session: Session, incident_id: int, connector: str) -> list[Comment]:
    """The incident's comments still being delivered to ``connector``: an open comment outbox row
    for it and no comment link yet. Only these can be the author of a comment syncd posted there;
    a note never exported to it (its visibility stays out, its row is dead) cannot."""
    open_rows = session.scalars(select(OutboxItem.fields).where(
        OutboxItem.incident_id == incident_id, OutboxItem.connector == connector,
        OutboxItem.operation == "comment", OutboxItem.state.in_(queue.OPEN_STATES)))
    delivering = {fields["comment_id"] for fields in open_rows}
    if not delivering:
        return []
    linked = select(CommentLink.comment_id).where(CommentLink.connector == connector)
    return list(session.scalars(select(Comment).where(
        Comment.incident_id == incident_id, Comment.id.in_(delivering),
        Comment.origin != connector, Comment.id.not_in(linked)).order_by(Comment.id)))


def incident_remote_comment_ids(*, session: Session, incident_id: int, connector: str) -> set[str]:
    """The remote comment ids of ``connector`` already linked to the incident's comments."""
    return set(session.scalars(select(CommentLink.remote_comment_id).join(
        Comment, Comment.id == CommentLink.comment_id).where(
        Comment.incident_id == incident_id, CommentLink.connector == connector)))


def comment_linked_to(*, session: Session, connector: str, remote_comment_id: str) -> int | None:
    """The store comment a remote comment is linked to, if any."""
    return session.scalar(select(CommentLink.comment_id).where(
        CommentLink.connector == connector, CommentLink.remote_comment_id == remote_comment_id))


def remote_comment_id(*, session: Session, comment_id: int, connector: str) -> str | None:
    return session.scalar(select(CommentLink.remote_comment_id).where(
        CommentLink.comment_id == comment_id, CommentLink.connector == connector))


# -- outbox -------------------------------------------------------------------------------------

def enqueue(*, session: Session, incident_id: int, connector: str, operation: str,
            fields: Mapping[str, Any], now: datetime) -> OutboxItem:
    """Queue a delivery. A pending update for the same incident and connector absorbs the new
    fields (last value per field wins) instead of adding a row: invariant 5's coalescing."""
    if operation == "update":
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
                      claim_token=0, created_at=now, updated_at=now)
    session.add(item)
    session.flush()
    return item


def has_open_create(*, session: Session, incident_id: int, connector: str) -> bool:
    return bool(session.scalar(select(func.count()).select_from(OutboxItem).where(
        OutboxItem.incident_id == incident_id, OutboxItem.connector == connector,
        OutboxItem.operation == "create", OutboxItem.state.in_(queue.OPEN_STATES))))


def _is_last_open(session: Session, item: OutboxItem) -> bool:
    """True when no later open row of the pair exists (coalescing must not jump over a comment)."""
    later = session.scalar(select(func.count()).select_from(OutboxItem).where(
        OutboxItem.incident_id == item.incident_id, OutboxItem.connector == item.connector,
        OutboxItem.id > item.id, OutboxItem.state.in_(queue.OPEN_STATES)))
    return not later


def claim_due(*, session: Session, worker: str, now: datetime, lease: timedelta,
              limit: int = 10, connector: str | None = None, process: str = "",
              dead_processes: list[str] = ()) -> list[OutboxItem]:
    """Claim due rows for delivery. Only the oldest open row of each (incident, connector) pair
    is eligible, so deliveries for one incident go out in order (invariant 5)."""
    earlier = aliased(OutboxItem)
    query = (select(OutboxItem)
             .where(queue.due_condition(OutboxItem, now, dead_processes),
                    ~exists().where(earlier.incident_id == OutboxItem.incident_id,
                                    earlier.connector == OutboxItem.connector,
                                    earlier.id < OutboxItem.id,
                                    earlier.state.in_(queue.OPEN_STATES)))
             .order_by(OutboxItem.next_attempt_at, OutboxItem.id))
    if connector is not None:
        query = query.where(OutboxItem.connector == connector)
    return queue.claim(session=session, query=query, worker=worker, process=process or worker,
                       now=now, lease=lease, limit=limit)


def dead_letters(*, session: Session, connector: str | None = None) -> list[OutboxItem]:
    query = select(OutboxItem).where(OutboxItem.state == "dead").order_by(OutboxItem.id)
    if connector:
        query = query.where(OutboxItem.connector == connector)
    return list(session.scalars(query))


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
    counts = {(connector, state): count for connector, state, count in rows}
    inbound = session.execute(select(InboundDeadLetter.connector, func.count())
                              .where(InboundDeadLetter.state != "closed")
                              .group_by(InboundDeadLetter.connector))
    for connector, count in inbound:
        counts[(connector, "dead")] = counts.get((connector, "dead"), 0) + count
    return counts


# -- inbound dead letters -----------------------------------------------------------------------

def _open_inbound(session: Session, connector: str, remote_id: str) -> list[InboundDeadLetter]:
    return list(session.scalars(select(InboundDeadLetter).where(
        InboundDeadLetter.connector == connector, InboundDeadLetter.remote_id == remote_id,
        InboundDeadLetter.state != "closed")))


def record_inbound_dead_letter(*, session: Session, connector: str, remote_id: str,
                               remote_key: str, version: str | None, incident_id: int | None,
                               reason: str, now: datetime) -> InboundDeadLetter | None:
    """Record an unmappable remote version once, however often polls see it; None if known."""
    if any(row.version == version for row in _open_inbound(session, connector, remote_id)):
        return None
    row = InboundDeadLetter(connector=connector, remote_id=remote_id, remote_key=remote_key,
                            version=version, incident_id=incident_id, reason=reason, state="dead",
                            attempts=1, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def close_inbound_dead_letters(*, session: Session, connector: str, remote_id: str,
                               now: datetime) -> None:
    """The record applied: its older versions' dead letters have nothing left to say."""
    for row in _open_inbound(session, connector, remote_id):
        row.state = "closed"
        row.updated_at = now


def retrying_inbound(*, session: Session, connector: str) -> list[InboundDeadLetter]:
    """Inbound dead letters an operator asked to retry."""
    return list(session.scalars(select(InboundDeadLetter).where(
        InboundDeadLetter.connector == connector, InboundDeadLetter.state == "retrying")
        .order_by(InboundDeadLetter.id)))


def settle_inbound(*, session: Session, row_id: int, applied: bool, reason: str | None,
                   now: datetime) -> None:
    """After an operator's retry: closed when the record applied, else dead again with the new
    reason (it stays on the operator's list, never silently pending)."""
    row = session.get(InboundDeadLetter, row_id, with_for_update=True)
    if row is not None and row.state == "retrying":
        row.state = "closed" if applied else "dead"
        row.attempts += 1
        row.reason = reason or row.reason
        row.updated_at = now


def inbound_dead_letters(*, session: Session, connector: str | None = None) -> list[InboundDeadLetter]:
    query = (select(InboundDeadLetter).where(InboundDeadLetter.state != "closed")
             .order_by(InboundDeadLetter.id))
    if connector:
        query = query.where(InboundDeadLetter.connector == connector)
    return list(session.scalars(query))


def retry_inbound_dead_letter(*, session: Session, row_id: int, now: datetime) -> InboundDeadLetter:
    row = session.get(InboundDeadLetter, row_id, with_for_update=True)
    if row is None or row.state != "dead":
        raise NotFound(f"dead letter in-{row_id} does not exist (or is not dead)")
    row.state = "retrying"
    row.updated_at = now
    return row


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
