"""`syncd demo`: the daemon against both built-in simulators on SQLite, playing a short incident
story and printing each step with the URLs to look at."""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import requests

from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.engine import service as sync_service
from syncd.mapping import default_mapping_path
from syncd.notify.mail_sink import MailSink
from syncd.simulators.accounts import JIRA_USERS
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import DEFAULT_GROUPS, DEFAULT_PEOPLE, ServiceNowSimulator
from syncd.store.db import transaction

STEP_TIMEOUT = 60.0


class DemoFailed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


EXAMPLE_RESPONSES = Path(__file__).parent / "examples" / "oncall.yaml"
# The example's people, in both simulators with the same emails: an acknowledgement assigns the
# tickets by email (docs/oncall.md, "Acknowledging").
PEOPLE = (("alice", "Alice Adams"), ("bob", "Bob Brown"), ("carol", "Carol Chen"),
          ("dave", "Dave Diaz"), ("erin", "Erin Evans"))


def demo_secrets(api_token: str, mail: MailSink) -> dict[str, str]:
    """The environment the demo's config takes its secrets from, as a real deployment's would;
    the example's mail relay is the demo's own mail sink."""
    return {"SYNCD_API_TOKEN": api_token, "SN_PASSWORD": "admin", "JIRA_TOKEN": "syncd-api-token",
            "SN_WEBHOOK_SECRET": "demo-servicenow-secret", "JIRA_WEBHOOK_SECRET": "demo-jira-secret",
            "SYNCD_LINK_SECRET": secrets.token_hex(32), "SMTP_HOST": mail.host,
            "SMTP_PORT": str(mail.port), "PAYMENTS_ROUTING_KEY": secrets.token_hex(16),
            # Alice's phone contact in the example; the demo acknowledges before it is due.
            "TWILIO_SID": "AC" + "0" * 32, "TWILIO_TOKEN": "demo-twilio-token"}


def write_config(folder: Path, *, sn_url: str, jira_url: str, port: int) -> Path:
    """The configuration a user would write for this setup, secrets from the environment."""
    path = folder / "syncd.yaml"
    path.write_text(f"""\
# Written by `syncd demo`: the daemon against the built-in simulators.
store: {{url: "sqlite:///{folder / 'syncd.db'}"}}
http:
  listen: "127.0.0.1:{port}"
  public_url: "http://127.0.0.1:{port}"
  api_tokens: [{{name: dana.responder, token: "${{SYNCD_API_TOKEN}}"}}]   # named: dana's actions say so
  link_secret: "${{SYNCD_LINK_SECRET}}"
response:
  files: ["{EXAMPLE_RESPONSES}"]   # users, schedule, policy and service of examples/oncall.yaml
connectors:
  servicenow:
    type: servicenow
    url: "{sn_url}"
    username: admin
    password: "${{SN_PASSWORD}}"
    filter: "active=true"
    poll_interval: 2s
    mapping: "{default_mapping_path('servicenow')}"
    create_incidents: true
    create_tickets: false
    webhook_secret: "${{SN_WEBHOOK_SECRET}}"
  jira:
    type: jira
    url: "{jira_url}"
    username: syncd
    token: "${{JIRA_TOKEN}}"
    project: OPS
    issue_type: Incident
    poll_interval: 2s
    mapping: "{default_mapping_path('jira')}"
    create_incidents: false
    create_tickets: true
    webhook_secret: "${{JIRA_WEBHOOK_SECRET}}"
""")
    return path


class Demo:
    def __init__(self, folder: Path, say: Callable[[str], None] = print):
        self.folder = folder
        self.say = say
        self.sn = ServiceNowSimulator(
            people=[*DEFAULT_PEOPLE, *({"user_name": user, "name": name,
                                        "email": f"{user}@example.com"} for user, name in PEOPLE)],
            groups=[*DEFAULT_GROUPS, {"name": "Payments", "email": "payments@example.com"}])
        self.jira = JiraSimulator(deployment="Cloud", users=[
            *JIRA_USERS, *({"name": user, "displayName": name, "emailAddress": f"{user}@example.com"}
                           for user, name in PEOPLE if user not in ("alice", "bob"))])
        self.mail = MailSink()
        self.daemon: Daemon | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in ("syncd.db", "syncd.db-wal", "syncd.db-shm"):
            (self.folder / stale).unlink(missing_ok=True)
        self.sn.start()
        self.jira.start()
        self.mail.start()
        port = free_port()
        self.token = secrets.token_urlsafe(16)
        self.api = f"http://127.0.0.1:{port}"
        env = demo_secrets(self.token, self.mail)
        os.environ.update(env)      # the daemon reads the response files' ${VAR}s from it too
        config = load_config(write_config(self.folder, sn_url=self.sn.base_url,
                                          jira_url=self.jira.base_url, port=port),
                             environ=os.environ)
        self.sn.webhooks.configure(f"{self.api}/webhooks/servicenow", env["SN_WEBHOOK_SECRET"])
        self.jira.webhooks.configure(f"{self.api}/webhooks/jira", env["JIRA_WEBHOOK_SECRET"])
        self.daemon = Daemon(config)
        self.daemon.open()
        self.daemon.start()
        self.say(f"syncd is running: API {self.api} (token {self.token}), store {self.folder / 'syncd.db'}")
        self.say(f"  ServiceNow simulator {self.sn.base_url}  (admin/admin)")
        self.say(f"  Jira simulator       {self.jira.base_url}  (syncd/syncd-api-token)")
        self.say(f"  mail sink            smtp://{self.mail.host}:{self.mail.port} (pages land here)")
        self.say(f"  metrics              {self.api}/metrics")

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        self.sn.stop()
        self.jira.stop()
        self.mail.stop()

    def wait_for(self, what: str, condition: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        raise DemoFailed(f"gave up after {STEP_TIMEOUT:.0f}s waiting for: {what}")


    def _incident_id(self) -> int | None:
        assert self.daemon is not None
        with transaction(self.daemon.sessions, readonly=True) as session:
            link = sync_service.find_link(session=session, connector="servicenow", remote_id=self.sys_id)
            return link.incident_id if link else None

    def api_call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(method, f"{self.api}{path}", timeout=10,
                                  headers={"Authorization": f"Bearer {self.token}"}, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def play(self) -> None:
        started = time.monotonic()
        self.say("\n1. A P3 incident for the Payments group is raised in ServiceNow...")
        record = self.sn.human_create({"short_description": "Checkout API returns 500s",
                                       "description": "Error rate above 20% since 14:02 UTC",
                                       "impact": "2", "urgency": "2",
                                       "assignment_group": "Payments"}, user="beth.anglin")
        self.sys_id, number = record["sys_id"], record["number"]
        self.incident_id = self.wait_for("syncd to import the ServiceNow incident", self._incident_id)
        key = self.wait_for("the Jira issue to be created",
                           lambda: self._issue_key_of(self.incident_id))
        issue = self.jira.get_issue(key)
        self.say(f"   {number} became SYN-{self.incident_id}, which created Jira {key}: "
                 f"\"{issue['fields']['summary']}\", priority {issue['fields']['priority']['name']}")
        self.say("   It belongs to the service payments-api (examples/oncall.yaml); P3 does not page.")
        self.say(f"   {self.sn.base_url}/api/now/table/incident/{self.sys_id}")
        self.say(f"   {self.jira.base_url}/rest/api/2/issue/{key}")
        self.say(f"   {self.api}/api/v1/incidents/{self.incident_id}")

        self.say("\n2. An engineer comments in Jira...")
        self.jira.human_comment(key, "Rolling back release 2026.11.3", user="alice")
        self.wait_for("the comment to land as a ServiceNow work note", lambda: any(
            entry["element"] == "work_notes" and entry["value"] == "Rolling back release 2026.11.3"
            for entry in self.sn.journal(self.sys_id)))
        self.say(f"   ServiceNow {number} has the work note \"Rolling back release 2026.11.3\"")

        self.say("\n3. Alice takes the on-call shift for the next hour (an override), and ServiceNow "
                 "raises the incident to P1 (impact 1, urgency 1)...")
        now = datetime.now(timezone.utc)
        self.api_call("POST", "/api/v1/schedules/payments-primary/overrides", json={
            "user": "alice", "starts_at": now.isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat()})
        self.sn.human_update(self.sys_id, {"impact": "1", "urgency": "1"}, user="beth.anglin")
        raised = time.monotonic()
        self.wait_for("Jira to follow to Highest", lambda: self.jira.get_issue(key)["fields"]
                      ["priority"]["name"] == "Highest")
        page = self.wait_for("the page to reach alice's mailbox", lambda: self.mail.wait_for(1, 0))[0]
        self.say(f"   Jira {key} priority is now Highest; alice was paged "
                 f"{time.monotonic() - raised:.1f}s after the raise. The mail, as received:")
        self.say(f"     To: {page['To']}\n     Subject: {page['Subject']}")
        body = page.get_payload(decode=True).decode() if not page.is_multipart() else \
            page.get_payload(0).get_payload(decode=True).decode()
        for line in body.strip().splitlines():
            self.say(f"     | {line}")
        link = re.search(r"http://\S+/a/\S+", body)
        if link is None:
            raise DemoFailed("the page carries no acknowledge link")

        self.say("\n4. Alice follows the acknowledge link in the mail and confirms...")
        confirm = requests.get(link.group(0), timeout=10)
        confirm.raise_for_status()
        title = re.search(r"<h1>(.*?)</h1>", confirm.text)
        self.say(f"   GET shows a confirm page (\"{title.group(1) if title else ''}\"): opening a "
                 "link changes nothing, pressing the button does")
        requests.post(link.group(0), timeout=10).raise_for_status()
        self.wait_for("ServiceNow to move to In Progress, assigned to alice",
                      lambda: self.sn.get_incident(self.sys_id)["state"] == "2" and
                      self.sn.get_incident(self.sys_id)["assigned_to"] ==
                      self.sn.user_sys_id("alice"))
        self.wait_for("Jira to move to In Progress, assigned to alice", lambda: (
            self.jira.get_issue(key)["fields"]["status"]["name"] == "In Progress" and
            (self.jira.get_issue(key)["fields"]["assignee"] or {}).get("emailAddress") ==
            "alice@example.com"))
        self.say(f"   ServiceNow {number} is In Progress, assigned to alice; Jira {key} is In "
                 f"Progress, assigned to Alice Adams; escalation stopped")

        self.say("\n5. Jira moves the issue to Done...")
        self.jira.human_transition(key, "Done", user="alice")
        self.wait_for("ServiceNow to resolve", lambda: self.sn.get_incident(self.sys_id)["state"] == "6")
        record = self.sn.get_incident(self.sys_id)
        self.say(f"   ServiceNow {number} is Resolved (close code \"{record['close_code']}\")")

        self.alert_storm()

        detail = self.api_call("GET", f"/api/v1/incidents/{self.incident_id}")
        self.say(f"\nSYN-{self.incident_id} timeline ({len(detail['timeline'])} entries, "
                 f"story played in {time.monotonic() - started:.1f}s):")
        for entry in detail["timeline"]:
            self.say(f"   {entry['at'][11:19]}  {entry['text']}")


    def alert_storm(self) -> None:
        """Monitoring takes over: 20 events as Alertmanager would send them, 4 alerts by their
        dedup keys, one incident by the service's content grouping on `component`."""
        self.say("\n6. Alice hands the shift to Dave (another override); then monitoring sends "
                 "an alert storm: 20 Events API v2 events from 4 web servers...")
        now = datetime.now(timezone.utc)
        self.api_call("POST", "/api/v1/schedules/payments-primary/overrides", json={
            "user": "dave", "starts_at": now.isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat()})
        started = time.monotonic()
        for n in range(20):
            server = f"web-{n % 4 + 1}"
            requests.post(f"{self.api}/v2/enqueue", timeout=10, json={
                "routing_key": os.environ["PAYMENTS_ROUTING_KEY"], "event_action": "trigger",
                "dedup_key": f"checkout-5xx-{server}",
                "payload": {"summary": f"Checkout 5xx rate above 5% on {server}",
                            "source": server, "severity": "critical", "component": "checkout",
                            "custom_details": {"rate": f"{5 + n % 7}%"}}}).raise_for_status()
        alerts = self.wait_for("the 4 alerts", lambda: (lambda found: found if len(found) == 4
                               else None)(self.api_call("GET", "/api/v1/alerts?service=payments-"
                                                               "api&status=triggered")["alerts"]))
        incidents = {alert["incident_id"] for alert in alerts}
        if len(incidents) != 1:
            raise DemoFailed(f"the storm opened {len(incidents)} incidents, not one")
        (incident_id,) = incidents
        key = self.wait_for("the storm's Jira issue", lambda: self._issue_key_of(incident_id))
        page = self.wait_for("the page to reach dave's mailbox", lambda: next(
            (mail for mail in self.mail.wait_for(2, 0) if "dave@" in mail["To"]), None))
        counts = ", ".join(f"{alert['source']} ×{alert['event_count']}" for alert in
                           sorted(alerts, key=lambda alert: alert["source"]))
        self.say(f"   20 events → 4 alerts ({counts}) → one incident SYN-{incident_id}, which "
                 f"created Jira {key}; dave was paged {time.monotonic() - started:.1f}s after the "
                 f"first event: \"{page['Subject']}\"")

    def _issue_key_of(self, incident_id: int) -> str | None:
        assert self.daemon is not None
        with transaction(self.daemon.sessions, readonly=True) as session:
            link = sync_service.link_for(session=session, incident_id=incident_id, connector="jira")
            return link.remote_key if link else None


def run_demo(folder: Path, *, once: bool, say: Callable[[str], None] = print) -> int:
    demo = Demo(folder, say)
    try:
        demo.start()
        demo.play()
        if once:
            return 0
        say("\nThe daemon and simulators stay up; press Ctrl-C to stop.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        demo.stop()
