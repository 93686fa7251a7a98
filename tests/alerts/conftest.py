"""An alert intake on the parametrized store with a movable clock: four services with their
routing keys (one per grouping kind, one that keeps its incident open), the escalation and the
alerts' incident-change hooks installed, and the Events API in front (TestClient, or a real
uvicorn server for real clients)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from syncd.alerts import service as alert_service
from syncd.alerts.intake import AlertIntake
from syncd.alerts.models import Alert, AlertGroup, ChangeEvent
from syncd.api.alerts import alert_router, events_router
from syncd.api.auth import ApiToken, bearer_actor
from syncd.api.incidents import incident_detail
from syncd.clock import ManualClock
from syncd.incidents import hooks
from syncd.incidents.commands import IncidentCommands
from syncd.incidents.models import Incident, TimelineEntry
from syncd.oncall.escalation import Escalations
from syncd.oncall.models import Escalation
from syncd.response_files import ResponseFiles

START = datetime(2027, 3, 3, 10, 0, tzinfo=UTC)
TOKEN = "alerts-api-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS = {"none": "R0UTINGKEYNONE00000000000000000a", "time": "R0UTINGKEYTIME00000000000000000b",
        "content": "R0UTINGKEYCONTENT000000000000000", "keep": "R0UTINGKEYKEEP00000000000000000d"}

RESPONSES = f"""\
users:
  - id: alice
    name: Alice Adams
    email: alice@example.com
    contacts: {{mail: "json://127.0.0.1:9/alice"}}
schedules:
  - id: primary
    name: Primary
    time_zone: UTC
    layers:
      - {{name: always, start: "2020-01-06T00:00", rotation: weekly, users: [alice]}}
escalation_policies:
  - id: ops
    rules:
      - {{targets: [{{schedule: primary}}], escalate_after: 10m}}
services:
  - id: checkout
    name: Checkout
    escalation_policy: ops
    page_on: {{priority: [P1, P2]}}
    routing_key: "{KEYS['none']}"
  - id: storage
    name: Storage
    escalation_policy: ops
    page_on: {{priority: [P1, P2]}}
    routing_key: "{KEYS['time']}"
    alert_grouping: {{type: time, window: 5m}}
  - id: network
    name: Network
    escalation_policy: ops
    page_on: {{priority: [P1, P2]}}
    routing_key: "{KEYS['content']}"
    alert_grouping: {{window: 10m, fields: [component, custom_details.region]}}
  - id: batch
    name: Batch
    escalation_policy: ops
    routing_key: "{KEYS['keep']}"
    resolve_with_alerts: false
"""


def event(kind: str = "none", action: str = "trigger", **payload: Any) -> dict[str, Any]:
    """An Events API v2 body for one of the services (``dedup_key`` goes to the top level)."""
    body: dict[str, Any] = {"routing_key": KEYS[kind], "event_action": action}
    if "dedup_key" in payload:
        body["dedup_key"] = payload.pop("dedup_key")
    if action == "trigger":
        body["payload"] = {"summary": "Disk full on db-1", "source": "db-1.example.com",
                           "severity": "critical", **payload}
    return body


class AlertWorld:
    def __init__(self, store, tmp_path):
        self.store = store
        self.clock = ManualClock(START)
        path = tmp_path / "oncall.yaml"
        path.write_text(RESPONSES)
        self.responses = ResponseFiles([str(path)])
        self.escalations = Escalations(sessions=store.sessions, clock=self.clock,
                                       responses=self.responses.current, ack_links=None,
                                       propagate=lambda **_: None)
        hooks.install(store.sessions, self.escalations.on_incident_change)
        hooks.install(store.sessions, alert_service.on_incident_change)
        self.intake = AlertIntake(sessions=store.sessions, clock=self.clock,
                                  responses=self.responses.current)
        self.commands = IncidentCommands(sessions=store.sessions, runtimes={}, clock=self.clock)
        self.app = FastAPI()
        self.app.include_router(events_router(self.intake))
        self.app.include_router(alert_router(self.intake, bearer_actor([ApiToken("ops", TOKEN)])))
        self.client = TestClient(self.app)

    def post(self, body: Any, path: str = "/v2/enqueue"):
        return self.client.post(path, json=body)

    def trigger(self, kind: str = "none", **payload: Any) -> str:
        answer = self.post(event(kind, **payload))
        assert answer.status_code == 202, answer.text
        return answer.json()["dedup_key"]

    def send(self, kind: str, action: str, dedup_key: str):
        answer = self.post(event(kind, action, dedup_key=dedup_key))
        assert answer.status_code == 202, answer.text
        return answer.json()

    # -- reading the store ---------------------------------------------------------------------
    def incidents(self) -> list[Incident]:
        with self.store.transaction() as session:
            return list(session.scalars(select(Incident).order_by(Incident.id)))

    def incident(self, incident_id: int) -> dict[str, Any]:
        return incident_detail(SimpleNamespace(sessions=self.store.sessions), incident_id)

    def alerts(self) -> list[Alert]:
        with self.store.transaction() as session:
            return list(session.scalars(select(Alert).order_by(Alert.id)))

    def counts(self) -> dict[str, int]:
        """How many rows of each kind an event could have written."""
        with self.store.transaction() as session:
            return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                    for model in (Incident, Alert, AlertGroup, ChangeEvent, TimelineEntry,
                                  Escalation)}

    def timeline(self, incident_id: int) -> list[str]:
        return [entry["text"] for entry in self.incident(incident_id)["timeline"]]


@pytest.fixture
def world(store, tmp_path) -> AlertWorld:
    return AlertWorld(store, tmp_path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl, on the clock the test runs under)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@contextmanager
def served(app: FastAPI, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """``app`` behind a real uvicorn server on loopback (over https with ``tls``, a certificate
    and its key); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False,
        timeout_graceful_shutdown=1,
        ssl_certfile=str(tls[0]) if tls else None, ssl_keyfile=str(tls[1]) if tls else None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)           # waiting for a real server to listen, not for time to pass
    assert server.started, "uvicorn did not start"
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
