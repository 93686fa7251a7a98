"""The whole paging story against a real daemon and both simulators: a ServiceNow incident raised
to P1 pages the person on call by mail (a real SMTP server) and JSON webhook; the acknowledge link
from the mail, followed with an HTTP client, acknowledges, and both tickets show it."""

from __future__ import annotations

import requests

from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.engine import service as sync_service
from syncd.notify.mail_sink import MailSink
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import DEFAULT_PEOPLE, ServiceNowSimulator
from syncd.store.db import transaction

from ..notify.receivers import JsonReceiver
from ..support import ENV, free_port, wait_until
from .conftest import incident, timeline_texts, write_paging_config, write_responses

ALICE = {"user_name": "alice.adams", "name": "Alice Adams", "email": "alice@example.com"}


def mail_text(message) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode()


def test_a_p1_raised_in_servicenow_pages_alice_and_her_link_acknowledges_both_tickets(
        tmp_path, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    sn = ServiceNowSimulator(people=[*DEFAULT_PEOPLE, ALICE]).start()
    jira = JiraSimulator().start()
    sink = MailSink().start()
    hooks = JsonReceiver().__enter__()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    responses = write_responses(tmp_path, alice={"mail": sink.url_for("alice@example.com"),
                                                 "hook": hooks.url("ok/alice")})
    config = load_config(write_paging_config(
        tmp_path, f"sqlite:///{tmp_path / 'e2e.db'}", port=port, responses=responses,
        sn_url=sn.base_url, jira_url=jira.base_url))
    daemon = Daemon(config)
    try:
        daemon.open()
        daemon.start()
        record = sn.human_create({"short_description": "Checkout API returns 500s",
                                  "impact": "2", "urgency": "2",
                                  "assignment_group": sn.group_sys_id("Software")})
        sys_id = record["sys_id"]
        assert record["priority"] == "3"

        def linked(connector: str):
            with transaction(daemon.sessions, readonly=True) as session:
                found = sync_service.find_link(session=session, connector="servicenow",
                                               remote_id=sys_id)
                if found is None:
                    return None
                link = sync_service.link_for(session=session, incident_id=found.incident_id,
                                             connector=connector)
                return link and (found.incident_id, link.remote_key)

        wait_until("syncd to import the incident and create the Jira issue",
                   lambda: linked("jira"), timeout=30)
        incident_id, key = linked("jira")
        detail = incident(base, incident_id)
        assert (detail["priority"], detail["status"], detail["fields"]["group"]) == (
            "P3", "triggered", "Software")
        assert detail["escalation"] is None and sink.messages == [], "P3 does not page"

        sn.human_update(sys_id, {"impact": "1", "urgency": "1"})     # P1 in ServiceNow's matrix
        assert sn.get_incident(sys_id)["priority"] == "1"
        wait_until("the page to reach alice's mailbox", lambda: sink.messages, timeout=15)
        wait_until("the page to reach alice's webhook", lambda: hooks.paths(), timeout=15)
        (mail,) = sink.messages
        assert mail["To"] == "alice@example.com"
        assert mail["Subject"].startswith(f"[P1] SYN-{incident_id} ")
        body = mail_text(mail)
        ack_url = next(word for word in body.split() if word.startswith(f"{base}/a/"))
        assert key in body
        [(path, payload)] = hooks.received
        assert path == "/ok/alice" and f"{base}/a/" in payload["message"]   # its own link

        confirm = requests.get(ack_url, timeout=5)
        assert confirm.status_code == 200 and "Acknowledge this incident?" in confirm.text
        assert 'method="post"' in confirm.text and "Alice Adams" in confirm.text
        assert incident(base, incident_id)["status"] == "triggered", "a GET changes nothing"

        done = requests.post(ack_url, timeout=5)
        assert done.status_code == 200 and "Acknowledged" in done.text
        detail = incident(base, incident_id)
        assert detail["status"] == "acknowledged"
        assert detail["fields"]["assignee"] == "alice@example.com"
        assert detail["escalation"]["state"] == "acknowledged"

        alice_sys_id = sn.user_sys_id("alice.adams")
        wait_until("ServiceNow to show In Progress, assigned to alice", lambda: (
            sn.get_incident(sys_id)["state"], sn.get_incident(sys_id)["assigned_to"])
            == ("2", alice_sys_id), timeout=15)
        wait_until("Jira to show In Progress, assigned to alice", lambda: (
            (fields := jira.get_issue(key)["fields"])["status"]["name"],
            (fields["assignee"] or {}).get("emailAddress")) == ("In Progress",
                                                                 "alice@example.com"),
            timeout=15)

        texts = timeline_texts(base, incident_id)
        assert "page to alice by mail sent" in texts and "page to alice by hook sent" in texts
        assert any(text.startswith("paging started (priority P3 → P1)") for text in texts)
        assert any("escalation rule 1 of 1: paged alice (schedule primary)" == text
                   for text in texts)
        [acked] = [text for text in texts if "→ acknowledged" in text]
        assert acked.endswith("in ack-link by alice"), acked
        assert "alice@example.com" in acked
        states = {(n["user"], n["contact"], n["state"]) for n in detail["notifications"]}
        assert states == {("alice", "mail", "sent"), ("alice", "hook", "sent")}
        assert len(sink.messages) == 1 and len(hooks.received) == 1
    finally:
        daemon.stop()
        hooks.__exit__(None, None, None)
        sink.stop()
        sn.stop()
        jira.stop()
