"""The claimable-row queue: durable rows that workers claim, perform and settle.

Outbox deliveries use it now; notifications and action runs use it next. A row is claimed with
``FOR UPDATE SKIP LOCKED`` (replicas claim side by side on PostgreSQL), under a lease, with a
fencing token that grows at every claim: a worker holds ``Claim(row id, token)`` and every renewal
and settlement checks the token, so a worker whose lease lapsed and whose row someone else took
cannot renew, complete or fail it (invariant 5). Backoff lives here once.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Sequence, TypeVar

from sqlalchemy import Integer, Select, String, Text, and_, func, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from syncd.metrics import CLAIMS_RECOVERED
from syncd.store.errors import NotFound, StoreError

log = logging.getLogger(__name__)

QUEUE_STATES = ("pending", "in_flight", "done", "dead")
OPEN_STATES = ("pending", "in_flight")

Row = TypeVar("Row", bound="ClaimableRow")


class ClaimLost(StoreError):
    """The claim on a row ran out and another worker took it (or it was settled): stop, write nothing."""


class ClaimableRow:
    """Columns of a claimable row (a mixin for declarative models)."""

    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))      # worker name
    claimed_by_process: Mapped[str | None] = mapped_column(String(128))  # its process (heartbeat)
    claimed_until: Mapped[datetime | None]
    claim_token: Mapped[int] = mapped_column(Integer, default=0)    # fencing token
    first_attempt_at: Mapped[datetime | None]                       # when it was first claimed
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


@dataclass(frozen=True)
class Claim:
    """What a worker holds: the row and the fencing token of its claim."""

    row_id: int
    token: int
    worker: str


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped; attempts beyond max_attempts go dead."""

    initial: float = 1.0
    maximum: float = 600.0
    max_attempts: int = 10

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** max(0, attempts - 1)))
        return (rng or random).uniform(ceiling / 2, ceiling)


def due_condition(model: type[ClaimableRow], now: datetime,
                  dead_processes: Sequence[str] = ()) -> Any:
    """Rows a worker may claim: pending and due, or in flight under a claim that ended (its lease
    ran out, or its process is known dead)."""
    ended = model.claimed_until < now
    if dead_processes:
        ended = or_(ended, model.claimed_by_process.in_(list(dead_processes)))
    return or_(and_(model.state == "pending", model.next_attempt_at <= now),
               and_(model.state == "in_flight", ended))


def claim(*, session: Session, query: Select, worker: str, process: str, now: datetime,
          lease: timedelta, limit: int) -> list[Any]:
    """Claim the rows ``query`` selects (it must already filter with :func:`due_condition`), at
    most ``limit``, skipping rows another transaction holds. A row taken from a claimer that
    ended counts that claimer's attempt, and is logged and counted: that wait is otherwise silent."""
    rows = list(session.scalars(query.limit(limit).with_for_update(skip_locked=True)))
    for row in rows:
        if row.state == "in_flight":
            row.attempts += 1
            _log_taken_back(row, now)
        row.state = "in_flight"
        row.claimed_by = worker
        row.claimed_by_process = process
        row.claimed_until = now + lease
        row.claim_token = (row.claim_token or 0) + 1
        row.first_attempt_at = row.first_attempt_at or now
        row.updated_at = now
    session.flush()
    return rows


def _log_taken_back(row: Any, now: datetime) -> None:
    reason = "lease_ended" if row.claimed_until is None or row.claimed_until < now else "process_gone"
    CLAIMS_RECOVERED.labels(row.__tablename__, reason).inc()
    log.warning("took back a claim whose claimer ended", extra={
        "queue": row.__tablename__, "row": row.id, "reason": reason, "worker": row.claimed_by,
        "process_id": row.claimed_by_process,
        "in_flight_seconds": int((now - row.updated_at).total_seconds()) if row.updated_at else None})


def orphaned(*, session: Session, model: type[ClaimableRow], alive: Select) -> dict[str, int]:
    """{process: in-flight rows} for claims whose process is not among ``alive`` (a select of
    process names): the rows :func:`due_condition` may take back at once."""
    rows = session.execute(
        select(model.claimed_by_process, func.count())
        .where(model.state == "in_flight", model.claimed_by_process.is_not(None),
               model.claimed_by_process.not_in(alive))
        .group_by(model.claimed_by_process))
    return {process: count for process, count in rows}


def claim_of(row: ClaimableRow) -> Claim:
    return Claim(row.id, row.claim_token, row.claimed_by or "")


def held(*, session: Session, model: type[Row], claim: Claim, lock: bool = True) -> Row:
    """The row (locked, unless ``lock`` is off for a read-only check) if ``claim`` still holds
    it; ClaimLost otherwise."""
    row = session.get(model, claim.row_id, with_for_update=lock)
    if row is None:
        raise NotFound(f"{model.__tablename__} row {claim.row_id} does not exist")
    if row.state != "in_flight" or row.claim_token != claim.token:
        raise ClaimLost(f"{model.__tablename__} row {claim.row_id} is no longer claimed by "
                        f"{claim.worker} (state {row.state}, claimed by {row.claimed_by})")
    return row


def renew(*, session: Session, model: type[ClaimableRow], claim: Claim, until: datetime) -> None:
    """Extend a claim (before a remote request, between retries); ClaimLost if it was lost."""
    held(session=session, model=model, claim=claim).claimed_until = until


def _unclaim(row: ClaimableRow, state: str, now: datetime) -> None:
    row.state = state
    row.claimed_by = None
    row.claimed_by_process = None
    row.claimed_until = None
    row.updated_at = now


def complete(*, session: Session, model: type[ClaimableRow], claim: Claim, now: datetime) -> None:
    row = held(session=session, model=model, claim=claim)
    row.last_error = None
    _unclaim(row, "done", now)


def fail(*, session: Session, model: type[ClaimableRow], claim: Claim, error: str,
         transient: bool, now: datetime, backoff: Backoff, retry_after: float | None = None) -> str:
    """Record a failed attempt: back off and retry a transient error, dead-letter a permanent one
    or one that ran out of attempts. Returns the new state."""
    row = held(session=session, model=model, claim=claim)
    row.attempts += 1
    row.last_error = error
    if transient and row.attempts < backoff.max_attempts:
        delay = max(backoff.delay(row.attempts), retry_after or 0.0)
        row.next_attempt_at = now + timedelta(seconds=delay)
        _unclaim(row, "pending", now)
    else:
        _unclaim(row, "dead", now)
    return row.state


def release(*, session: Session, model: type[ClaimableRow], claim: Claim, now: datetime) -> None:
    """Hand a claimed row back untouched (a clean shutdown before the work was attempted)."""
    _unclaim(held(session=session, model=model, claim=claim), "pending", now)


def retry_dead(*, session: Session, model: type[Row], row_id: int, now: datetime) -> Row:
    """An operator's retry of a dead row: pending again, attempts counted afresh. The earlier
    attempts' start time stays, so a retried write still looks for what they may have done."""
    row = session.get(model, row_id, with_for_update=True)
    if row is None or row.state != "dead":
        raise NotFound(f"dead letter {row_id} does not exist (or is not dead)")
    row.state = "pending"
    row.attempts = 0
    row.next_attempt_at = now
    row.updated_at = now
    return row
