"""Notification rows: written by escalation and `syncd page test`, claimed and settled by the
sender. Keyword-only functions that take the session; nothing here commits.

The state machine (syncd/notify/models.py) is what keeps invariant 6: a row is claimed (pending →
sending, with a deadline and a new claim token) and that claim commits BEFORE anything is sent;
a settle only lands while the claim token still matches; a row still sending past its deadline
becomes unknown (never pending again), because its message may have gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.orm import Session

from syncd.incidents.models import Incident
from syncd.incidents.service import append_timeline
from syncd.notify import throttle
from syncd.notify.channels import Delivery, channel_of, is_short
from syncd.notify.links import AckLink, AckLinks
from syncd.notify.models import Notification
from syncd.notify.templates import render_bundle, render_page, render_test
from syncd.oncall.definitions import User
from syncd.oncall.models import Escalation

log = logging.getLogger(__name__)

ACTOR = "syncd"
SOURCE = "syncd"
STOPPED_MID_SEND = "the sender stopped mid-send"
# Past send_timeout, how long a claim may still settle before the row counts as stuck.
DEADLINE_MARGIN = timedelta(seconds=5)


class NoSuchContact(ValueError):
    """A page names a contact the user does not have."""


def ticket_links_of(incident: Incident) -> list[tuple[str, str, str]]:
    """The incident's ServiceNow and Jira records as (connector, key, url), for render_page."""
    return [(link.connector, link.remote_key, link.remote_url) for link in incident.links]


# -- writing rows --------------------------------------------------------------------------------

def enqueue_page(*, session: Session, incident: Incident, escalation: Escalation, user: User,
                 contact: str, after: timedelta, now: datetime,
                 ticket_links: Iterable[Sequence[str]], ack_links: AckLinks | None
                 ) -> Notification:
    """A page to one contact of one person for the escalation's current step (its epoch, loop
    and rule_index as they are now), due ``after`` from ``now``, rendered with its acknowledge
    link and added to the session (written with the step's other rows in one flush).

    One step writes each (person, contact) once: the caller holds the escalation row's lock, and
    the unique page key is the backstop (a second insert fails the step's savepoint)."""
    url = user.contacts.get(contact)
    if url is None:
        raise NoSuchContact(f"user {user.id} has no contact {contact!r} (contacts: "
                            f"{', '.join(user.contacts) or 'none'})")
    ack_url = (ack_links.url_for(incident_id=incident.id, user_id=user.id,
                                 escalation_id=escalation.id, epoch=escalation.epoch, now=now)
               if ack_links else None)
    subject, body = render_page(incident=incident, user=user, ticket_links=ticket_links,
                                ack_url=ack_url, urgency=escalation.urgency,
                                short=is_short(url), service=escalation.service_id)
    row = Notification(kind="page", incident_id=incident.id, urgency=escalation.urgency,
                       state="pending", attempts=0, claim_token=0, due_at=now + after,
                       subject=subject, body=body, created_at=now, updated_at=now,
                       escalation_id=escalation.id, epoch=escalation.epoch, loop=escalation.loop,
                       rule_index=escalation.rule_index, user_id=user.id, contact=contact)
    session.add(row)
    return row


def enqueue_test(*, session: Session, user: User, contact: str, now: datetime) -> Notification:
    """A test notification to one contact, due now (`syncd page test`)."""
    url = user.contacts.get(contact)
    if url is None:
        raise NoSuchContact(f"user {user.id} has no contact {contact!r} (contacts: "
                            f"{', '.join(user.contacts) or 'none'})")
    subject, body = render_test(user=user, contact=contact, channel=channel_of(url),
                                short=is_short(url))
    row = Notification(kind="test", user_id=user.id, contact=contact, state="pending",
                       attempts=0, claim_token=0, due_at=now, subject=subject, body=body,
                       created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def cancel_pending(*, session: Session, incident_id: int, now: datetime, reason: str) -> int:
    """Cancel the incident's pages not sent yet (it was acknowledged or resolved); how many.
    Rows already sending are left to finish: their message is on its way."""
    cancelled = session.execute(
        update(Notification)
        .where(Notification.incident_id == incident_id, Notification.state == "pending",
               Notification.kind == "page")
        .values(state="cancelled", detail=reason, updated_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if cancelled:
        append_timeline(session=session, incident_id=incident_id, at=now,
                        kind="notifications_cancelled", actor=ACTOR, source=SOURCE,
                        data={"count": cancelled, "reason": reason})
    return cancelled


# -- the sender's side ---------------------------------------------------------------------------

@dataclass
class Claim:
    """Rows claimed together: one message to one contact of one person."""

    user_id: str
    contact: str
    kind: str
    subject: str
    body: str
    tokens: dict[int, int]                       # row id -> the claim token this claim set
    due_at: dict[int, datetime] = field(default_factory=dict)
    deadline: datetime | None = None

    @property
    def ids(self) -> list[int]:
        return list(self.tokens)


@dataclass(frozen=True)
class Settled:
    """One row's outcome, for metrics once the transaction has committed."""

    row_id: int
    kind: str
    channel: str
    outcome: str                                  # sent, failed, unknown, retried


def expire_stuck(*, session: Session, now: datetime,
                 channel: Callable[[str, str], str]) -> list[Settled]:
    """Rows still sending past their deadline: their sender stopped mid-send, so the message may
    have gone. They become unknown, never pending; the claim token moves on, so a sender that
    was only slow cannot settle them afterwards."""
    stuck = session.scalars(
        select(Notification)
        .where(Notification.state == "sending", Notification.deadline < now)
        .order_by(Notification.id).with_for_update(skip_locked=True)).all()
    settled = []
    for row in stuck:
        row.state, row.detail, row.updated_at = "unknown", STOPPED_MID_SEND, now
        row.claim_token += 1
        row_channel = channel(row.user_id, row.contact)
        _on_timeline(session, row, "notification_unknown", now, row_channel)
        settled.append(Settled(row.id, row.kind, row_channel, "unknown"))
    return settled


PER_CONTACT_SCAN = 20


def claim_due(*, session: Session, now: datetime, worker_id: str, send_timeout: float,
              rate: throttle.Rate = throttle.DEFAULT_RATE, limit: int = 200) -> list[Claim]:
    """Claim the due pending rows this sender may send now, as messages the throttle allows.

    Rows are locked with SKIP LOCKED, so replicas claim disjoint rows; on PostgreSQL one
    replica at a time plans for a contact (a transaction-scoped advisory lock), so two replicas
    cannot both spend the same contact's throttle."""
    # At most PER_CONTACT_SCAN rows of one contact per pass: a throttled contact with a long
    # queue must not fill the batch and hold back everyone else's due pages (head of line).
    rank = func.row_number().over(partition_by=(Notification.user_id, Notification.contact),
                                  order_by=(Notification.due_at, Notification.id))
    candidates = select(Notification.id, rank.label("rank")).where(
        Notification.state == "pending", Notification.due_at <= now).subquery()
    # The state and due time are checked again on the locked rows themselves: on PostgreSQL a
    # row another sender claimed and committed meanwhile is re-checked against these, not
    # against the subquery's older snapshot, so it cannot be claimed (and sent) twice.
    due = session.scalars(
        select(Notification)
        .where(Notification.state == "pending", Notification.due_at <= now,
               Notification.id.in_(select(candidates.c.id)
                                   .where(candidates.c.rank <= PER_CONTACT_SCAN)))
        .order_by(Notification.due_at, Notification.id)
        .limit(limit).with_for_update(skip_locked=True)).all()
    due = _still_wanted(session, due, now)
    by_contact: dict[tuple[str, str], list[Notification]] = {}
    for row in due:
        by_contact.setdefault((row.user_id, row.contact), []).append(row)
    claims = []
    for (user_id, contact), rows in by_contact.items():
        if not _plan_lock(session, user_id, contact):
            continue
        plan = throttle.plan(
            [throttle.PendingMessage(row.id, row.due_at, row.incident_id, row.kind) for row in rows],
            _recent_sends(session, user_id, contact, now, rate.per), now, rate)
        by_id = {row.id: row for row in rows}
        for ids in plan.send_now:
            claims.append(_claim(session, [by_id[i] for i in ids], now=now, worker_id=worker_id,
                                 send_timeout=send_timeout))
    return claims


def _still_wanted(session: Session, rows: Sequence[Notification],
                  now: datetime) -> list[Notification]:
    """Drop (cancel) escalation pages of incidents no longer triggered. The acknowledgement's
    hook cancels them in its own transaction; this covers a change made where no hook ran (a
    tool writing to the store directly), so such a page is never sent late."""
    incident_ids = {row.incident_id for row in rows
                    if row.kind == "page" and row.incident_id is not None}
    if not incident_ids:
        return list(rows)
    statuses = dict(session.execute(
        select(Incident.id, Incident.status).where(Incident.id.in_(incident_ids))).all())
    wanted = []
    for row in rows:
        status = statuses.get(row.incident_id, "triggered") if row.kind == "page" else "triggered"
        if status == "triggered":
            wanted.append(row)
        else:
            row.state, row.detail, row.updated_at = "cancelled", \
                f"the incident was {status} before it was sent", now
    return wanted


def claim_rows(*, session: Session, ids: Sequence[int], now: datetime, worker_id: str,
               send_timeout: float) -> Claim:
    """Claim given pending rows as one message at once, unthrottled (`syncd page test`)."""
    rows = session.scalars(select(Notification).where(
        Notification.id.in_(ids), Notification.state == "pending").with_for_update()).all()
    if len(rows) != len(ids):
        raise ValueError(f"notification rows {sorted(ids)} are not all pending")
    return _claim(session, list(rows), now=now, worker_id=worker_id, send_timeout=send_timeout)


def _plan_lock(session: Session, user_id: str, contact: str) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return True                               # SQLite: one process, writers already queue
    return bool(session.scalar(
        text("SELECT pg_try_advisory_xact_lock(hashtextextended(current_schema() || :name, 0))"),
        {"name": f":notify-contact:{user_id}/{contact}"}))


def _recent_sends(session: Session, user_id: str, contact: str, now: datetime,
                  window: timedelta) -> list[datetime]:
    """When messages went to this contact within the window: sent ones by sent_at, those sending
    or unknown by when they were claimed. Rows of one bundle share one instant."""
    since = now - window
    sent = session.scalars(select(Notification.sent_at).where(
        Notification.user_id == user_id, Notification.contact == contact,
        Notification.state == "sent", Notification.sent_at > since)).all()
    in_flight = session.scalars(select(Notification.updated_at).where(
        Notification.user_id == user_id, Notification.contact == contact,
        Notification.state.in_(("sending", "unknown")), Notification.updated_at > since)).all()
    return [*sent, *in_flight]


def _claim(session: Session, rows: list[Notification], *, now: datetime, worker_id: str,
           send_timeout: float) -> Claim:
    deadline = now + timedelta(seconds=send_timeout) + DEADLINE_MARGIN
    for row in rows:
        row.state, row.deadline, row.claimed_by, row.updated_at = "sending", deadline, worker_id, now
        row.claim_token += 1
        row.attempts += 1
    subject, body = _message(session, rows)
    first = rows[0]
    return Claim(user_id=first.user_id, contact=first.contact, kind=first.kind, subject=subject,
                 body=body, tokens={row.id: row.claim_token for row in rows},
                 due_at={row.id: row.due_at for row in rows}, deadline=deadline)


def _message(session: Session, rows: list[Notification]) -> tuple[str, str]:
    """The text of one message: the row's own, or a bundle with one page per incident."""
    first_per_incident: dict[Any, Notification] = {}
    for row in rows:
        first_per_incident.setdefault(row.incident_id, row)
    pages = list(first_per_incident.values())
    if len(pages) == 1:
        return pages[0].subject, pages[0].body
    numbers = [session.get(Incident, row.incident_id).number for row in pages]
    return render_bundle(messages=[(row.subject, row.body) for row in pages], numbers=numbers,
                         short=all(not row.subject for row in pages))


def settle(*, session: Session, claim: Claim, delivery: Delivery, channel: str, now: datetime,
           retry: bool, max_attempts: int, retry_delay: timedelta) -> list[Settled]:
    """Record a send's outcome on the claim's rows, where the claim token still matches (a row
    marked unknown meanwhile keeps that). A failure the channel reported goes back to pending
    ``retry_delay`` later while attempts remain and ``retry`` allows it."""
    rows = session.scalars(select(Notification).where(
        Notification.id.in_(claim.ids), Notification.state == "sending")
        .order_by(Notification.id).with_for_update()).all()
    settled = []
    for row in rows:
        if row.claim_token != claim.tokens[row.id]:
            log.warning("notification %s was taken back before its send was recorded", row.id)
            continue
        row.detail, row.updated_at, row.deadline = delivery.detail, now, None
        if delivery.outcome == "sent":
            row.state, row.sent_at = "sent", now
            outcome = kind = "sent"
        elif delivery.outcome == "failed" and retry and row.attempts < max_attempts:
            row.state, row.due_at, row.claimed_by = "pending", now + retry_delay, None
            outcome, kind = "retried", "retrying"
        else:
            row.state = outcome = kind = delivery.outcome
        retrying = ({"retry_at": row.due_at, "max_attempts": max_attempts}
                    if kind == "retrying" else {})
        _on_timeline(session, row, f"notification_{kind}", now, channel, **retrying)
        settled.append(Settled(row.id, row.kind, channel, outcome))
    return settled


def _on_timeline(session: Session, row: Notification, kind: str, now: datetime, channel: str,
                 **extra: Any) -> None:
    if row.incident_id is None:                   # tests belong to no incident
        return
    data = {"notification_id": row.id, "kind": row.kind, "user": row.user_id,
            "contact": row.contact, "channel": channel, "detail": row.detail,
            "attempt": row.attempts}
    data.update({name: value.isoformat() if isinstance(value, datetime) else value
                 for name, value in extra.items()})
    append_timeline(session=session, incident_id=row.incident_id, at=now, kind=kind,
                    actor=ACTOR, source=SOURCE, data=data)


def pending_count(*, session: Session) -> int:
    """Rows not settled yet (pending or sending), for tests and readiness."""
    return session.scalar(select(func.count()).select_from(Notification).where(
        or_(Notification.state == "pending", Notification.state == "sending"))) or 0


def stale_ack_link(*, session: Session, link: AckLink) -> str | None:
    """Why an acknowledge link no longer acknowledges, or None. A link acknowledges only the
    round of paging that sent it, and only for a person that round paged: one from an earlier
    episode (resolved, then re-opened; or an acknowledgement that timed out) must not stop the
    page now running."""
    escalation = session.get(Escalation, link.escalation_id)
    if escalation is None or escalation.incident_id != link.incident_id:
        return "this link does not belong to a page of this incident"
    if escalation.epoch != link.epoch:
        return "this page is from an earlier round of the incident"
    paged = session.scalar(select(Notification.id).where(
        Notification.escalation_id == escalation.id, Notification.epoch == link.epoch,
        Notification.user_id == link.user_id).limit(1))
    return None if paged is not None else "this link does not belong to a page of this person"
