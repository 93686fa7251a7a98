"""Response files for the on-call tests: people, an office-hours-and-nights schedule that leaves
weekend days uncovered, a round-the-clock one, and a service paging through the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.response_files import ResponseSet, load_response_files

RESPONSES = """
users:
  - {id: alice, name: Alice Adams, email: alice@example.com, time_zone: Europe/Berlin}
  - {id: bob, name: Bob Brown, email: bob@example.com}
  - {id: carol, name: Carol Clark, email: carol@example.com}
  - {id: dave, name: Dave Dunn, email: dave@example.com}
  - {id: erin, name: Erin Evans, email: erin@example.com}

schedules:
  - id: payments-primary
    name: Payments primary
    time_zone: Europe/Berlin
    layers:
      - name: weekdays
        start: "2026-11-02T09:00"
        rotation: weekly
        users: [alice, bob]
        restrictions:
          - {days: [mon, tue, wed, thu, fri], from: "09:00", to: "18:00"}
      - name: nights
        start: "2026-11-02T18:00"
        rotation: daily
        users: [carol, dave]
        restrictions:
          - {from: "18:00", to: "09:00"}
  - id: search
    name: Search
    time_zone: America/New_York
    layers:
      - {name: all, start: "2026-11-02T09:00", rotation: daily, users: [bob, alice]}
  - id: unused
    name: Nobody pages this
    time_zone: UTC
    layers:
      - {name: all, start: "2027-01-01T00:00", rotation: weekly, users: [erin]}

escalation_policies:
  - id: payments
    rules:
      - targets: [{schedule: payments-primary}]
        escalate_after: 10m
      - targets: [{user: erin}, {schedule: search}]
        escalate_after: 15m

services:
  - {id: payments-api, name: Payments API, escalation_policy: payments}
"""


@pytest.fixture
def responses(tmp_path: Path) -> ResponseSet:
    path = tmp_path / "oncall.yaml"
    path.write_text(RESPONSES)
    return load_response_files([path])
