"""When an incident pages, pure: which service it belongs to, its urgency, and whether a change
starts, stops or leaves its escalation alone. No store, no clock: data in, decision out."""

from __future__ import annotations

from typing import Any, Mapping

from syncd.oncall.definitions import Service

HIGH_BY_PRIORITY = ("P1", "P2")      # urgency by_priority: P1-P2 high, P3-P5 low (DESIGN.md)


def service_for(fields: Mapping[str, Any], services: Mapping[str, Service]) -> Service | None:
    """The incident's service: the one its ``service`` field names, else the first (in file order)
    whose ``match`` its canonical fields satisfy (every listed field has one of the values)."""
    named = fields.get("service")
    if named and named in services:
        return services[named]
    for service in services.values():
        if service.match and all(_value(fields, name) in values
                                 for name, values in service.match.items()):
            return service
    return None


def _value(fields: Mapping[str, Any], name: str) -> Any:
    if name.startswith("custom."):
        return (fields.get("custom") or {}).get(name[len("custom."):], fields.get(name))
    return fields.get(name)


def urgency_for(fields: Mapping[str, Any], service: Service) -> str:
    """The incident's own urgency when it has one (a ticket's urgency, an alert's severity), else
    the service's; ``by_priority`` reads the priority."""
    if fields.get("urgency") in ("high", "low"):
        return fields["urgency"]
    if service.urgency == "by_priority":
        return "high" if fields.get("priority") in HIGH_BY_PRIORITY else "low"
    return service.urgency


def pages_at(fields: Mapping[str, Any], service: Service) -> bool:
    """Whether an incident with these fields is one that pages: triggered, at a page_on priority."""
    return fields.get("status") == "triggered" and fields.get("priority") in service.page_on.priority


def starts_paging(before: Mapping[str, Any], after: Mapping[str, Any], service: Service, *,
                  last_urgency: str | None, active: bool, from_alert: bool = False) -> bool:
    """A change starts (or restarts) paging when the incident becomes one that pages (created at a
    page_on priority, raised into one, re-opened at one), or when it pages at low urgency and now
    is high (a raised priority under by_priority). Any other edit of a paging incident (a title,
    a note) starts nothing: a running escalation runs on, one that ran its course stays done.
    ``last_urgency`` is the urgency of the escalation that ran last (None: none did), ``active``
    whether it still runs. ``page_on`` is for incidents from tickets: one opened by an alert
    (``from_alert``) pages at its urgency, whatever its priority, as PagerDuty's do."""
    if from_alert and after.get("status") == "triggered" and last_urgency is None:
        return True
    if not pages_at(after, service):
        return False
    upgraded = last_urgency == "low" and urgency_for(after, service) == "high"
    if active:
        return upgraded
    return upgraded or not pages_at(before, service)


def stops_paging(before: Mapping[str, Any], after: Mapping[str, Any], service: Service, *,
                 running_urgency: str) -> str | None:
    """Why a change ends a running escalation of a still-triggered incident, or None: its
    priority was lowered out of page_on (the team decided it is not worth a page), or its urgency
    fell to low (low urgency never escalates; the first rule's people were paged already)."""
    if after.get("status") != "triggered":
        return None
    if pages_at(before, service) and not pages_at(after, service):
        return f"priority lowered to {after.get('priority') or '(none)'}, below page_on"
    if running_urgency == "high" and urgency_for(after, service) == "low":
        return "urgency lowered to low: low urgency does not escalate"
    return None
