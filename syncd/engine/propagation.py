"""Turning a store change into outbox rows for the systems that must hear of it.

Called inside the transaction that made the change, so the change and its deliveries commit
together (invariant 2).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from sqlalchemy.orm import Session

from syncd.engine import service as sync_service
from syncd.engine.connector_runtime import ConnectorRuntime


def propagate_fields(*, session: Session, incident_id: int, fields: Mapping[str, Any],
                     runtimes: Mapping[str, ConnectorRuntime], now: datetime,
                     skip: str | None = None) -> None:
    """Queue an update of the given canonical fields to every linked connector but ``skip`` (the
    system the change came from). The row's values are informational: the delivery reads the
    incident when it runs, so the newest value always goes out."""
    if not fields:
        return
    for name in runtimes:
        if name == skip:
            continue
        if _linked_or_being_created(session, incident_id, name):
            sync_service.enqueue(session=session, incident_id=incident_id, connector=name,
                            operation="update", fields=dict(fields), now=now)


def propagate_new_incident(*, session: Session, incident_id: int,
                           runtimes: Mapping[str, ConnectorRuntime], now: datetime,
                           skip: str | None = None) -> None:
    """Queue a create on every connector that creates tickets for new incidents."""
    for name, runtime in runtimes.items():
        if name != skip and runtime.create_tickets:
            sync_service.enqueue(session=session, incident_id=incident_id, connector=name,
                            operation="create", fields={}, now=now)


def propagate_comment(*, session: Session, incident_id: int, comment_id: int,
                      runtimes: Mapping[str, ConnectorRuntime], now: datetime,
                      skip: str | None = None) -> None:
    for name in runtimes:
        if name != skip and _linked_or_being_created(session, incident_id, name):
            sync_service.enqueue(session=session, incident_id=incident_id, connector=name,
                            operation="comment", fields={"comment_id": comment_id}, now=now)


def _linked_or_being_created(session: Session, incident_id: int, connector: str) -> bool:
    if sync_service.link_for(session=session, incident_id=incident_id, connector=connector) is not None:
        return True
    return sync_service.has_open_create(session=session, incident_id=incident_id, connector=connector)
