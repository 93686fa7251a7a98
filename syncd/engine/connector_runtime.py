"""What the engine knows of each configured connector: the client, its live mapping and its role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from syncd.connectors.base import Connector
from syncd.incidents.fields import incident_fields

CORRELATION_PREFIX = "syncd-"


@dataclass
class ConnectorRuntime:
    name: str
    connector: Connector
    mapping: Callable[[], Any]        # returns the active Mapping (hot reload swaps it)
    create_incidents: bool = False    # a new matching remote record creates an incident
    create_tickets: bool = False      # a new incident creates a remote record here
    poll_interval: timedelta = timedelta(seconds=15)


def correlation_id(incident_id: int) -> str:
    """The id a created remote record carries, so a retry finds it instead of creating twice."""
    return f"{CORRELATION_PREFIX}{incident_id}"


def incident_id_from_correlation(value: str | None) -> int | None:
    if value and value.startswith(CORRELATION_PREFIX) and value[len(CORRELATION_PREFIX):].isdigit():
        return int(value[len(CORRELATION_PREFIX):])
    return None


def template_context(incident: Any) -> dict[str, Any]:
    """What mapping templates may name: the incident's canonical fields, its number and id, and
    its API address (relative: syncd does not know the name it is reached by)."""
    return {**incident_fields(incident), "number": incident.number, "id": incident.id,
            "url": f"/api/v1/incidents/{incident.id}"}
