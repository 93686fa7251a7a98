"""Three replicas racing over one PostgreSQL store through a whole escalation policy for 500
incidents: each replica has its own engine, escalation loop and notification sender; every due
page is delivered exactly once and none is missing (DESIGN.md invariant 6)."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from syncd.clock import ManualClock
from syncd.incidents import hooks
from syncd.incidents.commands import IncidentCommands
from syncd.incidents.models import Incident
from syncd.notify import throttle
from syncd.notify.channels import Delivery
from syncd.notify.models import Notification
from syncd.notify.sender import NotificationSender
from syncd.oncall.escalation import Escalations
from syncd.oncall.models import Escalation
from syncd.response_files import ResponseFiles
from syncd.store import db

INCIDENTS = 500
REPLICAS = 3
STEP = timedelta(minutes=5)
# (user, loop, rule index) of each step of the policy below, in the order they come due.
STEPS = [("alice", 0, 0), ("bob", 0, 1), ("alice", 1, 0), ("bob", 1, 1)]
# Unthrottled: each incident's page is its own message, so each delivery is one row.
NO_THROTTLE = throttle.Rate(messages=10 ** 6, per=timedelta(minutes=1))
START = datetime(2027, 3, 3, 10, 0, tzinfo=UTC)

pytestmark = pytest.mark.slow          # about 25 s: 2,000 pages through PostgreSQL

RESPONSES = """\
users:
  - {id: alice, name: Alice Adams, email: alice@example.com,
     contacts: {hook: "json://127.0.0.1:9/alice"}}
  - {id: bob, name: Bob Brown, email: bob@example.com, contacts: {hook: "json://127.0.0.1:9/bob"}}
schedules:
  - id: primary
    name: Primary
    time_zone: UTC
    layers: [{name: always, start: "2020-01-06T00:00", rotation: weekly, users: [alice]}]
escalation_policies:
  - id: payments
    repeat: 1
    rules:
      - {targets: [{schedule: primary}], escalate_after: 5m}
      - {targets: [{user: bob}], escalate_after: 5m}
services:
  - {id: payments-api, name: Payments API, escalation_policy: payments,
     match: {group: [Payments]}, page_on: {priority: [P1]}}
"""


class Deliveries:
    """What the replicas' senders delivered, tagged with the policy step the clock was at."""

    def __init__(self):
        self.lock = threading.Lock()
        self.step = 0
        self.seen: list[tuple[int, str, str]] = []    # (step, incident number, url)

    def deliver(self, url: str, *, title: str, body: str, timeout: float) -> Delivery:
        [number] = set(re.findall(r"SYN-\d+", title))
        with self.lock:
            self.seen.append((self.step, number, url))
        return Delivery("sent", "recorded by the test", 0.0)


def quiet(store, clock: ManualClock) -> bool:
    """Nothing due is left: no escalation step due, no page pending or being sent."""
    with store.transaction() as session:
        due = session.scalar(select(func.count()).select_from(Escalation).where(
            Escalation.state == "active", Escalation.next_step_at <= clock.now()))
        unsent = session.scalar(select(func.count()).select_from(Notification).where(
            Notification.state.in_(("pending", "sending"))))
        return due == 0 and unsent == 0


def test_three_replicas_deliver_every_page_of_500_escalations_exactly_once(postgres_store,
                                                                          tmp_path):
    store = postgres_store
    clock = ManualClock(START)
    (tmp_path / "oncall.yaml").write_text(RESPONSES)
    responses = ResponseFiles([str(tmp_path / "oncall.yaml")]).current
    hooks.install(store.sessions, Escalations(
        sessions=store.sessions, clock=clock, responses=responses, ack_links=None,
        propagate=lambda **_: None).on_incident_change)
    commands = IncidentCommands(sessions=store.sessions, runtimes={}, clock=clock)
    for index in range(INCIDENTS):
        commands.create({"title": f"Payments down {index}", "priority": "P1", "group": "Payments"},
                        actor="beth", source="servicenow")

    deliveries = Deliveries()
    stop = threading.Event()
    errors: list[BaseException] = []
    engines = [db.open_engine(store.url, pool_size=12) for _ in range(REPLICAS)]

    def replica(number: int, engine) -> None:
        sessions = db.session_factory(engine)
        escalations = Escalations(sessions=sessions, clock=clock, responses=responses,
                                  ack_links=None, propagate=lambda **_: None)
        sender = NotificationSender(sessions=sessions, clock=clock, responses=responses,
                                    worker_id=f"replica-{number}", deliver=deliveries.deliver,
                                    rate=NO_THROTTLE, batch_size=50)
        try:
            while not stop.is_set():
                busy = escalations.cycle() | sender.cycle()
                if not busy:
                    stop.wait(0.01)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=replica, args=(n, engine), name=f"replica-{n}")
               for n, engine in enumerate(engines, 1)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        for step in range(len(STEPS)):
            if step:
                with deliveries.lock:
                    deliveries.step = step
                clock.advance(STEP.total_seconds())
            deadline = time.monotonic() + 60
            # Quiet twice in a row: a replica between two transactions is seen the second time.
            while not (quiet(store, clock) and quiet(store, clock)):
                assert not errors, errors
                assert time.monotonic() < deadline, f"step {step + 1} never finished"
                stop.wait(0.05)
            assert not errors, errors
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for engine in engines:
            engine.dispose()
    assert not errors, errors
    elapsed = time.monotonic() - started

    with store.transaction() as session:
        numbers = {incident.number: incident.id for incident in session.scalars(select(Incident))}
        rows = session.scalars(select(Notification)).all()
        stored = Counter((row.incident_id, row.user_id, row.contact, row.epoch, row.loop,
                          row.rule_index) for row in rows)
        states = Counter(row.state for row in rows)
        claimers = Counter(row.claimed_by for row in rows)
        escalations = Counter(e.state for e in session.scalars(select(Escalation)))
    delivered = Counter()
    for step, number, url in deliveries.seen:
        user, loop, rule = STEPS[step]
        assert url == f"json://127.0.0.1:9/{user}", (step, number, url)
        delivered[(numbers[number], user, "hook", 1, loop, rule)] += 1
    expected = {(incident_id, user, "hook", 1, loop, rule)
                for incident_id in numbers.values() for user, loop, rule in STEPS}
    assert len(expected) == INCIDENTS * len(STEPS)
    assert set(delivered) == expected, "a due page is missing or an unexpected one went out"
    twice = {key: count for key, count in delivered.items() if count != 1}
    assert not twice, f"{len(twice)} pages delivered more than once, e.g. {list(twice)[:3]}"
    assert stored == Counter(expected)
    assert states == {"sent": INCIDENTS * len(STEPS)}
    assert escalations == {"done": INCIDENTS}
    assert len(claimers) > 1, f"one replica sent everything ({claimers}): no race took place"
    print(f"{INCIDENTS * len(STEPS)} pages by {dict(claimers)} in {elapsed:.1f}s")
