"""Alert store reads and writes: an event applied to the alerts and their incidents, change
events recorded, and what an incident change does to its alerts. Keyword-only, session passed
in, nothing commits: the caller's transaction makes the event durable before its 202.

Races are settled by the database, as Grafana OnCall does: a new alert or group is inserted in
a SAVEPOINT, and when the partial unique index says another request got there first the code
re-reads and joins that one instead of creating a second (no check-then-act).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syncd.alerts.events import AlertEvent, ChangeEventIn
from syncd.alerts.grouping import grouping_key, incident_fields_for
from syncd.alerts.models import Alert, AlertGroup, ChangeEvent
from syncd.engine.connector_runtime import ConnectorRuntime
from syncd.engine.propagation import propagate_new_incident
from syncd.incidents import service as incident_service
from syncd.incidents.commands import update_and_propagate
from syncd.incidents.hooks import IncidentChange
from syncd.incidents.models import Incident
from syncd.oncall.definitions import Service

ACTOR = "syncd"
SOURCE = "alerts"
RACE_RETRIES = 3          # a re-read after a conflict finds the winner; more means a bug
TITLE_LENGTH = 255


@dataclass(frozen=True)
class Applied:
    """What an event did: ``outcome`` is created (a new alert and incident), joined (a new alert
    in an open incident), repeated (added to an open alert), acknowledged, resolved, or
    dropped (an acknowledge or resolve for no open alert)."""

    dedup_key: str
    outcome: str
    alert_id: int | None = None
    incident_id: int | None = None


def apply_event(*, session: Session, event: AlertEvent, service: Service, now: datetime,
                runtimes: Mapping[str, ConnectorRuntime]) -> Applied:
    if event.action == "trigger":
        return _trigger(session, event, service, now, runtimes)
    alert = open_alert(session=session, service=service.id, dedup_key=event.dedup_key or "")
    if alert is None:
        return Applied(event.dedup_key or "", "dropped")
    if event.action == "acknowledge":
        return _acknowledge(session, alert, now, runtimes)
    return _resolve(session, alert, service, now, runtimes)


def open_alert(*, session: Session, service: str, dedup_key: str) -> Alert | None:
    return session.scalars(select(Alert).where(
        Alert.service == service, Alert.dedup_key == dedup_key, Alert.status != "resolved")
        .with_for_update()).one_or_none()


def _trigger(session: Session, event: AlertEvent, service: Service, now: datetime,
             runtimes: Mapping[str, ConnectorRuntime]) -> Applied:
    dedup_key = event.dedup_key or uuid.uuid4().hex
    for _ in range(RACE_RETRIES):
        alert = open_alert(session=session, service=service.id, dedup_key=dedup_key)
        if alert is not None:
            return _repeat(session, alert, event, now, runtimes)
        alert = Alert(service=service.id, dedup_key=dedup_key, status="triggered",
                      created_at=now, event_count=1)
        _copy_payload(alert, event, now)
        if _inserted(session, alert):
            break
    else:
        raise RuntimeError(f"alert {dedup_key!r} of service {service.id} kept conflicting")
    incident_id, outcome = _place(session, alert, event, service, now, runtimes)
    return Applied(dedup_key, outcome, alert.id, incident_id)


def _inserted(session: Session, row: Alert | AlertGroup) -> bool:
    """Insert ``row`` in a savepoint; False when a unique index says a racing request's row
    is already there (the savepoint is rolled back, the transaction goes on)."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
        return True
    except IntegrityError:
        return False


def _copy_payload(alert: Alert, event: AlertEvent, now: datetime) -> None:
    """The last payload wins, as in PagerDuty: summary, severity and details are the newest."""
    alert.severity = event.severity
    alert.summary = event.summary
    alert.source = event.source
    alert.component = event.component
    alert.group = event.group
    alert.class_ = event.class_
    alert.custom_details = event.custom_details
    alert.links = event.links
    alert.images = event.images
    alert.client = event.client
    alert.client_url = event.client_url
    alert.occurred_at = event.occurred_at
    alert.last_event_at = now


def _repeat(session: Session, alert: Alert, event: AlertEvent, now: datetime,
            runtimes: Mapping[str, ConnectorRuntime]) -> Applied:
    changed = alert.summary != event.summary or alert.severity != event.severity
    alert.event_count += 1
    _copy_payload(alert, event, now)
    if alert.incident_id is not None:
        _timeline(session, alert, "alert_repeated", now, count=alert.event_count)
        if changed:                          # the description lists summaries and severities
            session.flush()
            _update(session, alert.incident_id,
                    {"description": _description(session, alert.incident_id)}, now, runtimes)
    return Applied(alert.dedup_key, "repeated", alert.id, alert.incident_id)


def _place(session: Session, alert: Alert, event: AlertEvent, service: Service, now: datetime,
           runtimes: Mapping[str, ConnectorRuntime]) -> tuple[int, str]:
    """Put a new alert into its group's open incident, or open one (and the group)."""
    key = grouping_key(event, service.alert_grouping)
    if key is None:
        return _open_incident(session, alert, service, now, runtimes), "created"
    open_group = select(AlertGroup).where(
        AlertGroup.service == service.id, AlertGroup.grouping_key == key,
        AlertGroup.is_open.is_(True))
    for _ in range(RACE_RETRIES):
        found = session.scalars(open_group).one_or_none()
        if found is not None:
            # Incident first, then its group: the order every other path takes (a resolve
            # updates the incident, and its hook then the group), so no two lock in reverse.
            incident = incident_service.get_incident(session=session,
                                                     incident_id=found.incident_id,
                                                     for_update=True)
            group = session.scalars(open_group.with_for_update()).one_or_none()
            if group is None or group.id != found.id:
                continue                     # closed or replaced meanwhile: look again
            if now < group.window_ends_at and incident.status != "resolved":
                _join(session, alert, incident, now, runtimes)
                return incident.id, "joined"
            group.is_open = False            # its window is over: the next alert starts anew
            session.flush()
        group = AlertGroup(service=service.id, grouping_key=key, is_open=True, opened_at=now,
                           window_ends_at=now + service.alert_grouping.window)
        if _inserted(session, group):
            group.incident_id = _open_incident(session, alert, service, now, runtimes)
            return group.incident_id, "created"
    raise RuntimeError(f"alert group {key!r} of service {service.id} kept conflicting")


def _open_incident(session: Session, alert: Alert, service: Service, now: datetime,
                   runtimes: Mapping[str, ConnectorRuntime]) -> int:
    """The incident goes through create_incident, so its hooks run (paging starts per the
    service's page_on) and tickets are queued where connectors create them."""
    fields = {"title": _title(alert.summary), "description": describe_alerts([alert]),
              "service": service.id, **incident_fields_for(alert.severity, service)}
    incident = incident_service.create_incident(session=session, fields=fields, now=now,
                                                actor=ACTOR, source=SOURCE)
    alert.incident_id = incident.id
    propagate_new_incident(session=session, incident_id=incident.id, runtimes=runtimes, now=now)
    _timeline(session, alert, "alert_triggered", now)
    return incident.id


def _join(session: Session, alert: Alert, incident: Incident, now: datetime,
          runtimes: Mapping[str, ConnectorRuntime]) -> None:
    alert.incident_id = incident.id
    session.flush()
    _timeline(session, alert, "alert_joined", now)
    _update(session, incident.id, {"description": _description(session, incident.id)}, now,
            runtimes)


def _acknowledge(session: Session, alert: Alert, now: datetime,
                 runtimes: Mapping[str, ConnectorRuntime]) -> Applied:
    """An acknowledge event acknowledges its incident only when it is the incident's only alert:
    one source cannot speak for the others' problems."""
    if alert.status == "triggered":
        alert.status = "acknowledged"
        alert.acknowledged_at = now
        alert.last_event_at = now
        session.flush()
        if alert.incident_id is not None:
            _timeline(session, alert, "alert_acknowledged", now)
            incident = incident_service.get_incident(session=session,
                                                     incident_id=alert.incident_id)
            changes: dict[str, Any] = {"description": _description(session, incident.id)}
            if incident.status == "triggered" and _alert_count(session, incident.id) == 1:
                changes["status"] = "acknowledged"
            _update(session, incident.id, changes, now, runtimes)
    return Applied(alert.dedup_key, "acknowledged", alert.id, alert.incident_id)


def _resolve(session: Session, alert: Alert, service: Service, now: datetime,
             runtimes: Mapping[str, ConnectorRuntime]) -> Applied:
    alert.status = "resolved"
    alert.resolved_at = now
    alert.last_event_at = now
    session.flush()
    if alert.incident_id is not None:
        _timeline(session, alert, "alert_resolved", now)
        incident = incident_service.get_incident(session=session, incident_id=alert.incident_id)
        changes: dict[str, Any] = {"description": _description(session, incident.id)}
        if service.resolve_with_alerts and incident.status != "resolved" \
                and _alert_count(session, incident.id, open_only=True) == 0:
            changes.update(status="resolved", resolution="all its alerts resolved")
        _update(session, incident.id, changes, now, runtimes)
    return Applied(alert.dedup_key, "resolved", alert.id, alert.incident_id)


def _update(session: Session, incident_id: int, changes: Mapping[str, Any], now: datetime,
            runtimes: Mapping[str, ConnectorRuntime]) -> None:
    update_and_propagate(session=session, incident_id=incident_id, changes=changes, now=now,
                         actor=ACTOR, source=SOURCE, runtimes=runtimes)


def _alert_count(session: Session, incident_id: int, *, open_only: bool = False) -> int:
    query = select(func.count()).select_from(Alert).where(Alert.incident_id == incident_id)
    if open_only:
        query = query.where(Alert.status != "resolved")
    return session.scalar(query) or 0


def _timeline(session: Session, alert: Alert, kind: str, now: datetime, **extra: Any) -> None:
    assert alert.incident_id is not None
    incident_service.append_timeline(
        session=session, incident_id=alert.incident_id, at=now, kind=kind, actor=ACTOR,
        source=SOURCE, data={"alert_id": alert.id, "dedup_key": alert.dedup_key,
                             "summary": alert.summary, "severity": alert.severity,
                             "from": alert.source, **extra})


def _title(summary: str) -> str:
    return summary if len(summary) <= TITLE_LENGTH else summary[:TITLE_LENGTH - 1] + "…"


def describe_alerts(alerts: list[Alert]) -> str:
    """The incident's description: its alerts, one a line, with their status now."""
    lines = [f"Alerts ({len(alerts)}):"]
    lines += [f"- [{alert.status}] {alert.severity}: {alert.summary} (source {alert.source}, "
              f"dedup key {alert.dedup_key})" for alert in alerts]
    return "\n".join(lines)


def _description(session: Session, incident_id: int) -> str:
    return describe_alerts(incident_alerts(session=session, incident_id=incident_id))


# -- reads -----------------------------------------------------------------------------------

def incident_alerts(*, session: Session, incident_id: int) -> list[Alert]:
    return list(session.scalars(select(Alert).where(Alert.incident_id == incident_id)
                                .order_by(Alert.id)))


def list_alerts(*, session: Session, service: str | None = None, status: str | None = None,
                dedup_key: str | None = None, limit: int = 100, offset: int = 0) -> list[Alert]:
    query = select(Alert).order_by(Alert.id.desc()).limit(limit).offset(offset)
    if service:
        query = query.where(Alert.service == service)
    if status:
        query = query.where(Alert.status == status)
    if dedup_key:
        query = query.where(Alert.dedup_key == dedup_key)
    return list(session.scalars(query))


def alert_json(alert: Alert) -> dict[str, Any]:
    def stamp(value: datetime | None) -> str | None:
        return value.isoformat() if value else None
    return {"id": alert.id, "service": alert.service, "dedup_key": alert.dedup_key,
            "status": alert.status, "severity": alert.severity, "summary": alert.summary,
            "source": alert.source, "component": alert.component, "group": alert.group,
            "class": alert.class_, "custom_details": alert.custom_details, "links": alert.links,
            "images": alert.images, "incident_id": alert.incident_id,
            "event_count": alert.event_count, "timestamp": stamp(alert.occurred_at),
            "created_at": stamp(alert.created_at), "last_event_at": stamp(alert.last_event_at),
            "acknowledged_at": stamp(alert.acknowledged_at),
            "resolved_at": stamp(alert.resolved_at)}


# -- change events ---------------------------------------------------------------------------

def record_change_event(*, session: Session, event: ChangeEventIn, service: Service,
                        now: datetime) -> ChangeEvent:
    """Kept for the postmortem and put on every open incident of the service; never pages."""
    row = ChangeEvent(service=service.id, summary=event.summary, source=event.source,
                      occurred_at=event.occurred_at, custom_details=event.custom_details,
                      links=event.links, received_at=now)
    session.add(row)
    session.flush()
    open_incidents = session.scalars(select(Incident.id).where(
        Incident.service == service.id, Incident.status != "resolved"))
    for incident_id in open_incidents:
        incident_service.append_timeline(
            session=session, incident_id=incident_id, at=now, kind="change_event",
            actor=ACTOR, source=SOURCE,
            data={"change_event_id": row.id, "summary": event.summary, "links": event.links,
                  "from": event.source})
    return row


# -- the incident-change hook ----------------------------------------------------------------

def on_incident_change(session: Session, change: IncidentChange) -> None:
    """Acknowledging an incident acknowledges its triggered alerts; resolving it resolves its
    open alerts and closes its groups, so the next alert with one of their keys opens anew."""
    if not change.changed("status"):
        return
    incident_id = change.incident.id
    status = change.incident.status
    if status == "acknowledged":
        session.execute(update(Alert).where(Alert.incident_id == incident_id,
                                            Alert.status == "triggered")
                        .values(status="acknowledged", acknowledged_at=change.now)
                        .execution_options(synchronize_session="fetch"))
    elif status == "resolved":
        session.execute(update(Alert).where(Alert.incident_id == incident_id,
                                            Alert.status != "resolved")
                        .values(status="resolved", resolved_at=change.now)
                        .execution_options(synchronize_session="fetch"))
        session.execute(update(AlertGroup).where(AlertGroup.incident_id == incident_id,
                                                 AlertGroup.is_open.is_(True))
                        .values(is_open=False).execution_options(synchronize_session="fetch"))


def open_counts(*, session: Session) -> dict[str, int]:
    """{service: alerts not resolved}."""
    rows = session.execute(select(Alert.service, func.count())
                           .where(Alert.status != "resolved").group_by(Alert.service)).all()
    return {service: count for service, count in rows}

