"""Never page twice (DESIGN.md invariant 6): a `syncd run` killed with SIGKILL while a page is on
its way, then started again. The row it had claimed ends ``unknown`` (its message may have gone),
the receiver never gets that page a second time, and the escalation goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from syncd.simulators.servicenow import ServiceNowSimulator

from ..notify.receivers import JsonReceiver
from ..support import ENV, free_port, wait_until
from .conftest import (
    AUTH,
    incident,
    timeline_texts,
    write_paging_config,
    write_responses,
)

pytestmark = pytest.mark.slow

# A claim's deadline: the sender's send_timeout (10 s) and DEADLINE_MARGIN (5 s).
UNKNOWN_AFTER_SECONDS = 15


class Receiver(JsonReceiver):
    """A JSON webhook receiver whose first request is the one in flight when the daemon dies:
    by default it is held open until the test ends; ``kill_first`` SIGKILLs ``daemon_pid`` once
    the page is in hand and only then answers 200 (sent, never recorded). Every later request is
    answered 200 at once."""

    def __init__(self, *, kill_first: bool = False):
        self.daemon_pid: int | None = None
        self.daemon_killed_by_receiver = kill_first
        self.first_in_hand = threading.Event()
        super().__init__(on_request=self._first)
        self.thread.start()

    def _first(self, path: str, number: int) -> None:
        if number != 1:
            return
        self.first_in_hand.set()
        if self.daemon_killed_by_receiver:
            assert self.daemon_pid is not None
            os.kill(self.daemon_pid, signal.SIGKILL)
        else:
            self.release.wait(120)

    def stop(self) -> None:
        self.__exit__(None, None, None)


def start_syncd(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "syncd.cli", "run", "--config", str(config)],
                            env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                            stderr=open(log, "a"))


def serving(base: str) -> bool:
    return requests.get(f"{base}/healthz", timeout=1).status_code == 200


def page_in_flight_then_killed(tmp_path: Path, receiver: Receiver, *, second_rule: bool):
    """A daemon pages alice for a new P1, dies with the page in flight, and is started again;
    returns (the restarted process, its base URL, the incident id, the log file)."""
    sn = ServiceNowSimulator().start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    responses = write_responses(tmp_path, alice={"hook": receiver.url("alice")},
                                bob={"hook": receiver.url("bob")}, escalate_after="1m",
                                second_rule=second_rule)
    config = write_paging_config(tmp_path, f"sqlite:///{tmp_path / 'twice.db'}", port=port,
                                 responses=responses, sn_url=sn.base_url)
    log = tmp_path / "syncd.log"
    first = start_syncd(config, log)
    receiver.daemon_pid = first.pid
    try:
        wait_until("the daemon to serve", lambda: serving(base), timeout=30)
        created = requests.post(f"{base}/api/v1/incidents", headers=AUTH, timeout=5, json={
            "title": "Checkout down", "priority": "P1", "service": "checkout"})
        assert created.status_code == 201, created.text
        incident_id = created.json()["id"]
        assert receiver.first_in_hand.wait(15), "the page never reached the receiver"
        assert receiver.paths() == ["/alice"]
        if receiver.daemon_killed_by_receiver:
            first.wait(10)
        else:
            [row] = incident(base, incident_id)["notifications"]
            assert (row["user"], row["state"]) == ("alice", "sending")
            first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
        sn.stop()
    return start_syncd(config, log), base, incident_id, log


def alice_unknown(base: str, incident_id: int) -> bool:
    rows = [row for row in incident(base, incident_id)["notifications"] if row["user"] == "alice"]
    return [row["state"] for row in rows] == ["unknown"]


def check_alice_unknown(base: str, incident_id: int) -> None:
    detail = incident(base, incident_id)
    [alice] = [row for row in detail["notifications"] if row["user"] == "alice"]
    assert (alice["state"], alice["detail"], alice["sent_at"]) == (
        "unknown", "the sender stopped mid-send", None)
    assert "page to alice by hook: outcome unknown (the sender stopped mid-send)" in \
        timeline_texts(base, incident_id)


def test_killed_between_claim_and_send_the_page_is_unknown_and_the_next_rule_still_pages(
        tmp_path):
    """The receiver holds the page open (the daemon claimed, committed, and is sending) when the
    daemon dies. Bob's rule, a minute later, is paged by the restarted daemon."""
    receiver = Receiver()
    process = None
    try:
        process, base, incident_id, log = page_in_flight_then_killed(tmp_path, receiver,
                                                                     second_rule=True)
        wait_until("the restarted daemon to serve", lambda: serving(base), timeout=30)
        wait_until("the claimed page to be marked unknown",
                   lambda: alice_unknown(base, incident_id), timeout=UNKNOWN_AFTER_SECONDS + 15)
        check_alice_unknown(base, incident_id)
        wait_until("the next rule to page bob", lambda: "/bob" in receiver.paths(), timeout=75)
        wait_until("bob's page to be recorded as sent", lambda: [
            row["state"] for row in incident(base, incident_id)["notifications"]
            if row["user"] == "bob"] == ["sent"], timeout=15)
        assert receiver.paths() == ["/alice", "/bob"], "alice's page arrived twice"
        assert incident(base, incident_id)["escalation"]["state"] == "done"
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        receiver.stop()
    assert "Traceback" not in log.read_text()


def test_killed_after_the_send_before_its_outcome_is_recorded_the_page_is_not_sent_again(
        tmp_path):
    """The receiver has the page and SIGKILLs the daemon before answering: the message went,
    syncd never recorded it. The restarted daemon marks it unknown and does not resend it."""
    receiver = Receiver(kill_first=True)
    process = None
    try:
        process, base, incident_id, log = page_in_flight_then_killed(tmp_path, receiver,
                                                                     second_rule=False)
        wait_until("the restarted daemon to serve", lambda: serving(base), timeout=30)
        wait_until("the page to be marked unknown",
                   lambda: alice_unknown(base, incident_id), timeout=UNKNOWN_AFTER_SECONDS + 15)
        check_alice_unknown(base, incident_id)
        assert receiver.paths() == ["/alice"], "the page arrived twice"
        assert incident(base, incident_id)["escalation"]["state"] == "done"
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        receiver.stop()
    assert "Traceback" not in log.read_text()
