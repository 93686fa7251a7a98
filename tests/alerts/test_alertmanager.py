"""A real Prometheus Alertmanager paging a real syncd daemon through its ``pagerduty_configs``
receiver, unchanged but for ``url:``: an Alertmanager group is one alert (its dedup key the
SHA-256 of the group key), the service's content grouping puts two groups of one component into
one incident, an alert resolving inside a still-firing group resolves nothing, and the group's
last resolved alert resolves the alert and, with its incident's other alerts, the incident.

Alertmanager comes from the Debian package ``prometheus-alertmanager``. Without it the test skips
with one line saying so, except under CI=true, where it fails: CI must run it.

Alertmanager is a Go binary and does not see faketime's clock, so an alert is resolved with an
``endsAt`` taken from Alertmanager's own ``startsAt``, never from Python's clock."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from syncd.config import load_config
from syncd.daemon import Daemon

from ..support import free_port, wait_until

BINARY = "prometheus-alertmanager"
ROUTING_KEY = "R0UTINGKEYALERTMANAGER0000000000"
TOKEN = "alertmanager-test-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

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
  - id: shop
    name: Shop
    escalation_policy: ops
    routing_key: "{ROUTING_KEY}"
    alert_grouping: {{fields: [component], window: 1h}}
"""

# group_wait and group_interval of 1 s: a new group is sent a second after its first alert, a
# changed one within a second; repeat_interval long, so nothing is sent only because time passed.
ALERTMANAGER_CONFIG = """\
global:
  resolve_timeout: 1h
route:
  receiver: syncd
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: syncd
    pagerduty_configs:
      - routing_key: "{routing_key}"
        url: "{url}"
        component: '{{{{ .CommonLabels.service }}}}'
        send_resolved: true
"""


@pytest.fixture(scope="module")
def alertmanager_binary() -> str:
    path = shutil.which(BINARY)
    if path is None:
        reason = f"{BINARY} not installed (Debian: apt-get install prometheus-alertmanager)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return path


@contextmanager
def running_syncd(folder: Path, store_url: str) -> Iterator[str]:
    """An in-process daemon with no connectors, only the response files; yields its base URL."""
    port = free_port()
    responses = folder / "oncall.yaml"
    responses.write_text(RESPONSES)
    config = folder / "syncd.yaml"
    config.write_text(f"""\
store: {{url: "{store_url}", auto_upgrade: true}}
http: {{listen: "127.0.0.1:{port}", api_tokens: ["{TOKEN}"]}}
response: {{files: ["{responses}"]}}
""")
    daemon = Daemon(load_config(config))
    try:
        daemon.open()
        daemon.start()
        yield f"http://127.0.0.1:{port}"
    finally:
        daemon.stop()


class Alertmanager:
    """An Alertmanager process on a free loopback port, clustering off, its state in ``folder``."""

    def __init__(self, binary: str, folder: Path, enqueue_url: str):
        folder.mkdir()
        config = folder / "alertmanager.yml"
        config.write_text(ALERTMANAGER_CONFIG.format(routing_key=ROUTING_KEY, url=enqueue_url))
        self.base = f"http://127.0.0.1:{free_port()}"
        self.log = folder / "alertmanager.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.path={folder / 'data'}",
                 f"--web.listen-address={self.base.removeprefix('http://')}",
                 "--cluster.listen-address=", "--log.level=debug"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_until("Alertmanager to be ready", self._ready, timeout=15)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Alertmanager exited: {self.log.read_text()}")
        return requests.get(f"{self.base}/-/ready", timeout=2).status_code == 200

    def stop(self) -> None:
        """Stop it and print its log, which pytest shows when the test failed."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        print(self.log.read_text())

    def fire(self, *labels: dict[str, str]) -> None:
        """Post firing alerts; no endsAt, so they last resolve_timeout (an hour)."""
        self._post([{"labels": label_set,
                     "annotations": {"summary": f"{label_set['alertname']} on "
                                                f"{label_set.get('instance', '?')}"}}
                    for label_set in labels])

    def resolve(self, *labels: dict[str, str]) -> None:
        """Post the alerts again ending when they started, by Alertmanager's clock: resolved."""
        started = {frozenset(alert["labels"].items()): alert["startsAt"]
                   for alert in self.alerts()}
        self._post([{"labels": label_set, "startsAt": started[frozenset(label_set.items())],
                     "endsAt": started[frozenset(label_set.items())]} for label_set in labels])

    def alerts(self) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.base}/api/v2/alerts", timeout=5)
        answer.raise_for_status()
        return answer.json()

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        answer = requests.post(f"{self.base}/api/v2/alerts", json=alerts, timeout=5)
        assert answer.status_code == 200, answer.text


@contextmanager
def running_alertmanager(binary: str, folder: Path, enqueue_url: str) -> Iterator[Alertmanager]:
    alertmanager = Alertmanager(binary, folder, enqueue_url)
    try:
        yield alertmanager
    finally:
        alertmanager.stop()


def group_dedup_key(**group_labels: str) -> str:
    """The dedup key Alertmanager sends for a group of the root route: the SHA-256 of the group
    key, the route's matchers (``{}`` at the root) and the group's labels, sorted."""
    labels = ", ".join(f'{name}="{value}"' for name, value in sorted(group_labels.items()))
    return hashlib.sha256(f"{{}}:{{{labels}}}".encode()).hexdigest()


class Syncd:
    """syncd's HTTP API as an operator reads it."""

    def __init__(self, base: str):
        self.base = base

    def alerts(self) -> dict[str, dict[str, Any]]:
        """The alerts by dedup key."""
        answer = requests.get(f"{self.base}/api/v1/alerts", headers=AUTH, timeout=5)
        answer.raise_for_status()
        return {alert["dedup_key"]: alert for alert in answer.json()["alerts"]}

    def incident(self, incident_id: int) -> dict[str, Any]:
        answer = requests.get(f"{self.base}/api/v1/incidents/{incident_id}", headers=AUTH,
                              timeout=5)
        answer.raise_for_status()
        return answer.json()

    def incident_ids(self) -> set[int]:
        answer = requests.get(f"{self.base}/api/v1/incidents", headers=AUTH, timeout=5)
        answer.raise_for_status()
        return {incident["id"] for incident in answer.json()["incidents"]}


LATENCY_WEB1 = {"alertname": "HighLatency", "service": "checkout", "instance": "web-1"}
LATENCY_WEB2 = {"alertname": "HighLatency", "service": "checkout", "instance": "web-2"}
ERRORS = {"alertname": "ErrorRate", "service": "checkout", "instance": "web-1"}
DISK = {"alertname": "DiskFull", "service": "storage", "instance": "db-1"}

LATENCY = group_dedup_key(alertname="HighLatency", service="checkout")
ERROR_RATE = group_dedup_key(alertname="ErrorRate", service="checkout")
DISK_FULL = group_dedup_key(alertname="DiskFull", service="storage")


def test_alertmanager_groups_page_syncd_and_resolve_it(alertmanager_binary, tmp_path,
                                                       empty_store_url):
    with running_syncd(tmp_path, empty_store_url) as base, running_alertmanager(
            alertmanager_binary, tmp_path / "alertmanager", f"{base}/v2/enqueue") as manager:
        syncd = Syncd(base)
        manager.fire(LATENCY_WEB1, LATENCY_WEB2, DISK)

        def both_groups_in_full() -> bool:
            alerts = syncd.alerts()
            return set(alerts) == {LATENCY, DISK_FULL} and \
                alerts[LATENCY]["custom_details"].get("num_firing") == "2"
        wait_until("both Alertmanager groups to reach syncd", both_groups_in_full, timeout=10)
        alerts = syncd.alerts()
        latency, disk = alerts[LATENCY], alerts[DISK_FULL]
        assert (latency["status"], latency["severity"], latency["component"],
                latency["service"]) == ("triggered", "error", "checkout", "shop")
        assert disk["component"] == "storage"
        assert latency["incident_id"] != disk["incident_id"], \
            "two groups of two components are two incidents"
        assert syncd.incident_ids() == {latency["incident_id"], disk["incident_id"]}
        checkout = syncd.incident(latency["incident_id"])
        assert (checkout["status"], checkout["priority"], checkout["fields"]["service"],
                checkout["title"]) == ("triggered", "P2", "shop", latency["summary"])
        assert [alert["dedup_key"] for alert in checkout["alerts"]] == [LATENCY]

        # A third group of the checkout component joins its incident; in the latency group one
        # of two alerts resolves, so Alertmanager sends a trigger again: nothing resolves.
        manager.fire(ERRORS)
        manager.resolve(LATENCY_WEB1)

        def errors_joined_and_one_latency_resolved() -> bool:
            alerts = syncd.alerts()
            return ERROR_RATE in alerts and \
                alerts[LATENCY]["custom_details"].get("num_resolved") == "1"
        wait_until("the new group and the changed one to reach syncd",
                   errors_joined_and_one_latency_resolved, timeout=10)
        alerts = syncd.alerts()
        assert alerts[ERROR_RATE]["incident_id"] == latency["incident_id"]
        assert [alert["dedup_key"] for alert in syncd.incident(latency["incident_id"])["alerts"]] \
            == [LATENCY, ERROR_RATE]
        assert alerts[LATENCY]["status"] == "triggered"
        assert alerts[LATENCY]["event_count"] >= 2
        assert syncd.incident(latency["incident_id"])["status"] == "triggered"
        assert len(syncd.incident_ids()) == 2

        # The latency group's last alert resolves: its alert resolves, the incident stays open
        # for the error-rate alert.
        manager.resolve(LATENCY_WEB2)
        wait_until("the latency group's resolve to reach syncd",
                   lambda: syncd.alerts()[LATENCY]["status"] == "resolved", timeout=10)
        assert syncd.alerts()[ERROR_RATE]["status"] == "triggered"
        assert syncd.incident(latency["incident_id"])["status"] == "triggered"

        manager.resolve(ERRORS, DISK)
        wait_until("every alert in syncd to resolve", lambda: {
            alert["status"] for alert in syncd.alerts().values()} == {"resolved"}, timeout=10)
        for incident_id in (latency["incident_id"], disk["incident_id"]):
            incident = syncd.incident(incident_id)
            assert incident["status"] == "resolved", incident
        assert len(syncd.alerts()) == 3, "a resolve opens nothing"
