"""Incident store reads and writes, as keyword-only functions that take the session explicitly.

Nothing here commits: the caller's transaction decides what lands together (an incident change, its
timeline entries and its outbox rows commit as one, invariant 2).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from syncd.incidents import hooks
from syncd.incidents.fields import InvalidField, incident_fields, validate_fields
from syncd.incidents.models import Comment, Incident, TimelineEntry
from syncd.store.errors import NotFound, StoreError

__all__ = ["InvalidField", "InvalidTransition", "NotFound", "StoreError", "VersionConflict"]


class VersionConflict(StoreError):
    """Someone else changed the incident since the caller read it (optimistic concurrency)."""


class InvalidTransition(StoreError):
    """The incident's status does not allow the command (e.g. acknowledging a resolved one)."""


def create_incident(*, session: Session, fields: Mapping[str, Any], now: datetime,
                    actor: str | None, source: str) -> Incident:
    fields = dict(fields)
    fields.setdefault("status", "triggered")
    fields.setdefault("description", "")
    validate_fields(fields)
    if "title" not in fields:
        raise InvalidField("title is required")
    incident = Incident(created_at=now, updated_at=now, version=1, custom={},
                        field_changed_at={name: now.isoformat() for name in fields})
    _assign(incident, fields, now)
    session.add(incident)
    session.flush()
    created = incident_fields(incident)
    append_timeline(session=session, incident_id=incident.id, at=now, kind="incident_created",
                    actor=actor, source=source, data={"fields": created})
    hooks.run(session, hooks.IncidentChange(
        incident=incident, changes={name: (None, value) for name, value in created.items()},
        created=True, now=now, actor=actor, source=source))
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
                    expected_version: int | None = None,
                    changed_at: datetime | None = None) -> dict[str, tuple[Any, Any]]:
    """Apply field changes with a version check; returns {field: (old, new)} of what really changed
    and records it on the timeline. A version mismatch raises VersionConflict and changes nothing.
    ``changed_at`` is when the change was really made, if not ``now`` (a remote edit applied later
    by a poll): ``newest_wins`` compares it per field (:func:`field_changed_at`)."""
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
    values["field_changed_at"] = {**(incident.field_changed_at or {}),
                                  **{name: (changed_at or now).isoformat() for name in diff}}
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
    hooks.run(session, hooks.IncidentChange(incident=incident, changes=diff, created=False,
                                            now=now, actor=actor, source=source))
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


def field_changed_at(incident: Incident, name: str) -> datetime:
    """When the store last changed ``name`` (its creation time if never since)."""
    stamp = (incident.field_changed_at or {}).get(name)
    return datetime.fromisoformat(stamp) if stamp else incident.created_at


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


# -- comments ----------------------------------------------------------------------------------

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


def comments(*, session: Session, incident_id: int) -> list[Comment]:
    return list(session.scalars(select(Comment).where(Comment.incident_id == incident_id)
                                .order_by(Comment.id)))
