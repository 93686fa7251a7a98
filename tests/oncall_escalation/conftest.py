"""An escalation set-up on a movable clock: response files, the hook installed on the store's
sessions, incident commands, and helpers to read the notification rows written."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from syncd.clock import ManualClock
from syncd.incidents import hooks
from syncd.incidents.commands import IncidentCommands
from syncd.notify.models import Notification
from syncd.oncall.escalation import Escalations
from syncd.oncall.models import Escalation
from syncd.response_files import ResponseFiles

# A Wednesday, 10:00 UTC: alice's day in the daily rotation below (2027-03-01 is day 0: alice).
START = datetime(2027, 3, 3, 10, 0, tzinfo=timezone.utc)

RESPONSES = """\
users:
  - id: alice
    name: Alice Adams
    email: alice@example.com
    contacts: {mail: "json://127.0.0.1:9/alice", phone: "json://127.0.0.1:9/alice-phone"}
    rules:
      high: [{contact: mail, after: 0m}, {contact: phone, after: 3m}]
      low: [{contact: mail, after: 0m}]
  - id: bob
    name: Bob Brown
    email: bob@example.com
    contacts: {mail: "json://127.0.0.1:9/bob"}
  - id: erin
    name: Erin Evans
    email: erin@example.com
    contacts: {mail: "json://127.0.0.1:9/erin"}
schedules:
  - id: primary
    name: Primary
    time_zone: UTC
    layers:
      - {name: days, start: "2027-03-01T00:00", rotation: daily, users: [alice, bob]}
  - id: empty
    name: Nobody yet
    time_zone: UTC
    layers:
      - {name: later, start: "2030-01-01T00:00", rotation: daily, users: [bob]}
escalation_policies:
  - id: payments
    repeat: 1
    rules:
      - {targets: [{schedule: primary}], escalate_after: 10m}
      - {targets: [{user: erin}], escalate_after: 15m}
  - id: nobody-first
    rules:
      - {targets: [{schedule: empty}], escalate_after: 10m}
      - {targets: [{user: erin}], escalate_after: 10m}
services:
  - id: payments-api
    name: Payments API
    escalation_policy: payments
    ack_timeout: 30m
    match: {group: [Payments]}
    page_on: {priority: [P1, P2]}
  - id: reports
    name: Reports
    escalation_policy: payments
    urgency: low
    match: {group: [Reports]}
    page_on: {priority: [P1, P2, P3]}
  - id: gaps
    name: Gappy
    escalation_policy: nobody-first
    match: {group: [Gaps]}
    page_on: {priority: [P1]}
"""


class Paging:
    def __init__(self, store, tmp_path, responses_text: str = RESPONSES):
        self.store = store
        self.clock = ManualClock(START)
        self.file = tmp_path / "oncall.yaml"
        self.file.write_text(textwrap.dedent(responses_text))
        self.responses = ResponseFiles([str(self.file)])
        self.escalations = Escalations(sessions=store.sessions, clock=self.clock,
                                       responses=self.responses.current, ack_links=None,
                                       propagate=lambda **_: None)
        hooks.install(store.sessions, self.escalations.on_incident_change)
        self.commands = IncidentCommands(sessions=store.sessions, runtimes={}, clock=self.clock)

    def incident(self, **fields) -> int:
        fields = {"title": "Checkout down", "priority": "P1", "group": "Payments", **fields}
        return self.commands.create(fields, actor="beth", source="servicenow").id

    def advance(self, minutes: float) -> None:
        self.clock.advance(minutes * 60)
        self.escalations.cycle()

    def pages(self, incident_id: int) -> list[tuple[str, str, str, str]]:
        """(user, contact, state, due in minutes after START) of every row, in order."""
        with self.store.transaction() as session:
            rows = session.scalars(select(Notification).where(
                Notification.incident_id == incident_id).order_by(Notification.id))
            return [(row.user_id, row.contact, row.state,
                     f"{(row.due_at - START).total_seconds() / 60:g}") for row in rows]

    def escalation(self, incident_id: int) -> Escalation:
        with self.store.transaction() as session:
            return session.scalars(select(Escalation).where(
                Escalation.incident_id == incident_id)).one()


@pytest.fixture
def paging(store, tmp_path):
    return Paging(store, tmp_path)
