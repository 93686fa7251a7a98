"""`syncd demo`: the daemon against both built-in simulators on SQLite, playing a short incident
story and printing each step with the URLs to look at."""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Callable

import requests

from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.engine import service as sync_service
from syncd.mapping import default_mapping_path
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import ServiceNowSimulator
from syncd.store.db import transaction

STEP_TIMEOUT = 60.0


class DemoFailed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def demo_secrets(api_token: str) -> dict[str, str]:
    """The environment the demo's config takes its secrets from, as a real deployment's would."""
    return {"SYNCD_API_TOKEN": api_token, "SN_PASSWORD": "admin", "JIRA_TOKEN": "syncd-api-token",
            "SN_WEBHOOK_SECRET": "demo-servicenow-secret", "JIRA_WEBHOOK_SECRET": "demo-jira-secret"}


def write_config(folder: Path, *, sn_url: str, jira_url: str, port: int) -> Path:
    """The configuration a user would write for this setup, secrets from the environment."""
    path = folder / "syncd.yaml"
    path.write_text(f"""\
# Written by `syncd demo`: the daemon against the built-in simulators.
store: {{url: "sqlite:///{folder / 'syncd.db'}"}}
http:
  listen: "127.0.0.1:{port}"
  api_tokens: [{{name: dana.responder, token: "${{SYNCD_API_TOKEN}}"}}]   # named: dana's actions say so
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
        self.sn = ServiceNowSimulator()
        self.jira = JiraSimulator(deployment="Cloud")
        self.daemon: Daemon | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in ("syncd.db", "syncd.db-wal", "syncd.db-shm"):
            (self.folder / stale).unlink(missing_ok=True)
        self.sn.start()
        self.jira.start()
        port = free_port()
        self.token = secrets.token_urlsafe(16)
        self.api = f"http://127.0.0.1:{port}"
        env = demo_secrets(self.token)
        config = load_config(write_config(self.folder, sn_url=self.sn.base_url,
                                          jira_url=self.jira.base_url, port=port),
                             environ={**os.environ, **env})
        self.sn.webhooks.configure(f"{self.api}/webhooks/servicenow", env["SN_WEBHOOK_SECRET"])
        self.jira.webhooks.configure(f"{self.api}/webhooks/jira", env["JIRA_WEBHOOK_SECRET"])
        self.daemon = Daemon(config)
        self.daemon.open()
        self.daemon.start()
        self.say(f"syncd is running: API {self.api} (token {self.token}), store {self.folder / 'syncd.db'}")
        self.say(f"  ServiceNow simulator {self.sn.base_url}  (admin/admin)")
        self.say(f"  Jira simulator       {self.jira.base_url}  (syncd/syncd-api-token)")
        self.say(f"  metrics              {self.api}/metrics")

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        self.sn.stop()
        self.jira.stop()

    def wait_for(self, what: str, condition: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        raise DemoFailed(f"gave up after {STEP_TIMEOUT:.0f}s waiting for: {what}")

    def _linked_issue_key(self) -> str | None:
        assert self.daemon is not None
        with transaction(self.daemon.sessions, readonly=True) as session:
            link = sync_service.link_for(session=session, incident_id=self.incident_id, connector="jira")
            return link.remote_key if link else None

    def _incident_id(self) -> int | None:
        assert self.daemon is not None
        with transaction(self.daemon.sessions, readonly=True) as session:
            link = sync_service.find_link(session=session, connector="servicenow", remote_id=self.sys_id)
            return link.incident_id if link else None

    def play(self) -> None:
        started = time.monotonic()
        self.say("\n1. A P2 incident is raised in ServiceNow (impact 1, urgency 2)...")
        record = self.sn.human_create({"short_description": "Checkout API returns 500s",
                                       "description": "Error rate above 20% since 14:02 UTC",
                                       "impact": "1", "urgency": "2"}, user="beth.anglin")
        self.sys_id, number = record["sys_id"], record["number"]
        self.incident_id = self.wait_for("syncd to import the ServiceNow incident", self._incident_id)
        key = self.wait_for("the Jira issue to be created", self._linked_issue_key)
        issue = self.jira.get_issue(key)
        self.say(f"   {number} became SYN-{self.incident_id}, which created Jira {key}: "
                 f"\"{issue['fields']['summary']}\", priority {issue['fields']['priority']['name']}")
        self.say(f"   {self.sn.base_url}/api/now/table/incident/{self.sys_id}")
        self.say(f"   {self.jira.base_url}/rest/api/2/issue/{key}")
        self.say(f"   {self.api}/api/v1/incidents/{self.incident_id}")

        self.say("\n2. An engineer comments in Jira...")
        self.jira.human_comment(key, "Rolling back release 2026.11.3", user="alice")
        self.wait_for("the comment to land as a ServiceNow work note", lambda: any(
            entry["element"] == "work_notes" and entry["value"] == "Rolling back release 2026.11.3"
            for entry in self.sn.journal(self.sys_id)))
        self.say(f"   ServiceNow {number} has the work note \"Rolling back release 2026.11.3\"")

        self.say("\n3. ServiceNow raises the incident to P1 (impact 1, urgency 1)...")
        self.sn.human_update(self.sys_id, {"impact": "1", "urgency": "1"}, user="beth.anglin")
        self.wait_for("Jira to follow to Highest", lambda: self.jira.get_issue(key)["fields"]
                      ["priority"]["name"] == "Highest")
        self.say(f"   Jira {key} priority is now Highest")

        self.say("\n4. Dana acknowledges SYN-1 through the API (her named token)...")
        requests.post(f"{self.api}/api/v1/incidents/{self.incident_id}/acknowledge", timeout=10,
                      headers={"Authorization": f"Bearer {self.token}"}).raise_for_status()
        self.wait_for("ServiceNow to move to In Progress",
                      lambda: self.sn.get_incident(self.sys_id)["state"] == "2")
        self.wait_for("Jira to move to In Progress", lambda: self.jira.get_issue(key)["fields"]
                      ["status"]["name"] == "In Progress")
        self.say(f"   ServiceNow {number} is In Progress and Jira {key} is In Progress")

        self.say("\n5. Jira moves the issue to Done...")
        self.jira.human_transition(key, "Done", user="alice")
        self.wait_for("ServiceNow to resolve", lambda: self.sn.get_incident(self.sys_id)["state"] == "6")
        record = self.sn.get_incident(self.sys_id)
        self.say(f"   ServiceNow {number} is Resolved (close code \"{record['close_code']}\")")

        detail = requests.get(f"{self.api}/api/v1/incidents/{self.incident_id}", timeout=10,
                              headers={"Authorization": f"Bearer {self.token}"}).json()
        self.say(f"\nSYN-{self.incident_id} timeline ({len(detail['timeline'])} entries, "
                 f"story played in {time.monotonic() - started:.1f}s):")
        for entry in detail["timeline"]:
            self.say(f"   {entry['at'][11:19]}  {entry['text']}")


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
