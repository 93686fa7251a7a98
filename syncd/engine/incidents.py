"""What responders do to an incident from syncd itself (API, CLI, console): each change commits
with the outbox rows that carry it to every linked ticket system."""

from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.engine.propagation import propagate_comment, propagate_fields, propagate_new_incident
from syncd.engine.runtime import ConnectorRuntime
from syncd.store import service
from syncd.store.db import transaction
from syncd.store.models import Comment, Incident


class IncidentActions:
    def __init__(self, *, sessions: sessionmaker[Session], runtimes: Mapping[str, ConnectorRuntime],
                 clock: Clock):
        self.sessions = sessions
        self.runtimes = runtimes
        self.clock = clock

    def create(self, fields: Mapping[str, Any], *, actor: str | None, source: str) -> Incident:
        with transaction(self.sessions) as session:
            incident = service.create_incident(session=session, fields=fields, now=self.clock.now(),
                                               actor=actor, source=source)
            propagate_new_incident(session=session, incident_id=incident.id,
                                   runtimes=self.runtimes, now=self.clock.now())
            return incident

    def update(self, incident_id: int, changes: Mapping[str, Any], *, actor: str | None,
               source: str, expected_version: int | None = None) -> dict[str, tuple[Any, Any]]:
        with transaction(self.sessions) as session:
            diff = service.update_incident(session=session, incident_id=incident_id, changes=changes,
                                           now=self.clock.now(), actor=actor, source=source,
                                           expected_version=expected_version)
            propagate_fields(session=session, incident_id=incident_id,
                             fields={name: new for name, (_, new) in diff.items()},
                             runtimes=self.runtimes, now=self.clock.now())
            return diff

    def acknowledge(self, incident_id: int, *, actor: str | None, source: str) -> dict:
        """Acknowledging twice changes nothing; a resolved incident cannot be acknowledged (as in
        PagerDuty: reopen it by setting its status instead)."""
        with transaction(self.sessions) as session:
            status = service.get_incident(session=session, incident_id=incident_id).status
        if status == "resolved":
            raise service.InvalidTransition(f"incident {incident_id} is resolved; it cannot be "
                                            f"acknowledged")
        if status == "acknowledged":
            return {}
        return self.update(incident_id, {"status": "acknowledged"}, actor=actor, source=source)

    def resolve(self, incident_id: int, *, actor: str | None, source: str,
                resolution: str | None = None) -> dict:
        changes: dict[str, Any] = {"status": "resolved"}
        if resolution:
            changes["resolution"] = resolution
        return self.update(incident_id, changes, actor=actor, source=source)

    def add_note(self, incident_id: int, body: str, *, author: str | None, source: str,
                 visibility: str = "internal") -> Comment:
        with transaction(self.sessions) as session:
            service.get_incident(session=session, incident_id=incident_id)
            comment = service.add_comment(session=session, incident_id=incident_id, body=body,
                                          author=author, visibility=visibility, origin=source,
                                          now=self.clock.now())
            propagate_comment(session=session, incident_id=incident_id, comment_id=comment.id,
                              runtimes=self.runtimes, now=self.clock.now())
            return comment
