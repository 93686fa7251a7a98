"""Notification fixtures: an incident under escalation, people with contacts, a sender."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from syncd.incidents import service as incidents
from syncd.notify.sender import NotificationSender
from syncd.oncall.definitions import User
from syncd.oncall.models import Escalation
from syncd.response_files import ResponseSet


class People:
    """The response files' users, changeable between cycles (as a reload would)."""

    def __init__(self):
        self.users: dict[str, User] = {}

    def add(self, user_id: str, **contacts: str) -> User:
        user = User(id=user_id, name=user_id.title(), email=f"{user_id}@example.com",
                    contacts=contacts)
        self.users[user_id] = user
        return user

    def responses(self) -> ResponseSet:
        return ResponseSet(users=MappingProxyType(dict(self.users)))


@pytest.fixture
def people():
    return People()


def open_incident(store, clock, title="Payments API down"):
    """An incident and its escalation row, as escalation would have written them."""
    with store.transaction() as session:
        incident = incidents.create_incident(
            session=session, fields={"title": title, "priority": "P1", "service": "payments-api"},
            now=clock.now(), actor="beth", source="servicenow")
        escalation = Escalation(incident_id=incident.id, origin="service", service_id="payments-api",
                                policy_id="payments", policy={}, urgency="high",
                                ack_timeout_seconds=0, state="active", epoch=1, rule_index=0,
                                loop=0, next_step_at=None, step_token=1, started_at=clock.now(),
                                updated_at=clock.now())
        session.add(escalation)
        session.flush()
        return incident.id, escalation.id


@pytest.fixture
def make_sender(store, clock, people):
    def make(**options) -> NotificationSender:
        options.setdefault("worker_id", "sender-1")
        return NotificationSender(sessions=store.sessions, clock=clock,
                                  responses=people.responses, **options)
    return make
