"""Crash soak (issue 9): real `syncd run` processes killed with SIGKILL while people edit both sides.

Setup: both simulators in their own processes (``syncd simulate``), sending webhooks to the
daemon; ``--incidents`` ServiceNow incidents created by a person and mirrored to Jira; then people
edit both sides through the simulators' ``/_sim/human/...`` endpoints (titles, priorities, status,
comments with repeated short bodies: "ack", "+1") while the daemon is killed with SIGKILL
``--kills`` times at random moments and restarted at once. A third of the way in, ServiceNow
answers 503 to everything for ``--outage`` seconds; two thirds in, Jira answers 429 above 2
requests/s for ``--storm`` seconds. The editing stops with the last kill; after the last restart
the soak waits for quiet (outbox empty and every pair agreeing with the store, or ``--timeout``).

Figures (the invariants of DESIGN.md):
* lost updates: a field whose store value is not the last value a person gave it (edits of one
  field of one incident are at least 3 s apart, so "last" is clear and newest_wins must pick it),
  and comments missing from the store;
* duplicated records (incidents, ServiceNow records, Jira issues beyond one per incident) and
  duplicated comments (a body present on a side more times than people wrote it);
* disagreeing pairs: (incident, system) whose title, priority, status or comments differ from
  the store's;
* writes after quiet: remote writes during 3 more polls of each connector once quiet;
* outbox empty after: seconds from the last restart until the outbox was empty for good.

    /work/venv/bin/python bench/soak.py --store sqlite
    /work/venv/bin/python bench/soak.py --store postgresql     # SYNCD_TEST_PG_URL, else local
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import requests
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SYNCD, free_port, simulator_process  # noqa: E402
from syncd.engine import service as sync_service  # noqa: E402
from syncd.incidents import service as incident_service  # noqa: E402
from syncd.store import db  # noqa: E402

PG_URL = os.environ.get("SYNCD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SN_AUTH = ("admin", "admin")
JIRA_AUTH = ("syncd", "syncd-api-token")
SECRETS = {"SN_PASSWORD": "admin", "JIRA_TOKEN": "syncd-api-token", "SN_SECRET": "sn-s3cret",
           "JIRA_SECRET": "jira-s3cret", "SYNCD_API_TOKEN": "soak-t0ken"}

SN_PRIORITY = {"1": "P1", "2": "P2", "3": "P3", "4": "P4", "5": "P5"}
PRIORITY_PAIRS = {"P1": ("1", "1"), "P2": ("1", "2"), "P3": ("2", "2"), "P4": ("2", "3"),
                  "P5": ("3", "3")}
JIRA_PRIORITY = {"Highest": "P1", "High": "P2", "Medium": "P3", "Low": "P4", "Lowest": "P5"}
SN_STATUS = {"1": "triggered", "2": "acknowledged", "3": "acknowledged", "6": "resolved",
             "7": "resolved", "8": "resolved"}
JIRA_STATUS = {"To Do": "triggered", "In Progress": "acknowledged", "Done": "resolved"}
SN_STATE_EDITS = {"triggered": {"state": "1"}, "acknowledged": {"state": "2"},
                  "resolved": {"state": "6", "close_code": "Solution provided",
                               "close_notes": "fixed by the on-call"}}
JIRA_STATUS_NAMES = {canonical: name for name, canonical in JIRA_STATUS.items()}
TITLES = ["db down", "api slow", "disk full", "cert expired", "queue backed up", "dns flaps"]
BODIES = ["ack", "+1", "investigating", "looking"]
FIELD_GAP = 3.0       # seconds between two edits of one field of one incident
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class SoakSettings:
    store: str = "sqlite"                  # sqlite | postgresql
    incidents: int = 24
    kills: int = 20
    outage: float = 20.0                   # seconds of ServiceNow 503s
    storm: float = 15.0                    # seconds of Jira 429s above 2 requests/s
    run_between_kills: tuple[float, float] = (0.5, 3.0)   # seconds the daemon runs, at random
    edit_pause: float = 0.1                # seconds between two edits by the people
    timeout: float = 300.0                 # seconds to wait for quiet after the last restart
    seed: int = 0
    workdir: Path | None = None


@dataclass
class SoakFigures:
    store: str
    incidents: int
    kills: int
    edits: int = 0
    comments_written: int = 0
    lost_updates: list[str] = field(default_factory=list)
    # The last edit lost a conflict the timeline records, settled by the field's policy
    # (invariant 2 allows it; newest_wins compares the store's field time with the remote
    # record's update time, which another field's later edit moves: ADR 0005).
    settled_by_policy: list[str] = field(default_factory=list)
    lost_comments: list[str] = field(default_factory=list)
    duplicated_records: list[str] = field(default_factory=list)
    duplicated_comments: list[str] = field(default_factory=list)
    disagreeing_pairs: list[str] = field(default_factory=list)
    writes_after_quiet: int | None = None
    outbox_empty_after: float | None = None     # None: never empty within the timeout
    quiet_after: float | None = None            # outbox empty and every pair agreeing
    paused: list[str] = field(default_factory=list)
    dead_letters: int = 0
    start_seconds: list[float] = field(default_factory=list)
    duration: float = 0.0
    people_errors: list[str] = field(default_factory=list)   # edits whose answer was lost

    @property
    def lost(self) -> int:
        return len(self.lost_updates) + len(self.lost_comments)

    @property
    def duplicated(self) -> int:
        return len(self.duplicated_records) + len(self.duplicated_comments)

    def summary(self) -> str:
        starts = sorted(self.start_seconds)
        lines = [
            f"store {self.store}: {self.incidents} incidents, {self.kills} kills (SIGKILL), "
            f"{self.edits} edits by people ({self.comments_written} comments), {self.duration:.0f} s",
            f"lost updates          {self.lost} ({len(self.lost_updates)} fields, "
            f"{len(self.lost_comments)} comments)",
            f"settled by policy     {len(self.settled_by_policy)} (the last edit lost a recorded "
            f"conflict)",
            f"duplicated            {self.duplicated} ({len(self.duplicated_records)} records, "
            f"{len(self.duplicated_comments)} comments)",
            f"disagreeing pairs     {len(self.disagreeing_pairs)}",
            f"writes after quiet    {self.writes_after_quiet}",
            f"outbox empty after    {_seconds(self.outbox_empty_after)} from the last restart",
            f"quiet after           {_seconds(self.quiet_after)} from the last restart",
            f"dead letters          {self.dead_letters}",
            f"paused connectors     {'; '.join(self.paused) or 'none'}",
            f"people's lost answers {len(self.people_errors)} (an edit that may have landed unseen)",
        ]
        if starts:
            lines.append(f"daemon start to /healthz: median {starts[len(starts) // 2]:.1f} s, "
                         f"max {starts[-1]:.1f} s")
        for title, items in (("lost", self.lost_updates + self.lost_comments),
                             ("settled by policy", self.settled_by_policy),
                             ("duplicated", self.duplicated_records + self.duplicated_comments),
                             ("disagreeing", self.disagreeing_pairs)):
            for item in items[:10]:
                lines.append(f"  {title}: {item}")
            if len(items) > 10:
                lines.append(f"  {title}: ... {len(items) - 10} more")
        return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "never (timeout)" if value is None else f"{value:.1f} s"


# -- the store --------------------------------------------------------------------------------

@contextmanager
def store_url(kind: str, workdir: Path) -> Iterator[str]:
    """A URL to an empty store: a SQLite file, or a fresh schema on PostgreSQL (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'soak.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"--store must be sqlite or postgresql, got {kind!r}")
    schema = f"soak_{uuid.uuid4().hex[:10]}"
    admin = db.open_engine(PG_URL, pool_size=1)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class StoreView:
    """What the soak reads from the daemon's store (never writes)."""

    def __init__(self, url: str):
        self.engine = db.open_engine(url, pool_size=2)
        self.sessions = db.session_factory(self.engine)

    def transaction(self):
        return db.transaction(self.sessions, readonly=True)

    def open_outbox_rows(self) -> int:
        with self.transaction() as session:
            return sum(n for (_, state), n in sync_service.outbox_counts(session=session).items()
                       if state in ("pending", "in_flight"))

    def links(self) -> dict[int, dict[str, Any]]:
        """incident id -> {"servicenow": sys_id, "jira": (issue id, key)} for what is linked."""
        out: dict[int, dict[str, Any]] = {}
        with self.transaction() as session:
            for incident in incident_service.list_incidents(session=session, limit=10_000):
                for connector in ("servicenow", "jira"):
                    link = sync_service.link_for(session=session, incident_id=incident.id,
                                                 connector=connector)
                    if link is not None:
                        out.setdefault(incident.id, {})[connector] = (
                            link.remote_id if connector == "servicenow"
                            else (link.remote_id, link.remote_key))
        return out

    def incidents(self) -> dict[int, dict[str, Any]]:
        with self.transaction() as session:
            return {i.id: {"title": i.title, "priority": i.priority, "status": i.status,
                           "number": i.number,
                           "comments": Counter(c.body for c in incident_service.comments(
                               session=session, incident_id=i.id)),
                           "conflicts": {e.data.get("field") for e in incident_service.timeline(
                               session=session, incident_id=i.id) if e.kind == "conflict"}}
                    for i in incident_service.list_incidents(session=session, limit=10_000)}

    def paused(self) -> list[str]:
        with self.transaction() as session:
            return [f"{name}: {cursor.paused_reason}" for name in ("servicenow", "jira")
                    if (cursor := sync_service.get_cursor(session=session, connector=name))
                    and cursor.paused_reason]

    def dead_letters(self) -> int:
        with self.transaction() as session:
            return sum(n for (_, state), n in sync_service.outbox_counts(session=session).items()
                       if state == "dead")

    def close(self) -> None:
        self.engine.dispose()


# -- the two remote systems, through HTTP only ------------------------------------------------

class Remotes:
    """People's edits (``/_sim/human/...``), faults, request logs, and reads of what each system
    holds through its public API."""

    def __init__(self, sn_url: str, jira_url: str):
        self.sn_url, self.jira_url = sn_url, jira_url
        self.sn = requests.Session()
        self.sn.auth = SN_AUTH
        self.jira = requests.Session()
        self.jira.auth = JIRA_AUTH

    def _url(self, system: str) -> str:
        return self.sn_url if system == "servicenow" else self.jira_url

    def _session(self, system: str) -> requests.Session:
        return self.sn if system == "servicenow" else self.jira

    # people
    def sn_create(self, fields: dict[str, str]) -> str:
        answer = self.sn.post(f"{self.sn_url}/_sim/human/incident", json={"fields": fields}, timeout=10)
        answer.raise_for_status()
        return answer.json()["result"]["sys_id"]

    def sn_edit(self, sys_id: str, fields: dict[str, str]) -> bool:
        return self.sn.post(f"{self.sn_url}/_sim/human/incident/{sys_id}",
                            json={"fields": fields}, timeout=10).ok

    def jira_edit(self, key: str, fields: dict[str, Any]) -> bool:
        return self.jira.post(f"{self.jira_url}/_sim/human/issue/{key}", json={"fields": fields},
                              timeout=10).ok

    def jira_transition(self, key: str, status: str) -> bool:
        return self.jira.post(f"{self.jira_url}/_sim/human/issue/{key}/transition",
                              json={"status": status}, timeout=10).ok

    def jira_comment(self, key: str, body: str) -> bool:
        return self.jira.post(f"{self.jira_url}/_sim/human/issue/{key}/comment",
                              json={"body": body}, timeout=10).ok

    # faults and request logs
    def fault(self, system: str, body: dict[str, Any]) -> None:
        self._session(system).post(f"{self._url(system)}/_sim/faults", json=body,
                                   timeout=10).raise_for_status()

    def clear_faults(self, system: str) -> None:
        self._session(system).delete(f"{self._url(system)}/_sim/faults", timeout=10).raise_for_status()

    def requests(self, system: str) -> list[dict[str, Any]]:
        return self._session(system).get(f"{self._url(system)}/_sim/requests", timeout=30).json()

    def clear_requests(self, system: str) -> None:
        self._session(system).delete(f"{self._url(system)}/_sim/requests", timeout=10)

    # what each system holds
    def sn_records(self) -> dict[str, dict[str, str]]:
        answer = self.sn.get(f"{self.sn_url}/api/now/table/incident", timeout=30, params={
            "sysparm_fields": "sys_id,short_description,priority,state", "sysparm_limit": 10000})
        answer.raise_for_status()
        return {r["sys_id"]: r for r in answer.json()["result"]}

    def sn_journal(self, sys_id: str) -> Counter[str]:
        answer = self.sn.get(f"{self.sn_url}/api/now/table/sys_journal_field", timeout=30, params={
            "sysparm_query": f"element_id={sys_id}", "sysparm_fields": "value",
            "sysparm_limit": 10000})
        answer.raise_for_status()
        return Counter(r["value"] for r in answer.json()["result"])

    def jira_issue(self, key: str) -> dict[str, Any]:
        answer = self.jira.get(f"{self.jira_url}/rest/api/2/issue/{key}", timeout=30,
                               params={"fields": "summary,priority,status"})
        answer.raise_for_status()
        return answer.json()["fields"]

    def jira_history(self, key: str, field_name: str) -> list[str]:
        """Who set ``field_name`` on the issue, when, to what (its changelog), for a lost field."""
        answer = self.jira.get(f"{self.jira_url}/rest/api/2/issue/{key}", timeout=30,
                               params={"fields": "summary", "expand": "changelog"})
        answer.raise_for_status()
        return [f"{history['created'][11:23]} {history['author'].get('displayName')}: "
                f"{item.get('fromString')} -> {item.get('toString')}"
                for history in answer.json()["changelog"]["histories"]
                for item in history["items"] if item["field"] == field_name]

    def jira_comments(self, key: str) -> Counter[str]:
        answer = self.jira.get(f"{self.jira_url}/rest/api/2/issue/{key}/comment", timeout=30,
                               params={"maxResults": 5000})
        answer.raise_for_status()
        return Counter(c["body"] for c in answer.json()["comments"])

    def jira_issue_count(self) -> int:
        answer = self.jira.get(f"{self.jira_url}/rest/api/2/search/jql", timeout=30,
                               params={"jql": "project = OPS", "fields": "id", "maxResults": 5000})
        answer.raise_for_status()
        return len(answer.json()["issues"])


# -- the daemon -------------------------------------------------------------------------------

def write_config(path: Path, store: str, sn_url: str, jira_url: str, port: int) -> Path:
    """Defaults everywhere but the poll interval (1 s): the soak measures what users run."""
    path.write_text(f"""
store: {{url: "{store}"}}
http: {{listen: "127.0.0.1:{port}", api_tokens: ["${{SYNCD_API_TOKEN}}"]}}
logging: {{level: WARNING}}
connectors:
  servicenow:
    type: servicenow
    url: "{sn_url}"
    username: admin
    password: "${{SN_PASSWORD}}"
    poll_interval: 1s
    create_incidents: true
    webhook_secret: "${{SN_SECRET}}"
  jira:
    type: jira
    url: "{jira_url}"
    username: syncd
    token: "${{JIRA_TOKEN}}"
    project: OPS
    poll_interval: 1s
    create_tickets: true
    webhook_secret: "${{JIRA_SECRET}}"
""")
    return path


class DaemonProcess:
    """`syncd run` as a child process that the soak kills with SIGKILL and starts again."""

    def __init__(self, config: Path, port: int, log: Path):
        self.config, self.port, self.log = config, port, log
        self.process: subprocess.Popen | None = None
        self.start_seconds: list[float] = []

    def start(self) -> float:
        """Start it; returns the monotonic time it was started, once /healthz answers."""
        started = time.monotonic()
        with open(self.log, "a") as log:
            self.process = subprocess.Popen([*SYNCD, "run", "--config", str(self.config)],
                                            env={**os.environ, **SECRETS},
                                            stdout=subprocess.DEVNULL, stderr=log)
        deadline = started + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"syncd run exited with {self.process.returncode}; see {self.log}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok:
                    self.start_seconds.append(time.monotonic() - started)
                    return started
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"syncd run did not answer /healthz within 60 s; see {self.log}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- the people -------------------------------------------------------------------------------

@dataclass
class Target:
    incident_id: int
    number: str
    sys_id: str
    jira_key: str


class People(threading.Thread):
    """Edit both sides at random until stopped, remembering the last value each field was given
    and every comment written. An edit the remote refused is not remembered."""

    def __init__(self, remotes: Remotes, targets: list[Target], expected: dict[int, dict[str, Any]],
                 pause: float, seed: int):
        super().__init__(name="people", daemon=True)
        self.remotes, self.targets, self.expected = remotes, targets, expected
        self.pause = pause
        self.random = random.Random(seed)
        self.stopping = threading.Event()
        self.last_edit: dict[tuple[int, str], float] = {}
        self.edits = 0
        self.comments = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stopping.wait(self.pause):
            try:
                self.edit_once()
            except requests.RequestException as error:   # a simulator hiccup: note it, go on
                self.errors.append(str(error))

    def edit_once(self) -> None:
        target = self.random.choice(self.targets)
        side = self.random.choice(["servicenow", "jira"])
        what = self.random.choice(["title", "priority", "status", "comment", "comment"])
        if what == "comment":
            body = self.random.choice(BODIES)
            if side == "servicenow":
                done = self.remotes.sn_edit(target.sys_id, {
                    self.random.choice(["work_notes", "comments"]): body})
            else:
                done = self.remotes.jira_comment(target.jira_key, body)
            if done:
                self.expected[target.incident_id]["comments"][body] += 1
                self.comments += 1
                self.edits += 1
            return
        now = time.monotonic()
        if now - self.last_edit.get((target.incident_id, what), -FIELD_GAP) < FIELD_GAP:
            return
        if what == "title":
            value = self.random.choice(TITLES)
            done = (self.remotes.sn_edit(target.sys_id, {"short_description": value})
                    if side == "servicenow" else
                    self.remotes.jira_edit(target.jira_key, {"summary": f"[{target.number}] {value}"}))
        elif what == "priority":
            value = self.random.choice(sorted(PRIORITY_PAIRS))
            impact, urgency = PRIORITY_PAIRS[value]
            name = {v: k for k, v in JIRA_PRIORITY.items()}[value]
            done = (self.remotes.sn_edit(target.sys_id, {"impact": impact, "urgency": urgency})
                    if side == "servicenow" else
                    self.remotes.jira_edit(target.jira_key, {"priority": {"name": name}}))
        else:
            value = self.random.choice(sorted(SN_STATE_EDITS))
            done = (self.remotes.sn_edit(target.sys_id, SN_STATE_EDITS[value])
                    if side == "servicenow" else
                    # A refused transition (already in that status) changes nothing either way.
                    self.remotes.jira_transition(target.jira_key, JIRA_STATUS_NAMES[value])
                    or self.expected[target.incident_id][what] == value)
        if done:
            self.last_edit[(target.incident_id, what)] = now
            self.expected[target.incident_id][what] = value
            self.edits += 1


# -- comparing --------------------------------------------------------------------------------

def compare(store: StoreView, remotes: Remotes, targets: list[Target],
            expected: dict[int, dict[str, Any]] | None) -> dict[str, list[str]]:
    """Lost updates (store vs what people did last), disagreeing pairs (remote vs store) and
    duplicates, each as readable lines."""
    incidents = store.incidents()
    sn_records = remotes.sn_records()
    found: dict[str, list[str]] = {"lost_updates": [], "settled_by_policy": [],
                                   "lost_comments": [], "disagreeing": [],
                                   "duplicated_records": [], "duplicated_comments": []}
    if len(incidents) > len(targets):
        found["duplicated_records"].append(f"{len(incidents)} incidents for {len(targets)} records")
    if len(sn_records) > len(targets):
        found["duplicated_records"].append(f"{len(sn_records)} ServiceNow records, {len(targets)} made")
    issues = remotes.jira_issue_count()
    if issues > len(targets):
        found["duplicated_records"].append(f"{issues} Jira issues for {len(targets)} incidents")
    for target in targets:
        stored = incidents[target.incident_id]
        record = sn_records[target.sys_id]
        issue = remotes.jira_issue(target.jira_key)
        prefix = f"[{target.number}] "
        sides = {
            "servicenow": {"title": record["short_description"],
                           "priority": SN_PRIORITY.get(record["priority"]),
                           "status": SN_STATUS.get(record["state"]),
                           "comments": remotes.sn_journal(target.sys_id)},
            "jira": {"title": issue["summary"][len(prefix):] if issue["summary"].startswith(prefix)
                     else issue["summary"],
                     "priority": JIRA_PRIORITY.get((issue.get("priority") or {}).get("name")),
                     "status": JIRA_STATUS.get(issue["status"]["name"]),
                     "comments": remotes.jira_comments(target.jira_key)}}
        for system, values in sides.items():
            differ = [name for name in ("title", "priority", "status", "comments")
                      if values[name] != stored[name]]
            if differ:
                found["disagreeing"].append(
                    f"{target.number} {system}: " + ", ".join(
                        f"{name} {values[name]!r} != store {stored[name]!r}" for name in differ))
        if expected is None:
            continue
        wanted = expected[target.incident_id]
        for name in ("title", "priority", "status"):
            if stored[name] != wanted[name]:
                kind = "settled_by_policy" if name in stored["conflicts"] else "lost_updates"
                history = "" if kind == "settled_by_policy" or name == "status" else (
                    "; Jira history: " + ", ".join(remotes.jira_history(
                        target.jira_key, {"title": "summary"}.get(name, name))[-4:]))
                found[kind].append(f"{target.number} {name}: store {stored[name]!r}, "
                                   f"last edit {wanted[name]!r}{history}")
        for body, times in wanted["comments"].items():
            if stored["comments"][body] < times:
                found["lost_comments"].append(f"{target.number} {body!r}: store "
                                              f"{stored['comments'][body]}, written {times}")
        for system, values in [("store", stored), *sides.items()]:
            for body, times in values["comments"].items():
                if times > wanted["comments"][body]:
                    found["duplicated_comments"].append(
                        f"{target.number} {body!r} in {system}: {times}, written "
                        f"{wanted['comments'][body]}")
    return found


def wait_for(what: str, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def writes_during_polls(remotes: Remotes, polls: int = 3, timeout: float = 60.0) -> int:
    """Remote writes while each connector polls ``polls`` more times (counted in the request logs)."""
    for system in ("servicenow", "jira"):
        remotes.clear_requests(system)
    poll_paths = {"servicenow": "/api/now/table/incident", "jira": "/search"}

    def polled() -> bool:
        return all(sum(1 for r in remotes.requests(system)
                       if r["method"] == "GET" and path in r["path"]) >= polls
                   for system, path in poll_paths.items())
    wait_for(f"{polls} polls of each connector", polled, timeout)
    return sum(1 for system in ("servicenow", "jira") for r in remotes.requests(system)
               if r["method"] in WRITES)


# -- the soak ---------------------------------------------------------------------------------

def run_soak(settings: SoakSettings) -> SoakFigures:
    figures = SoakFigures(store=settings.store, incidents=settings.incidents, kills=settings.kills)
    began = time.monotonic()
    rng = random.Random(settings.seed)
    with ExitStack() as stack:
        workdir = settings.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(store_url(settings.store, workdir))
        migrating = db.open_engine(url, pool_size=1)
        db.upgrade(migrating)
        migrating.dispose()
        port = free_port()
        sn_url = stack.enter_context(simulator_process("servicenow", extra=[
            "--webhook-url", f"http://127.0.0.1:{port}/webhooks/servicenow",
            "--webhook-secret", SECRETS["SN_SECRET"]]))
        jira_url = stack.enter_context(simulator_process("jira", extra=[
            "--webhook-url", f"http://127.0.0.1:{port}/webhooks/jira",
            "--webhook-secret", SECRETS["JIRA_SECRET"]]))
        remotes = Remotes(sn_url, jira_url)
        config = write_config(workdir / "syncd.yaml", url, sn_url, jira_url, port)
        daemon = DaemonProcess(config, port, workdir / "syncd.log")
        stack.callback(daemon.stop)

        # People raise the incidents; the daemon mirrors them all before the chaos begins.
        sys_ids = []
        for n in range(settings.incidents):
            impact, urgency = PRIORITY_PAIRS["P3"]
            sys_ids.append(remotes.sn_create({"short_description": TITLES[n % len(TITLES)],
                                              "impact": impact, "urgency": urgency}))
        daemon.start()
        store = StoreView(url)
        stack.callback(store.close)
        wait_for("every incident in Jira", lambda: sum(
            1 for link in store.links().values() if "jira" in link) == settings.incidents, 120)
        by_sys_id = {links["servicenow"]: (incident_id, links["jira"][1])
                     for incident_id, links in store.links().items()}
        numbers = {i: incident["number"] for i, incident in store.incidents().items()}
        targets = [Target(by_sys_id[s][0], numbers[by_sys_id[s][0]], s, by_sys_id[s][1])
                   for s in sys_ids]
        expected = {t.incident_id: {"title": TITLES[n % len(TITLES)], "priority": "P3",
                                    "status": "triggered", "comments": Counter()}
                    for n, t in enumerate(targets)}

        people = People(remotes, targets, expected, settings.edit_pause, settings.seed)
        people.start()
        faults_end: dict[str, float] = {}
        restarted = time.monotonic()
        for kill in range(1, settings.kills + 1):
            if kill == max(1, settings.kills // 3):
                remotes.fault("servicenow", {"kind": "status", "status": 503})
                faults_end["servicenow"] = time.monotonic() + settings.outage
            if kill == max(1, 2 * settings.kills // 3):
                remotes.fault("jira", {"requests_per_second": 2})
                faults_end["jira"] = time.monotonic() + settings.storm
            if kill == settings.kills:          # the last kill: faults over, people stop with it
                time.sleep(max(0.0, max(faults_end.values(), default=0) - time.monotonic()))
            time.sleep(rng.uniform(*settings.run_between_kills))
            for system, end in list(faults_end.items()):
                if time.monotonic() >= end:
                    remotes.clear_faults(system)
                    del faults_end[system]
            if kill == settings.kills:
                people.stopping.set()
                people.join()
            daemon.kill()
            restarted = daemon.start()

        # Quiet: wait for the outbox to empty for good and every pair to agree with the store.
        last_open = restarted
        next_compare = 0.0
        while time.monotonic() - restarted < settings.timeout:
            now = time.monotonic()
            if store.open_outbox_rows():
                last_open = now
            elif now >= next_compare:
                next_compare = now + 2.0
                if not compare(store, remotes, targets, None)["disagreeing"] \
                        and not store.open_outbox_rows():
                    figures.quiet_after = time.monotonic() - restarted
                    break
            time.sleep(0.25)
        figures.outbox_empty_after = (last_open - restarted) if not store.open_outbox_rows() else None
        found = compare(store, remotes, targets, expected)
        figures.lost_updates = found["lost_updates"]
        figures.settled_by_policy = found["settled_by_policy"]
        figures.lost_comments = found["lost_comments"]
        figures.duplicated_records = found["duplicated_records"]
        figures.duplicated_comments = found["duplicated_comments"]
        figures.disagreeing_pairs = found["disagreeing"]
        figures.paused = store.paused()
        figures.dead_letters = store.dead_letters()
        if figures.quiet_after is not None:
            figures.writes_after_quiet = writes_during_polls(remotes)
        figures.edits, figures.comments_written = people.edits, people.comments
        figures.people_errors = list(people.errors)
        figures.start_seconds = daemon.start_seconds
        figures.duration = time.monotonic() - began
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    defaults = SoakSettings()
    parser.add_argument("--incidents", type=int, default=defaults.incidents)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--outage", type=float, default=defaults.outage)
    parser.add_argument("--storm", type=float, default=defaults.storm)
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--keep", type=Path, help="keep the store, config and daemon log here")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    figures = run_soak(SoakSettings(store=args.store, incidents=args.incidents, kills=args.kills,
                                    outage=args.outage, storm=args.storm, timeout=args.timeout,
                                    seed=args.seed, workdir=args.keep))
    print(figures.summary())
    clean = not (figures.lost or figures.duplicated or figures.disagreeing_pairs
                 or figures.writes_after_quiet)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
