"""The running daemon: readiness, crashed workers, reconcile after downtime, mapping hot reload."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import requests
from sqlalchemy import select, text

from syncd.config import load_config
from syncd.connectors.base import SyncCursor
from syncd.daemon import Daemon
from syncd.engine import service as sync_service
from syncd.engine.models import OutboxItem
from syncd.engine.connector_runtime import ConnectorRuntime
from syncd.engine.supervisor import Supervisor
from syncd.engine.sync_engine import EngineSettings, SyncEngine
from syncd.incidents import service as incident_service
from syncd.metrics import RESPONSE_RELOADS, WORKER_RESTARTS
from syncd.simulators.base import Fault
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import ServiceNowSimulator
from syncd.store import db
from syncd.store.models import ProcessHeartbeat

from .support import ENV, SYNCD, free_port, syncd, wait_until, write_config


def test_readiness_reflects_store_auth_and_pause(tmp_path, monkeypatch):
    sn = ServiceNowSimulator().start()
    jira = JiraSimulator().start()
    for key, value in {**ENV, "JIRA_TOKEN": "wrong-token"}.items():
        monkeypatch.setenv(key, value)
    config = load_config(write_config(tmp_path, f"sqlite:///{tmp_path / 'r.db'}",
                                      sn_url=sn.base_url, jira_url=jira.base_url))
    daemon = Daemon(config)
    try:
        daemon.open()
        daemon.start()
        wait_until("both auth checks", lambda: len(daemon.auth_status) == 2)
        report = daemon.readiness()
        assert report["store"] == "ok" and report["connectors"]["servicenow"]["auth"] == "ok"
        assert not report["ready"] and "jira" in report["connectors"]["jira"]["auth"]
        assert daemon.engine is not None
        daemon.engine.inbound.pause("servicenow", "test pause")
        assert "test pause" in daemon.readiness()["connectors"]["servicenow"]["paused"]
    finally:
        daemon.stop()
        sn.stop()
        jira.stop()


class ExplodingConnector:
    """A connector whose poll hits a bug (not a remote error) the first few times."""

    name = "boom"

    def __init__(self, failures: int):
        self.failures = failures
        self.polls = 0
        self.polled = threading.Event()

    def fetch_changes(self, cursor, *, limit=500):
        self.polls += 1
        if self.polls <= self.failures:
            raise RuntimeError("bug in the poller")
        self.polled.set()
        return [], SyncCursor()

    def close(self):
        pass


def test_a_crashed_worker_is_restarted_with_backoff_and_counted(store, clock):
    connector = ExplodingConnector(failures=2)
    runtime = ConnectorRuntime("boom", connector, mapping=lambda: None,
                               poll_interval=timedelta(seconds=0.01))
    engine = SyncEngine(sessions=store.sessions, runtimes={"boom": runtime}, clock=clock,
                        settings=EngineSettings(outbox_workers=1, reconcile_after_downtime=None))
    supervisor = Supervisor(clock=clock, restart_initial=0.01)
    engine.register(supervisor)
    before = WORKER_RESTARTS.labels("poller-boom")._value.get()
    supervisor.start()
    try:
        assert connector.polled.wait(10), "the poller never came back"
        assert WORKER_RESTARTS.labels("poller-boom")._value.get() - before == 2
        wait_until("the poller to run again", lambda: supervisor.states()["poller-boom"]
                   == {"state": "running", "restarts": 2})
        assert supervisor.healthy()
    finally:
        supervisor.stop()


def replace_file(path, text: str) -> None:
    """Write ``text`` to ``path`` in one step (a rename), as editors and git do."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    os.replace(staged, path)


def test_a_broken_mapping_edit_is_refused_live_and_a_good_one_applied(tmp_path):
    sn = ServiceNowSimulator().start()
    mapping = tmp_path / "servicenow.yaml"
    from syncd.mapping import default_mapping_path
    original = default_mapping_path("servicenow").read_text()
    mapping.write_text(original)
    port = free_port()
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'h.db'}", sn_url=sn.base_url, port=port)
    path.write_text(path.read_text().replace("    poll_interval: 1s\n",
                                             f"    poll_interval: 1s\n    mapping: {mapping}\n", 1))
    process = subprocess.Popen([*SYNCD, "run", "--config", str(path)], env={**os.environ, **ENV},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def reloads(outcome):
        try:
            text = requests.get(f"{base}/metrics", timeout=2).text
        except requests.RequestException:
            return -1
        found = re.search(rf'syncd_mapping_reloads_total{{outcome="{outcome}"}} (\S+)', text)
        return float(found.group(1)) if found else 0.0

    try:
        wait_until("the daemon to serve", lambda: reloads("applied") >= 0)
        # Edits land whole (as an editor or `git checkout` writes them): a half-written file
        # read by the reload loop would be judged, and counted, on its own.
        replace_file(mapping, original.replace("canonical: title", "canonical: titel", 1))
        process.send_signal(signal.SIGHUP)
        wait_until("the broken edit to be refused", lambda: reloads("rejected") == 1)
        sn.human_create({"short_description": "still mapped", "impact": "3", "urgency": "3"})
        headers = {"Authorization": "Bearer t0ken-for-tests"}
        wait_until("the old mapping to keep working", lambda: [i["title"] for i in requests.get(
            f"{base}/api/v1/incidents", headers=headers, timeout=2).json()["incidents"]]
            == ["still mapped"])
        replace_file(mapping, original.replace("# ", "#  ", 1))
        process.send_signal(signal.SIGHUP)
        wait_until("the good edit to be applied", lambda: reloads("applied") == 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        sn.stop()
    assert "titel" in process.stderr.read()


def test_a_hangup_during_the_start_is_acted_on_once_running(tmp_path):
    """SIGHUP reloads mappings; one that arrives while the daemon is still opening the store
    must neither kill nor break the start (it raised AttributeError before the mappings existed)."""
    port = free_port()
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'hup.db'}", port=port)
    process = subprocess.Popen([*SYNCD, "run", "--config", str(path)], env={**os.environ, **ENV},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # The store's lock file is taken right after the signal handlers are installed.
        wait_until("the start to begin", lambda: (tmp_path / "hup.db.lock").exists())
        hangups = 0

        def serving_while_hung_up():
            nonlocal hangups
            assert process.poll() is None, "the daemon died of a hangup during its start"
            process.send_signal(signal.SIGHUP)
            hangups += 1
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200

        wait_until("the daemon to serve", serving_while_hung_up)
        assert hangups > 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in process.stderr.read()


def test_a_start_that_cannot_listen_exits_1_and_leaves_no_claim_behind(tmp_path):
    """A taken port is a runtime failure (exit 1: a restart may succeed), found before any loop
    claims work: the outbox row waiting for Jira is still pending for the next start."""
    jira = JiraSimulator().start()
    jira.inject(Fault("hang", path=r"^/rest/"))          # a claimed delivery would stay in flight
    url = f"sqlite:///{tmp_path / 'taken.db'}"
    engine = db.open_engine(url)
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    with db.transaction(sessions) as session:
        incident = incident_service.create_incident(
            session=session, fields={"title": "Checkout down"}, now=datetime.now(timezone.utc),
            actor=None, source="test")
        sync_service.enqueue(session=session, incident_id=incident.id, connector="jira",
                             operation="create", fields={}, now=datetime.now(timezone.utc))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        path = write_config(tmp_path, url, jira_url=jira.base_url, port=taken.getsockname()[1])
        result = syncd("run", "--config", str(path), env=ENV, timeout=60)
        assert result.returncode == 1, result.stderr[-2000:]
        assert "could not listen" in result.stderr and "http.listen" in result.stderr
        with db.transaction(sessions) as session:
            [row] = session.scalars(select(OutboxItem)).all()
            assert (row.state, row.claimed_by) == ("pending", None)
            assert session.scalars(select(ProcessHeartbeat)).all() == []
    finally:
        taken.close()
        jira.stop()
        engine.dispose()


def test_readiness_reads_the_schema_head_once_not_from_disk_per_probe(tmp_path, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    daemon = Daemon(load_config(write_config(tmp_path, f"sqlite:///{tmp_path / 'p.db'}")))
    try:
        daemon.open()
        # An upgrade in place replaces the package's migration files under a running daemon.
        monkeypatch.setattr(db, "MIGRATIONS", tmp_path / "gone")
        assert daemon.readiness()["store"] == "ok"
    finally:
        daemon.stop()


def test_readyz_is_503_with_the_reason_when_the_store_is_gone(postgres_store, tmp_path, monkeypatch):
    sn = ServiceNowSimulator().start()
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    daemon = Daemon(load_config(write_config(tmp_path, postgres_store.url, sn_url=sn.base_url,
                                             port=port)))
    with postgres_store.engine.connect() as connection:
        schema = connection.execute(text("SELECT current_schema()")).scalar()
    renamed = False
    try:
        daemon.open()
        daemon.start()
        wait_until("readiness", lambda: requests.get(f"http://127.0.0.1:{port}/readyz",
                                                     timeout=2).status_code == 200)
        with postgres_store.engine.begin() as connection:       # the store's tables vanish
            connection.execute(text(f'ALTER SCHEMA "{schema}" RENAME TO "{schema}_gone"'))
        renamed = True
        answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert answer.status_code == 503, answer.text
        report = answer.json()
        assert not report["ready"] and report["store"] != "ok"
    finally:
        if renamed:
            with postgres_store.engine.begin() as connection:
                connection.execute(text(f'ALTER SCHEMA "{schema}_gone" RENAME TO "{schema}"'))
        daemon.stop()
        sn.stop()


PEOPLE = """
users:
  - id: alice
    name: Alice Adams
    email: alice@example.com
    time_zone: Europe/Berlin
    contacts: {mail: "mailto://mail.example.com?to=alice@example.com"}
    rules: {high: [{contact: mail, after: 0m}]}
"""


def test_the_daemon_runs_every_loop_under_the_supervisor_and_applies_a_mapping_edit_alone(
        tmp_path, monkeypatch):
    sn = ServiceNowSimulator().start()
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    from syncd.mapping import default_mapping_path
    mapping = tmp_path / "servicenow.yaml"
    mapping.write_text(default_mapping_path("servicenow").read_text())
    people = tmp_path / "people.yaml"
    people.write_text(PEOPLE)
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'loops.db'}", sn_url=sn.base_url,
                        extra="response: {files: [people.yaml]}")
    path.write_text(path.read_text().replace("    poll_interval: 1s\n",
                                             f"    poll_interval: 1s\n    mapping: {mapping}\n", 1))
    daemon = Daemon(load_config(path))
    try:
        daemon.open()
        daemon.start()
        wait_until("readiness", lambda: daemon.readiness()["ready"])
        loops = daemon.readiness()["loops"]
        assert set(loops) == {"poller-servicenow", "hints", "outbox-0", "outbox-1", "outbox-2",
                              "outbox-3", "gauges", "housekeeping", "heartbeat", "auth-check",
                              "reload", "escalation", "notify", "alert-gauges", "action-runs"}
        wait_until("every loop's first cycle", lambda: {
            state["state"] for state in daemon.readiness()["loops"].values()} == {"running"})
        cpu, wall = time.process_time(), time.monotonic()     # no loop may spin while idle
        before = daemon.mappings.get("servicenow")
        replace_file(mapping, mapping.read_text().replace("# ", "#  ", 1))     # no SIGHUP
        wait_until("the edit to be applied", lambda: daemon.mappings.get("servicenow") is not before)
        replace_file(people, PEOPLE.replace("Alice Adams", "Alice Adams-Baker"))
        wait_until("the response file edit to be applied", lambda: daemon.responses.current()
                   .users["alice"].name == "Alice Adams-Baker")
        replace_file(people, PEOPLE.replace("rules: {high", "rules: {hihg"))
        rejected = RESPONSE_RELOADS.labels(outcome="rejected")._value.get()
        wait_until("the broken edit to be refused", lambda: RESPONSE_RELOADS.labels(
            outcome="rejected")._value.get() == rejected + 1)
        assert daemon.responses.current().users["alice"].name == "Alice Adams-Baker"
        assert time.process_time() - cpu < 0.5 * (time.monotonic() - wall), "a loop is spinning"
    finally:
        daemon.stop()
        sn.stop()


def test_an_auth_check_that_crashes_is_shown_and_retried(tmp_path, monkeypatch):
    """Not a remote answer but a bug in the check: it used to end the auth thread for good, and
    /readyz said "pending" forever."""
    sn = ServiceNowSimulator().start()
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    daemon = Daemon(load_config(write_config(tmp_path, f"sqlite:///{tmp_path / 'a.db'}",
                                             sn_url=sn.base_url)))
    before = WORKER_RESTARTS.labels("auth-check")._value.get()
    try:
        daemon.open()
        assert daemon.engine is not None
        connector = daemon.engine.runtimes["servicenow"].connector
        real_check, calls = connector.check_auth, []

        def check_with_a_bug_once():
            calls.append(1)
            if len(calls) == 1:
                raise KeyError("sys_id")
            real_check()

        monkeypatch.setattr(connector, "check_auth", check_with_a_bug_once)
        daemon.start()
        wait_until("the check to crash", lambda: WORKER_RESTARTS.labels("auth-check")._value.get()
                   > before)
        wait_until("the retried check", lambda: daemon.auth_status["servicenow"] == "ok"
                   and daemon.supervisor.states()["auth-check"] == {"state": "running",
                                                                    "restarts": 1})
    finally:
        daemon.stop()
        sn.stop()
