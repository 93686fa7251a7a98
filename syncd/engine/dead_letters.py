"""Dead letters of both directions as operators see them (CLI and API): one list, one retry.

Outbound dead letters are outbox rows that gave up (ids ``out-N``); inbound ones are remote
records that could not be applied (ids ``in-N``). A bare number means an outbound one, as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from syncd.engine import service as sync_service
from syncd.engine.models import InboundDeadLetter, OutboxItem
from syncd.store import queue
from syncd.store.errors import NotFound


def describe(row: OutboxItem | InboundDeadLetter) -> dict[str, Any]:
    if isinstance(row, InboundDeadLetter):
        return {"id": f"in-{row.id}", "direction": "in", "incident_id": row.incident_id,
                "connector": row.connector, "operation": "inbound",
                "fields": {"remote_id": row.remote_id, "remote_key": row.remote_key,
                           "version": row.version},
                "state": row.state, "attempts": row.attempts, "last_error": row.reason,
                "updated_at": row.updated_at.isoformat()}
    return {"id": f"out-{row.id}", "direction": "out", "incident_id": row.incident_id,
            "connector": row.connector, "operation": row.operation, "fields": row.fields,
            "state": row.state, "attempts": row.attempts, "last_error": row.last_error,
            "updated_at": row.updated_at.isoformat()}


def list_dead_letters(*, session: Session, connector: str | None = None) -> list[dict[str, Any]]:
    rows: list[Any] = [*sync_service.dead_letters(session=session, connector=connector),
                       *sync_service.inbound_dead_letters(session=session, connector=connector)]
    return [describe(row) for row in rows if row.state == "dead"]


def parse_id(value: str) -> tuple[str, int]:
    """("out"|"in", number) from ``out-12``, ``in-3`` or a bare ``12``; NotFound otherwise."""
    direction, _, number = value.rpartition("-") if "-" in value else ("out", "", value)
    if direction not in ("out", "in") or not number.isdigit():
        raise NotFound(f"dead letter {value!r} does not exist: ids look like out-12 or in-3")
    return direction, int(number)


def retry(*, session: Session, dead_letter_id: str, now: datetime) -> dict[str, Any]:
    """Queue a dead letter for another attempt (outbound: delivered again; inbound: re-read)."""
    direction, number = parse_id(dead_letter_id)
    if direction == "in":
        return describe(sync_service.retry_inbound_dead_letter(session=session, row_id=number, now=now))
    return describe(queue.retry_dead(session=session, model=OutboxItem, row_id=number, now=now))
