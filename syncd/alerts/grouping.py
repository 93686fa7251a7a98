"""Alert grouping and severity, pure: which group an alert joins (its grouping key) and what
priority and urgency its incident gets. No store, no clock."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from syncd.alerts.events import AlertEvent
from syncd.oncall.definitions import AlertGrouping, Service


@dataclass(frozen=True)
class Severity:
    priority: str
    urgency: str


SEVERITY = {"critical": Severity("P1", "high"), "error": Severity("P2", "high"),
            "warning": Severity("P3", "low"), "info": Severity("P4", "low")}


def incident_fields_for(severity: str, service: Service) -> dict[str, str]:
    """Priority and urgency of an incident opened by an alert of this severity: the service's
    ``severities`` where it names this one, else the defaults."""
    mapped = service.severities.get(severity) or SEVERITY[severity]
    return {"priority": mapped.priority, "urgency": mapped.urgency}


def grouping_key(event: AlertEvent, grouping: AlertGrouping) -> str | None:
    """The key of the group the alert joins, or None when every alert opens its own incident.
    Time grouping puts all of a service's alerts under one key; content grouping hashes the
    named fields' values (a missing field counts as empty, as in PagerDuty), so the key fits the
    index whatever the values' length."""
    if grouping.type == "none":
        return None
    if grouping.type == "time":
        return "time"
    # A missing field, null and "" all count as empty, as the docstring (and PagerDuty) say.
    values = ["" if value is None else value
              for value in (event.field_value(name) for name in grouping.fields)]
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode())
    return "content:" + digest.hexdigest()[:56]
