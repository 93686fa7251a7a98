"""What people do to an incident from syncd itself (API, CLI, console): each command is one
transaction with the version check, and commits with the outbox rows that carry the change to
every linked ticket system. ``actor`` is who did it, taken from the credential they used."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping

from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.engine.connector_runtime import ConnectorRuntime
from syncd.engine.propagation import (
    propagate_comment,
    propagate_fields,
    propagate_new_incident,
)
from syncd.incidents import service as incident_service
from syncd.incidents.models import Comment, Incident
from syncd.store.db import transaction


class IncidentCommands:
    def __init__(self, *, sessions: sessionmaker[Session], runtimes: Mapping[str, ConnectorRuntime],
                 clock: Clock, email_of: Callable[[str | None], str | None] = lambda _: None):
        """``email_of(actor)``: the email of the person an actor names (a user of the response
        files, by id), or None; an acknowledgement by a known person assigns it to them."""
        self.sessions = sessions
        self.runtimes = runtimes
        self.clock = clock
        self.email_of = email_of

    def create(self, fields: Mapping[str, Any], *, actor: str | None, source: str) -> Incident:
        with transaction(self.sessions) as session:
            incident = incident_service.create_incident(session=session, fields=fields,
                                                        now=self.clock.now(), actor=actor,
                                                        source=source)
            propagate_new_incident(session=session, incident_id=incident.id,
                                   runtimes=self.runtimes, now=self.clock.now())
            return incident

    def update(self, incident_id: int, changes: Mapping[str, Any], *, actor: str | None,
               source: str, expected_version: int | None = None) -> dict[str, tuple[Any, Any]]:
        with transaction(self.sessions) as session:
            return self._update(session, incident_id, changes, actor=actor, source=source,
                                expected_version=expected_version)

    def acknowledge(self, incident_id: int, *, actor: str | None, source: str) -> dict:
        """Acknowledging twice changes nothing; a resolved incident cannot be acknowledged (as in
        PagerDuty: reopen it by setting its status instead). The status is read and written in
        one transaction under the version check, so a resolve in between cannot be overwritten.
        When the actor is a known person their email becomes the assignee, so the tickets show
        who took it (docs/oncall.md, "Acknowledging")."""
        with transaction(self.sessions) as session:
            incident = incident_service.get_incident(session=session, incident_id=incident_id,
                                                     for_update=True)
            if incident.status == "resolved":
                raise incident_service.InvalidTransition(
                    f"incident {incident_id} is resolved; it cannot be acknowledged")
            if incident.status == "acknowledged":
                return {}
            changes = {"status": "acknowledged"}
            assignee = self.email_of(actor)
            if assignee:
                changes["assignee"] = assignee
            return self._update(session, incident_id, changes, actor=actor,
                                source=source, expected_version=incident.version)

    def resolve(self, incident_id: int, *, actor: str | None, source: str,
                resolution: str | None = None) -> dict:
        """Resolving a resolved incident changes nothing (its resolution included)."""
        with transaction(self.sessions) as session:
            incident = incident_service.get_incident(session=session, incident_id=incident_id,
                                                     for_update=True)
            if incident.status == "resolved":
                return {}
            changes: dict[str, Any] = {"status": "resolved"}
            if resolution:
                changes["resolution"] = resolution
            return self._update(session, incident_id, changes, actor=actor, source=source,
                                expected_version=incident.version)

    def add_note(self, incident_id: int, body: str, *, author: str | None, source: str,
                 visibility: str = "internal") -> Comment:
        with transaction(self.sessions) as session:
            incident_service.get_incident(session=session, incident_id=incident_id)
            comment = incident_service.add_comment(session=session, incident_id=incident_id,
                                                   body=body, author=author,
                                                   visibility=visibility, origin=source,
                                                   now=self.clock.now())
            propagate_comment(session=session, incident_id=incident_id, comment_id=comment.id,
                              runtimes=self.runtimes, now=self.clock.now())
            return comment

    def _update(self, session: Session, incident_id: int, changes: Mapping[str, Any], *,
                actor: str | None, source: str, expected_version: int | None
                ) -> dict[str, tuple[Any, Any]]:
        return update_and_propagate(session=session, incident_id=incident_id, changes=changes,
                                    now=self.clock.now(), actor=actor, source=source,
                                    runtimes=self.runtimes, expected_version=expected_version)


def update_and_propagate(*, session: Session, incident_id: int, changes: Mapping[str, Any],
                         now: datetime, actor: str | None, source: str,
                         runtimes: Mapping[str, ConnectorRuntime],
                         expected_version: int | None = None) -> dict[str, tuple[Any, Any]]:
    """Change the incident and queue what really changed for every linked ticket system, in the
    caller's transaction: what a person's command does, and what syncd does on its own (alerts)."""
    diff = incident_service.update_incident(session=session, incident_id=incident_id,
                                            changes=changes, now=now, actor=actor, source=source,
                                            expected_version=expected_version)
    propagate_fields(session=session, incident_id=incident_id,
                     fields={name: new for name, (_, new) in diff.items()},
                     runtimes=runtimes, now=now)
    return diff
