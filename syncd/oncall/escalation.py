"""Escalation: from "this incident pages" to notification rows, step by step, until someone
acknowledges (DESIGN.md, "The flow of one change"; invariant 6).

Two halves. :meth:`Escalations.on_incident_change` is an incident-change hook: in the transaction
of the change it starts an escalation (the service's policy copied onto the row, first step due at
once), or stops it (acknowledged, resolved). :meth:`Escalations.cycle` is the supervisor's loop:
it takes one due row at a time with ``FOR UPDATE SKIP LOCKED`` (replicas fire side by side, never
the same step twice), fires its rule (a notification row per person, contact and step, unique in
the store), and moves the row to its next step: the next rule ``escalate_after`` later, the policy
again ``repeat`` times, then done. Low urgency notifies the first rule's targets once. An
acknowledgement that outlives the service's ``ack_timeout`` re-triggers the incident, and the
policy starts again from its first rule.

Escalation never sends anything itself: the notification sender does (syncd.notify.sender).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.incidents import service as incident_service
from syncd.incidents.fields import incident_fields
from syncd.incidents.hooks import IncidentChange
from syncd.incidents.models import Incident
from syncd.metrics import ESCALATIONS, TIME_TO_ACKNOWLEDGE
from syncd.notify import service as notify_service
from syncd.notify.links import AckLinks
from syncd.oncall import paging, schedules
from syncd.oncall import service as oncall_service
from syncd.oncall.definitions import EscalationPolicy, Service, User
from syncd.oncall.models import Escalation
from syncd.oncall.schedules import OverrideSpan
from syncd.response_files import ResponseSet
from syncd.store.db import transaction

log = logging.getLogger(__name__)

ACTOR = "syncd"
SOURCE = "escalation"
STEPS_PER_CYCLE = 500
STEPS_PER_BATCH = 50            # due rows fired in one transaction
RETRY_FAILED_STEP = timedelta(seconds=30)
# A step this late (the daemon was down) is fired now and the next one timed from now, so an
# outage does not end in every rule of the policy paging at once.
LATE_STEP = timedelta(seconds=5)


class Escalations:
    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock,
                 responses: Callable[[], ResponseSet], ack_links: AckLinks | None,
                 propagate: Callable[..., None], wake_sender: Callable[[], None] = lambda: None):
        """``propagate(session=, incident_id=, fields=, now=)`` carries an incident change made
        here (an acknowledgement timing out) to the linked tickets, as the commands do."""
        self.sessions = sessions
        self.clock = clock
        self.responses = responses
        self.ack_links = ack_links
        self.propagate = propagate
        self.wake_sender = wake_sender
        self.wake = threading.Event()

    # -- the hook: start and stop, in the change's transaction -----------------------------------
    def on_incident_change(self, session: Session, change: IncidentChange) -> None:
        responses = self.responses()
        if not change.created and not set(change.changes) & _paging_fields(responses):
            return                 # a title, a description: nothing paging depends on changed
        after = incident_fields(change.incident)
        before = {} if change.created else {
            **after, **{name: old for name, (old, _) in change.changes.items()}}
        service = paging.service_for(after, responses.services)
        escalation = self._escalation(session, change.incident.id)
        status = after.get("status")
        if escalation is not None and change.changed("status") and status != "triggered":
            self._stop(session, escalation, change, acknowledged=status == "acknowledged")
            return
        active = escalation is not None and escalation.state == "active"
        if service is None:
            if active:
                self._end(session, escalation, change, "its fields no longer match a service")
            return
        if active:
            reason = paging.stops_paging(before, after, service,
                                         running_urgency=escalation.urgency)
            if reason is not None:
                self._end(session, escalation, change, reason)
                return
        if paging.starts_paging(before, after, service,
                                last_urgency=escalation.urgency if escalation else None,
                                active=active,
                                from_alert=change.created and change.source == "alerts"):
            self.start(session, change.incident, service, urgency=paging.urgency_for(after, service),
                       now=change.now, escalation=escalation,
                       reason="created" if change.created else _start_reason(change))

    def _end(self, session: Session, escalation: Escalation, change: IncidentChange,
             reason: str) -> None:
        """A change made the incident one that no longer pages: finish, cancel what is not sent."""
        notify_service.cancel_pending(session=session, incident_id=change.incident.id,
                                      now=change.now, reason=reason)
        self._finish(session, escalation, change.now, reason, actor=change.actor,
                     source=change.source)

    def start(self, session: Session, incident: Incident, service: Service, *, urgency: str,
              now: datetime, escalation: Escalation | None = None,
              reason: str) -> Escalation | None:
        """Start (or restart from its first rule) the service's policy for this incident. A
        policy missing from the files (they validate references, so only a race with a reload)
        starts nothing: logged, never raised, since raising would roll back the change that
        started it (ADR 0008)."""
        policy = self.responses().escalation_policies.get(service.escalation_policy)
        if policy is None:
            log.error("a service's escalation policy is missing; not paging",
                      extra={"service": service.id, "policy": service.escalation_policy,
                             "incident_id": incident.id})
            return None
        if escalation is None:
            escalation = Escalation(incident_id=incident.id, origin="service", epoch=0,
                                    step_token=0, started_at=now)
            session.add(escalation)
        escalation.service_id = service.id
        escalation.policy_id = policy.id
        escalation.policy = policy_snapshot(policy)
        escalation.urgency = urgency
        escalation.ack_timeout_seconds = int(service.ack_timeout.total_seconds())
        escalation.state = "active"
        escalation.epoch = (escalation.epoch or 0) + 1
        escalation.rule_index = 0
        escalation.loop = 0
        escalation.next_step_at = now
        escalation.reason = None
        escalation.started_at = now
        escalation.updated_at = now
        session.flush()
        incident_service.append_timeline(
            session=session, incident_id=incident.id, at=now, kind="paging_started",
            actor=ACTOR, source=SOURCE,
            data={"service": service.id, "policy": policy.id, "urgency": urgency,
                  "priority": incident.priority, "reason": reason, "epoch": escalation.epoch})
        self.wake.set()
        return escalation

    def _stop(self, session: Session, escalation: Escalation, change: IncidentChange, *,
              acknowledged: bool) -> None:
        """Acknowledged: no more steps, but the incident re-triggers after the service's
        ack_timeout. Resolved: stopped for good. Later contacts not yet due are cancelled."""
        if escalation.state not in ("active", "done", "acknowledged"):
            return
        if acknowledged and escalation.state == "acknowledged":
            return
        now = change.now
        was_active = escalation.state == "active"
        if acknowledged:
            escalation.state = "acknowledged"
            timeout = escalation.ack_timeout_seconds
            escalation.next_step_at = now + timedelta(seconds=timeout) if timeout else None
            if was_active:
                TIME_TO_ACKNOWLEDGE.labels(escalation.service_id or "").observe(
                    max(0.0, (now - escalation.started_at).total_seconds()))
        else:
            escalation.state = "stopped"
            escalation.next_step_at = None
        escalation.reason = f"{change.incident.status} by {change.actor or 'someone'} " \
                            f"in {change.source}"
        escalation.updated_at = now
        cancelled = notify_service.cancel_pending(
            session=session, incident_id=change.incident.id, now=now,
            reason=f"the incident was {change.incident.status} first")
        incident_service.append_timeline(
            session=session, incident_id=change.incident.id, at=now, kind="paging_stopped",
            actor=change.actor, source=change.source,
            data={"status": change.incident.status, "cancelled": cancelled,
                  "retrigger_at": escalation.next_step_at.isoformat()
                  if escalation.next_step_at else None})

    @staticmethod
    def _escalation(session: Session, incident_id: int) -> Escalation | None:
        return session.scalars(select(Escalation).where(
            Escalation.incident_id == incident_id, Escalation.origin == "service")
            .with_for_update()).one_or_none()

    # -- the loop: fire due steps -----------------------------------------------------------------
    def cycle(self) -> bool:
        """Fire due steps, a batch per transaction (the sender is woken after each); True when
        more are due."""
        self.wake.clear()
        fired = 0
        while fired < STEPS_PER_CYCLE:
            try:
                claimed, services = self._batch(careful=False)
            except Exception:
                log.warning("an escalation batch failed; firing its steps one at a time",
                            exc_info=True)
                claimed, services = self._batch(careful=True)
            if not claimed:
                break
            for service_id in services:         # counted once committed
                ESCALATIONS.labels(service_id).inc()
            fired += claimed
            self.wake_sender()
        return fired >= STEPS_PER_CYCLE

    def _batch(self, *, careful: bool) -> tuple[int, list[str]]:
        """Claim and fire one batch of due steps in one transaction: how many were claimed, and
        the services of the steps that paged. The fast way writes the whole batch in one
        flush; the careful way (after the fast one failed) gives each step a savepoint, so a
        step that cannot be fired (a bug, bad data) is put off and logged instead of blocking
        every page behind it."""
        with transaction(self.sessions) as session:
            now = self.clock.now()
            # The incident is locked with its escalation, skipping both when a command holds the
            # incident: commands lock incident then escalation (the hook), so taking the
            # escalation alone and then waiting on the incident would deadlock with them.
            due = session.execute(
                select(Escalation, Incident).join(Incident, Incident.id == Escalation.incident_id)
                .where(Escalation.state.in_(("active", "acknowledged")),
                       Escalation.next_step_at <= now)
                .order_by(Escalation.next_step_at, Escalation.id)
                .limit(STEPS_PER_BATCH).with_for_update(skip_locked=True,
                                                         of=(Escalation, Incident))).all()
            if not due:
                return 0, []
            overrides = oncall_service.overrides_by_schedule(session=session, since=now)
            paged: list[str] = []
            for escalation, incident in due:
                if not careful:
                    self._run(session, escalation, incident, now, overrides, paged)
                    continue
                fired: list[str] = []          # counted only once its savepoint holds
                try:
                    with session.begin_nested():
                        self._run(session, escalation, incident, now, overrides, fired)
                except Exception as error:
                    log.exception("an escalation step failed; moving on to the next rule",
                                  extra={"escalation": escalation.id,
                                         "incident_id": escalation.incident_id})
                    self._skip_step(session, escalation, now, error)
                else:
                    paged += fired
            return len(due), paged

    def _skip_step(self, session: Session, escalation: Escalation, now: datetime,
                   error: Exception) -> None:
        """A step that cannot be written (a bug, bad data) must not hold its escalation for
        ever: the next rule follows at once, and the timeline says what failed. If even that
        cannot be written, the step is tried again in 30 s."""
        session.refresh(escalation)
        try:
            with session.begin_nested():
                incident_service.append_timeline(
                    session=session, incident_id=escalation.incident_id, at=now,
                    kind="nobody_to_page", actor=ACTOR, source=SOURCE,
                    data={"rule": escalation.rule_index + 1,
                          "why": f"the step failed ({type(error).__name__}: {error})"[:300]})
                self._advance(session, escalation,
                              EscalationPolicy.model_validate(escalation.policy),
                              timedelta(0), now, now, nobody=True)
        except Exception:
            log.exception("could not move a failed escalation step on; retrying it later",
                          extra={"escalation": escalation.id})
            session.refresh(escalation)
            escalation.next_step_at = now + RETRY_FAILED_STEP
            escalation.updated_at = now

    def _run(self, session: Session, escalation: Escalation, incident: Incident, now: datetime,
             overrides: Mapping[str, list[OverrideSpan]], paged: list[str]) -> None:
        if escalation.state == "acknowledged":
            self._retrigger(session, escalation, incident, now)
        elif self._fire(session, escalation, incident, now, overrides):
            paged.append(escalation.service_id or "")

    def _fire(self, session: Session, escalation: Escalation, incident: Incident,
              now: datetime, overrides: Mapping[str, list[OverrideSpan]]) -> bool:
        """Fire the row's due rule; whether it paged anyone."""
        if incident.status != "triggered":       # changed outside the hooks (cannot, but be safe)
            escalation.state, escalation.next_step_at = "stopped", None
            escalation.reason = f"incident is {incident.status}"
            return False
        policy = EscalationPolicy.model_validate(escalation.policy)
        rule = policy.rules[escalation.rule_index]
        deadline = escalation.next_step_at or now
        responses = self.responses()
        paged: dict[str, str] = {}          # user id -> how they were reached (user / schedule)
        missing: list[dict[str, str]] = []
        for target in rule.targets:
            if target.user is not None:
                if target.user in responses.users:
                    paged.setdefault(target.user, f"user {target.user}")
                else:
                    missing.append({"user": target.user, "why": "no longer in the response files"})
                continue
            schedule = responses.schedules.get(target.schedule or "")
            on_call = None if schedule is None else schedules.on_call(
                schedule, now, overrides.get(schedule.id, []))
            if on_call is None:
                missing.append({"schedule": target.schedule or "",
                                "why": "nobody on call" if schedule else
                                       "no longer in the response files"})
            elif on_call in responses.users:
                paged.setdefault(on_call, f"schedule {target.schedule}")
            else:
                missing.append({"schedule": target.schedule or "", "user": on_call,
                                "why": "on call but no longer in the response files"})
        step = {"rule": escalation.rule_index + 1, "rules": len(policy.rules),
                "loop": escalation.loop + 1, "loops": policy.repeat + 1,
                "policy": policy.id, "urgency": escalation.urgency}
        for entry in missing:
            incident_service.append_timeline(
                session=session, incident_id=incident.id, at=now, kind="nobody_to_page",
                actor=ACTOR, source=SOURCE, data={**step, **entry})
        contacts = 0
        for user_id in paged:
            contacts += self._page(session, incident, escalation, responses.users[user_id],
                                   base=deadline if now - deadline < LATE_STEP else now, now=now)
        if paged:
            incident_service.append_timeline(
                session=session, incident_id=incident.id, at=now, kind="escalated",
                actor=ACTOR, source=SOURCE,
                data={**step, "paged": [{"user": user, "via": via} for user, via in paged.items()],
                      "contacts": contacts})
        self._advance(session, escalation, policy, rule.escalate_after, deadline, now,
                      nobody=not paged)
        return bool(paged)

    def _page(self, session: Session, incident: Incident, escalation: Escalation, user: User, *,
              base: datetime, now: datetime) -> int:
        rules = getattr(user.notification_rules, escalation.urgency)
        links = notify_service.ticket_links_of(incident)
        contacts: dict[str, timedelta] = {}
        for rule in rules:                  # one page per contact per step: the first rule's time
            contacts.setdefault(rule.contact, rule.after)
        for contact, after in contacts.items():
            notify_service.enqueue_page(
                session=session, incident=incident, escalation=escalation, user=user,
                contact=contact, after=after, now=base, ticket_links=links,
                ack_links=self.ack_links)
        if not rules:
            incident_service.append_timeline(
                session=session, incident_id=incident.id, at=now, kind="nobody_to_page",
                actor=ACTOR, source=SOURCE,
                data={"user": user.id, "why": f"no {escalation.urgency}-urgency contact rules"})
        return len(contacts)

    def _advance(self, session: Session, escalation: Escalation, policy: EscalationPolicy,
                 wait: timedelta, deadline: datetime, now: datetime, *, nobody: bool) -> None:
        """The row's next step. A rule that reached nobody hands over to the next one at once."""
        escalation.step_token += 1
        escalation.updated_at = now
        if escalation.urgency == "low" and not nobody:
            return self._finish(session, escalation, now,
                                "low urgency: notified once, never escalated")
        escalation.rule_index += 1
        if escalation.rule_index >= len(policy.rules):
            if escalation.loop >= policy.repeat:
                return self._finish(session, escalation, now,
                                    f"the policy ran {policy.repeat + 1} time(s) without an "
                                    f"acknowledgement")
            escalation.loop += 1
            escalation.rule_index = 0
        base = deadline if now - deadline < LATE_STEP else now
        escalation.next_step_at = now if nobody else base + wait

    @staticmethod
    def _finish(session: Session, escalation: Escalation, now: datetime, reason: str, *,
                actor: str | None = ACTOR, source: str = SOURCE) -> None:
        escalation.state = "done"
        escalation.next_step_at = None
        escalation.reason = reason
        incident_service.append_timeline(
            session=session, incident_id=escalation.incident_id, at=now, kind="escalation_done",
            actor=actor, source=source, data={"reason": reason, "policy": escalation.policy_id})

    def _retrigger(self, session: Session, escalation: Escalation, incident: Incident,
                   now: datetime) -> None:
        """The acknowledgement timed out: the incident is triggered again and the policy restarts
        (the row is restarted first, so the hook sees a running escalation and adds nothing)."""
        if incident.status != "acknowledged":
            escalation.state, escalation.next_step_at = "stopped", None
            return
        responses = self.responses()
        service = responses.services.get(escalation.service_id or "")
        if service is None or service.escalation_policy not in responses.escalation_policies:
            escalation.state, escalation.next_step_at = "stopped", None
            escalation.reason = f"service {escalation.service_id} is gone from the response files"
            return
        triggered = {**incident_fields(incident), "status": "triggered"}
        if not paging.pages_at(triggered, service):      # lowered out of page_on while acked
            return self._finish(session, escalation, now,
                                f"acknowledged at {incident.priority or 'no priority'}, below "
                                f"page_on: not re-triggered")
        self.start(session, incident, service, urgency=paging.urgency_for(triggered, service),
                   now=now, escalation=escalation, reason="acknowledgement timed out")
        diff = incident_service.update_incident(
            session=session, incident_id=incident.id, changes={"status": "triggered"}, now=now,
            actor=ACTOR, source=SOURCE)
        self.propagate(session=session, incident_id=incident.id,
                       fields={name: new for name, (_, new) in diff.items()}, now=now)


def _paging_fields(responses: ResponseSet) -> set[str]:
    """The incident fields whose change can start or stop paging: status, priority, urgency,
    service, and whatever the services match on."""
    fields = {"status", "priority", "urgency", "service"}
    for service in responses.services.values():
        fields.update(service.match)
    return fields


def policy_snapshot(policy: EscalationPolicy) -> dict[str, Any]:
    """The policy as the escalation row keeps it: JSON that validates back into the same policy
    (durations in seconds, the form the response files accept)."""
    data = policy.model_dump(mode="json", exclude={"rules"})
    data["rules"] = [{"targets": [target.model_dump(exclude_none=True) for target in rule.targets],
                      "escalate_after": f"{int(rule.escalate_after.total_seconds())}s"}
                     for rule in policy.rules]
    return data


def _start_reason(change: IncidentChange) -> str:
    if change.changed("priority"):
        old, new = change.changes["priority"]
        return f"priority {old or '(none)'} → {new}"
    if change.changed("status"):
        return f"re-opened ({change.changes['status'][0]} → triggered)"
    return "urgency raised"
