"""Incident-change hooks: what other domains do in the same transaction as an incident change.

Every change to an incident goes through :func:`syncd.incidents.service.create_incident` or
:func:`~syncd.incidents.service.update_incident`, from a ticket, the API, the CLI, an alert or
syncd itself. Those call :func:`run` before they return, inside the caller's transaction, so what
a hook writes (an escalation row, a play run) commits with the change or not at all (DESIGN.md,
"The flow of one change"). Hooks are installed on the session factory, so the daemon decides which
run and a store used without them (a migration, a test of the store alone) runs none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping

from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from syncd.incidents.models import Incident

_KEY = "syncd.incident_hooks"


@dataclass(frozen=True)
class IncidentChange:
    """One committed-together change: for a new incident every field is in ``changes`` as
    ``(None, value)`` and ``created`` is true."""

    incident: "Incident"
    changes: Mapping[str, tuple[Any, Any]]
    created: bool
    now: datetime
    actor: str | None
    source: str

    def changed(self, name: str) -> bool:
        return name in self.changes


Hook = Callable[[Session, IncidentChange], None]


def install(sessions: sessionmaker[Session], hook: Hook) -> None:
    """Run ``hook`` for every incident change made in sessions from this factory."""
    info = sessions.kw.setdefault("info", {})
    info.setdefault(_KEY, []).append(hook)


def run(session: Session, change: IncidentChange) -> None:
    for hook in session.info.get(_KEY, ()):
        hook(session, change)
