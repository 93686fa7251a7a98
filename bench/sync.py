"""End-to-end sync figures (issues 5 and 9): the real engine against both simulators with latency.

Setup: the ServiceNow and Jira simulators each run in their own process (``syncd simulate``) with
``Fault("latency", seconds=--latency)`` on every API request. The store (SQLite by default,
``--store-url`` for PostgreSQL) and both simulators are seeded directly with ``--incidents`` linked
incidents (clones of one incident the real engine synced, written as rows and state files, not
through the API). The engine is ``syncd.engine.sync_engine.SyncEngine`` with its loops under the
supervisor (pollers every ``--poll-interval``, the hint worker, ``--workers`` outbox workers), in
this process. ServiceNow creates incidents; a new incident gets a Jira issue, and a ServiceNow
record when it was not made there.

A change is a person editing a ServiceNow incident's short description, followed at once by
``engine.hint("servicenow", sys_id)`` as the webhook would; the change is synced when the Jira
simulator has answered the PUT of that issue's summary. Phases (``--phase``, default all, in this
order):

* burst: ``--changes`` edits at once on distinct incidents: changes/s, remote calls per change
  (from the simulators' request logs, and per operation from syncd's own request counter), and the
  throughput the remote calls alone allow at the engine's concurrency;
* paced: ``--paced`` edits at ``--rate`` per second: end-to-end latency p50/p99 from the edit to
  the write landing in Jira;
* creates: two bursts of ``--creates`` new P1 incidents, first created by a person in ServiceNow
  (each hinted), then through the incident command the API runs: remote calls per new incident
  and per remote record syncd created, until every incident is linked to its new records;
* quiet: a burst of ``--quiet-edits`` edits, then the engine's loops stop and the benchmark polls
  each connector ``--polls`` times one second apart: requests per quiet poll per connector.

Peak memory is the RSS of this process (engine, store session, connectors) sampled during the
phases, with the seeding done in a child process so its garbage does not count. The script also
runs on the baseline of issue 9 (commit c3d9eb5, ``syncd.engine.runner.Engine``), so both can be
measured side by side.

    /work/venv/bin/python bench/sync.py --quick                 # under a minute: a sanity check
    /work/venv/bin/python bench/sync.py --incidents 10000
    /work/venv/bin/python bench/sync.py --incidents 100000
    /work/venv/bin/python bench/sync.py --incidents 10000 --phase quiet
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import insert, inspect, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ms, percentile, simulator_process  # noqa: E402
from syncd.clock import SystemClock  # noqa: E402
from syncd.connectors.http import RetryPolicy  # noqa: E402
from syncd.connectors.jira import JiraConnector  # noqa: E402
from syncd.connectors.servicenow import ServiceNowConnector  # noqa: E402
from syncd.mapping import default_mapping_path  # noqa: E402
from syncd.mapping.reload import MappingSet  # noqa: E402
from syncd.metrics import REMOTE_REQUESTS  # noqa: E402
from syncd.store import db  # noqa: E402

# The same script measures the baseline of issue 9 (commit c3d9eb5) side by side with the current
# layout: there the engine was syncd.engine.runner.Engine, starting its own threads, and the
# tables lived in syncd.store.models.
try:
    from syncd.engine.connector_runtime import ConnectorRuntime
    from syncd.engine.models import Link, SyncCursorRow
    from syncd.engine.supervisor import Supervisor
    from syncd.engine.sync_engine import EngineSettings, SyncEngine
    from syncd.incidents.models import Incident
except ImportError:
    from syncd.engine.runner import Engine as SyncEngine, EngineSettings  # type: ignore
    from syncd.engine.runtime import ConnectorRuntime  # type: ignore
    from syncd.store.models import Incident, Link, SyncCursorRow  # type: ignore
    Supervisor = None

SN_AUTH = ("admin", "admin")
JIRA_AUTH = ("syncd", "syncd-api-token")
SN_TIME = "%Y-%m-%d %H:%M:%S"


# -- building the engine ------------------------------------------------------------------------

def build_engine(sessions, sn_url: str, jira_url: str, *, workers: int, poll_interval: float
                 ) -> SyncEngine:
    """The engine as the daemon assembles it: ServiceNow creates incidents, and a new incident
    gets a Jira issue (from ServiceNow or the API) and a ServiceNow record (from the API)."""
    mappings = MappingSet({"servicenow": default_mapping_path("servicenow"),
                           "jira": default_mapping_path("jira")})
    policy = RetryPolicy(max_attempts=3, max_total_seconds=10)
    clock = SystemClock()
    interval = timedelta(seconds=poll_interval)
    runtimes = {
        "servicenow": ConnectorRuntime(
            "servicenow", ServiceNowConnector("servicenow", url=sn_url, username="admin",
                                              password="admin", policy=policy, clock=clock),
            lambda: mappings.get("servicenow"), create_incidents=True, create_tickets=True,
            poll_interval=interval),
        "jira": ConnectorRuntime(
            "jira", JiraConnector("jira", url=jira_url, username="syncd", token="syncd-api-token",
                                  project="OPS", policy=policy, clock=clock),
            lambda: mappings.get("jira"), create_tickets=True, poll_interval=interval),
    }
    return SyncEngine(sessions=sessions, runtimes=runtimes, clock=clock,
                      settings=EngineSettings(outbox_workers=workers, outbox_idle_wait=0.2,
                                              pause_share=None, reconcile_after_downtime=None))


# -- seeding (runs in a child process) ----------------------------------------------------------

def _row(obj: Any) -> dict[str, Any]:
    return {attr.key: getattr(obj, attr.key) for attr in inspect(obj).mapper.column_attrs}


def seed(store_url: str, workdir: str, incidents: int) -> None:
    """Sync one incident for real (in-process simulators), then clone it ``incidents`` times into
    the store and into the simulators' state files, all last updated an hour ago."""
    from syncd.simulators.jira import JiraSimulator, jira_time
    from syncd.simulators.servicenow import ServiceNowSimulator

    engine_db = db.open_engine(store_url, pool_size=2)
    db.upgrade(engine_db)
    sessions = db.session_factory(engine_db)
    with ServiceNowSimulator() as sn, JiraSimulator() as jira:
        engine = build_engine(sessions, sn.base_url, jira.base_url, workers=1, poll_interval=1)
        sn.human_create({"short_description": "template", "urgency": "2", "impact": "2"})
        for _ in range(4):
            engine.run_cycle()
        sn_state, jira_state = sn.state_to_json(), jira.state_to_json()
        for runtime in engine.runtimes.values():
            runtime.connector.close()
    with db.transaction(sessions) as session:
        incident = _row(session.query(Incident).one())
        links = {link.connector: _row(link) for link in session.query(Link).all()}
        for table in ("timeline_entry", "outbox", "link", "sync_cursor", "incident"):
            session.execute(text(f"DELETE FROM {table}"))
    if set(links) != {"servicenow", "jira"}:
        raise RuntimeError(f"the template incident did not sync to both sides: links {sorted(links)}")

    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    sn_when, jira_when = an_hour_ago.strftime(SN_TIME), jira_time(an_hour_ago)
    sn_template = next(r for r in sn_state["tables"]["incident"])
    jira_template = next(iter(jira_state["issues"].values()))
    sn_rows, jira_issues, incident_rows, link_rows = [], {}, [], []
    for n in range(incidents):
        incident_id, title = n + 1, f"bench incident {n + 1}"
        sys_id, number = f"{n + 1:032x}", f"INC{1_000_000 + n:07d}"
        sn_rows.append({**sn_template, "sys_id": sys_id, "number": number, "short_description": title,
                        "sys_updated_on": sn_when, "sys_created_on": sn_when, "opened_at": sn_when})
        issue_id, key = str(100_000 + n), f"OPS-{n + 1}"
        issue = json.loads(json.dumps(jira_template))
        issue.update(id=issue_id, key=key, updated=jira_when, created=jira_when,
                     statuscategorychangedate=jira_when, comments=[], changelog=[])
        issue["fields"]["summary"] = title
        issue["fields"]["labels"] = [f"syncd-{incident_id}"]
        jira_issues[issue_id] = issue
        incident_rows.append({**incident, "id": incident_id, "title": title})
        for connector, remote_id, remote_key, version in (
                ("servicenow", sys_id, number, sn_template["sys_mod_count"]),
                ("jira", issue_id, key, jira_when)):
            link = links[connector]
            link_rows.append({**link, "id": None, "incident_id": incident_id, "remote_id": remote_id,
                              "remote_key": remote_key, "remote_version": version,
                              "remote_url": link["remote_url"].replace(link["remote_key"], remote_key),
                              "shadow": {**link["shadow"], "title": title}})
    for row in link_rows:
        del row["id"]
    sn_state["tables"]["incident"] = sn_rows
    sn_state["next_number"] = 1_000_000 + incidents
    jira_state.update(issues=jira_issues, next_issue_id=100_000 + incidents)
    jira_state["next_number"]["OPS"] = incidents + 1
    with open(os.path.join(workdir, "servicenow.json"), "w") as fh:
        json.dump(sn_state, fh)
    with open(os.path.join(workdir, "jira.json"), "w") as fh:
        json.dump(jira_state, fh)

    now = datetime.now(timezone.utc)
    with db.transaction(sessions) as session:
        for start in range(0, incidents, 5000):
            session.execute(insert(Incident), incident_rows[start:start + 5000])
        for start in range(0, len(link_rows), 5000):
            session.execute(insert(Link), link_rows[start:start + 5000])
        for connector in ("servicenow", "jira"):      # polls start from now, not from the seed
            session.add(SyncCursorRow(connector=connector, watermark=now, seen=[],
                                      last_poll_at=now, updated_at=now))
    engine_db.dispose()


# -- measuring ----------------------------------------------------------------------------------

class RssSampler:
    """Peak resident set size of this process, sampled every 50 ms while running."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> "RssSampler":
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def request_log(url: str) -> list[dict[str, Any]]:
    return requests.get(f"{url}/_sim/requests", timeout=30).json()


def operation_counts() -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for metric in REMOTE_REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["connector"], sample.labels["operation"])
                counts[key] = counts.get(key, 0) + sample.value
    return counts


@dataclass
class Phase:
    edits: dict[str, float]          # Jira issue id -> wall time of the ServiceNow edit
    landed: dict[str, float]         # Jira issue id -> wall time the summary PUT was answered
    started: float
    sn_requests: int
    jira_requests: int
    operations: dict[tuple[str, str], float]

    @property
    def latencies(self) -> list[float]:
        return [self.landed[i] - at for i, at in self.edits.items() if i in self.landed]

    @property
    def elapsed(self) -> float:
        return max(self.landed.values(), default=self.started) - self.started


def run_phase(engine: SyncEngine, sn_url: str, jira_url: str, targets: list[int], *, rate: float | None,
              timeout: float) -> Phase:
    """Edit each target incident in ServiceNow (all at once, or ``rate`` per second), hint the
    engine, and wait until Jira has been written for every one (or ``timeout``)."""
    for url in (sn_url, jira_url):
        requests.delete(f"{url}/_sim/requests", timeout=10)
    before = operation_counts()
    edits: dict[str, float] = {}
    session = requests.Session()
    started = time.time()
    for n, incident in enumerate(targets):
        if rate:
            pause = started + n / rate - time.time()
            if pause > 0:
                time.sleep(pause)
        sys_id = f"{incident:032x}"
        answer = session.post(f"{sn_url}/_sim/human/incident/{sys_id}", json={
            "user": "beth.anglin", "fields": {"short_description": f"edited {time.time():.6f}"}})
        answer.raise_for_status()
        edits[str(100_000 + incident - 1)] = time.time()
        engine.hint("servicenow", sys_id)
    landed: dict[str, float] = {}
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in request_log(jira_url):
            issue = entry["path"].rsplit("/", 1)[-1]
            if (entry["method"] == "PUT" and entry["status"] < 300 and issue in edits
                    and issue not in landed and entry["at"] >= edits[issue] - 0.001):
                landed[issue] = entry["at"] + entry["duration"]
        if len(landed) == len(edits):
            break
        time.sleep(0.2)
    time.sleep(1.0)      # let the echo of the last writes come back and be handled
    after = operation_counts()
    return Phase(edits, landed, started,
                 len([e for e in request_log(sn_url)]), len([e for e in request_log(jira_url)]),
                 {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)})


def report_phase(name: str, phase: Phase, latency: float, workers: int) -> None:
    done = len(phase.landed)
    print(f"\n[{name}] {done}/{len(phase.edits)} changes synced in {phase.elapsed:.2f} s "
          f"= {done / phase.elapsed if phase.elapsed else 0:.1f} changes/s")
    lat = phase.latencies
    print(f"  edit -> Jira write: p50 {ms(percentile(lat, 0.5))}, p99 {ms(percentile(lat, 0.99))}, "
          f"max {ms(max(lat, default=float('nan')))}")
    total = phase.sn_requests + phase.jira_requests
    print(f"  remote calls per change: {total / max(1, done):.2f} "
          f"(ServiceNow {phase.sn_requests / max(1, done):.2f}, Jira {phase.jira_requests / max(1, done):.2f})")
    for (connector, operation), count in sorted(phase.operations.items()):
        print(f"    {connector:<10} {operation:<18} {count / max(1, done):6.2f} per change")
    hint_calls = sum(c for (conn, op), c in phase.operations.items()
                     if conn == "servicenow" and op in ("fetch", "list_comments", "lookup_reference"))
    out_calls = sum(c for (conn, op), c in phase.operations.items()
                    if conn == "jira" and op in ("update", "fetch", "transition", "search_users"))
    hint_per, out_per = hint_calls / max(1, done), out_calls / max(1, done)
    # Inbound, the hint worker and the ServiceNow poller are two readers (each read may carry a
    # batch of records, which the per-change call count already reflects); outbound, the outbox
    # workers write in parallel. The slower stage bounds the pipeline.
    bounds = []
    if hint_per:
        bounds.append(2 / (hint_per * latency))
    if out_per:
        bounds.append(workers / (out_per * latency))
    if bounds:
        bound = min(bounds)
        achieved = done / phase.elapsed if phase.elapsed else 0
        print(f"  remote-bound throughput at this concurrency (hint worker + poller x {hint_per:.2f} calls, "
              f"{workers} outbox workers x {out_per:.2f} calls, {latency * 1000:.0f} ms each): "
              f"{bound:.1f} changes/s; achieved {achieved / bound:.0%} of it")


class Loops:
    """The engine's loops in threads: under the supervisor, or the baseline engine's own."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.supervisor = None
        if Supervisor is not None:
            self.supervisor = Supervisor(clock=engine.clock)
            engine.register(self.supervisor)
        self.running = False

    def start(self) -> None:
        (self.supervisor or self.engine).start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            (self.supervisor or self.engine).stop(timeout=10)
            self.running = False


def _epoch(when: datetime) -> float:
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _links_of(engine: SyncEngine, incident_ids: list[int]) -> dict[int, dict[str, float]]:
    """{incident id: {connector: when its link was created}} for the given incidents."""
    found: dict[int, dict[str, float]] = {}
    with engine.sessions() as session:
        for start in range(0, len(incident_ids), 500):
            for incident_id, connector, created_at in session.query(
                    Link.incident_id, Link.connector, Link.created_at).filter(
                    Link.incident_id.in_(incident_ids[start:start + 500])):
                found.setdefault(incident_id, {})[connector] = _epoch(created_at)
    return found


def _incidents_of(engine: SyncEngine, sys_ids: list[str]) -> dict[str, int]:
    """{ServiceNow sys_id: incident id} for the records among ``sys_ids`` already linked."""
    with engine.sessions() as session:
        return dict(session.query(Link.remote_id, Link.incident_id).filter(
            Link.connector == "servicenow", Link.remote_id.in_(sys_ids)))


@dataclass
class Creates:
    name: str
    created: dict[str, float]        # key -> wall time the incident was created (in SN or the API)
    landed: dict[str, float]         # key -> when its last expected link was committed
    records: int                     # remote records syncd had to create for each incident
    sn_requests: int
    jira_requests: int
    operations: dict[tuple[str, str], float]

    @property
    def elapsed(self) -> float:
        return max(self.landed.values(), default=0) - min(self.created.values(), default=0)


def run_creates(engine: SyncEngine, sn_url: str, jira_url: str, count: int, *, source: str,
                timeout: float) -> Creates:
    """A burst of ``count`` new P1 incidents at once, from ServiceNow (a person creates the
    record, a webhook hints it) or from syncd's own API (the incident command, then a wake-up as
    the API router does). Done when every incident is linked to the records syncd must create:
    the Jira issue, and for API incidents the ServiceNow record too."""
    for url in (sn_url, jira_url):
        requests.delete(f"{url}/_sim/requests", timeout=10)
    before = operation_counts()
    created: dict[str, float] = {}
    stamp = time.time()
    if source == "servicenow":
        wanted = ("jira",)
        session = requests.Session()
        for n in range(count):
            answer = session.post(f"{sn_url}/_sim/human/incident", json={
                "user": "beth.anglin", "fields": {"short_description": f"new P1 {stamp} #{n}",
                                                  "impact": "1", "urgency": "1"}})
            answer.raise_for_status()
            sys_id = answer.json()["result"]["sys_id"]
            created[sys_id] = time.time()
            engine.hint("servicenow", sys_id)
    else:
        wanted = ("servicenow", "jira")
        commands = getattr(engine, "commands", None) or engine.incidents   # baseline: .incidents
        for n in range(count):
            incident = commands.create({"title": f"API P1 {stamp} #{n}", "priority": "P1",
                                        "urgency": "high"}, actor="bench", source="api")
            created[str(incident.id)] = time.time()
            engine.wake()
    landed: dict[str, float] = {}
    incident_of: dict[str, int] = ({} if source == "servicenow"
                                   else {key: int(key) for key in created})
    deadline = time.time() + timeout
    while time.time() < deadline and len(landed) < count:
        time.sleep(0.1)
        if source == "servicenow" and len(incident_of) < count:
            incident_of.update(_incidents_of(engine, [k for k in created if k not in incident_of]))
        links = _links_of(engine, [incident_of[k] for k in created
                                   if k in incident_of and k not in landed])
        for key, incident_id in incident_of.items():
            at = links.get(incident_id, {})
            if key not in landed and all(connector in at for connector in wanted):
                landed[key] = max(at[connector] for connector in wanted)
    time.sleep(1.0)      # let the polls see the new records (our own creates' echoes)
    after = operation_counts()
    origin = "ServiceNow" if source == "servicenow" else "the API"
    return Creates(f"{count} new P1 incidents from {origin}", created, landed, len(wanted),
                   len(request_log(sn_url)), len(request_log(jira_url)),
                   {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)})


def report_creates(phase: Creates) -> None:
    done = len(phase.landed)
    print(f"\n[creates: {phase.name}] {done}/{len(phase.created)} incidents linked to all "
          f"{phase.records} new remote record(s) in {phase.elapsed:.2f} s")
    lat = [phase.landed[k] - at for k, at in phase.created.items() if k in phase.landed]
    print(f"  created -> last link committed: p50 {ms(percentile(lat, 0.5))}, "
          f"p99 {ms(percentile(lat, 0.99))}")
    total = phase.sn_requests + phase.jira_requests
    made = max(1, done * phase.records)
    print(f"  remote calls per new incident: {total / max(1, done):.2f}; "
          f"per remote record created: {total / made:.2f} (ServiceNow {phase.sn_requests / made:.2f}, "
          f"Jira {phase.jira_requests / made:.2f})")
    for (connector, operation), count in sorted(phase.operations.items()):
        print(f"    {connector:<10} {operation:<18} {count / made:6.2f} per record created")


def run_quiet(engine: SyncEngine, loops: Loops, sn_url: str, jira_url: str, targets: list[int], *,
              polls: int, timeout: float
              ) -> tuple[dict[str, list[int]], dict[tuple[str, str], float]]:
    """A burst of edits synced by the running engine, then its loops stopped and ``polls`` polls
    of each connector driven here one second apart, nothing else talking to the remotes: what a
    poll costs while its overlap window still holds the burst. Returns {connector: requests of
    each poll} and the requests by operation."""
    burst = run_phase(engine, sn_url, jira_url, targets, rate=None, timeout=timeout)
    if len(burst.landed) < len(targets):
        print(f"  (quiet: only {len(burst.landed)}/{len(targets)} edits of its burst synced)")
    time.sleep(2.0)      # the pollers see the burst's echoes
    loops.stop()
    urls = {"servicenow": sn_url, "jira": jira_url}
    counts: dict[str, list[int]] = {name: [] for name in urls}
    before = operation_counts()
    started = time.time()
    for n in range(polls):
        pause = started + n - time.time()
        if pause > 0:
            time.sleep(pause)
        for name, url in urls.items():
            requests.delete(f"{url}/_sim/requests", timeout=10)
            engine.poll(name)
            counts[name].append(len(request_log(url)))
    after = operation_counts()
    return counts, {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def report_quiet(counts: dict[str, list[int]], operations: dict[tuple[str, str], float],
                 edits: int) -> None:
    polls = len(next(iter(counts.values()), []))
    print(f"\n[quiet: {polls} polls per connector, 1 s apart, after a burst of {edits} edits]")
    for name, per_poll in counts.items():
        print(f"  {name:<10} {sum(per_poll) / max(1, polls):.2f} requests per poll "
              f"(first {per_poll[:1]}, max {max(per_poll, default=0)})")
    for (connector, operation), count in sorted(operations.items()):
        print(f"    {connector:<10} {operation:<18} {count / max(1, polls):6.2f} per poll")
    every = [n for per_poll in counts.values() for n in per_poll]
    print(f"  average over connectors: {sum(every) / max(1, len(every)):.2f} requests per poll")


PHASES = ("burst", "paced", "creates", "quiet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=10_000, help="linked incidents seeded")
    parser.add_argument("--phase", action="append", choices=PHASES,
                        help="a phase to run (repeat it; default: all, in the order "
                             f"{', '.join(PHASES)})")
    parser.add_argument("--changes", type=int, default=200, help="edits in the burst phase")
    parser.add_argument("--paced", type=int, default=100, help="edits in the paced phase")
    parser.add_argument("--rate", type=float, default=4.0, help="paced edits per second")
    parser.add_argument("--creates", type=int, default=100,
                        help="new incidents in each burst of the creates phase")
    parser.add_argument("--quiet-edits", type=int, default=100,
                        help="edits in the burst before the quiet polls")
    parser.add_argument("--polls", type=int, default=30, help="quiet polls per connector")
    parser.add_argument("--latency", type=float, default=0.05, help="injected remote latency (s)")
    parser.add_argument("--workers", type=int, default=4, help="outbox worker threads")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--store-url", help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on a phase after (s)")
    parser.add_argument("--quick", action="store_true",
                        help="a sanity run in under a minute: 300 incidents, 30 + 20 changes, "
                             "30 edits before 10 quiet polls")
    args = parser.parse_args(argv)
    if args.quick:
        args.incidents, args.changes, args.paced, args.rate = 300, 30, 20, 5.0
        args.quiet_edits, args.polls = 30, 10
    phases = [phase for phase in PHASES if phase in (args.phase or PHASES)]
    edits = {"burst": args.changes, "paced": args.paced, "quiet": args.quiet_edits}
    if sum(edits.get(phase, 0) for phase in phases) > args.incidents:
        parser.error("the edits of the chosen phases must not exceed --incidents "
                     "(each edit hits a distinct one)")

    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as workdir:
        store_url = args.store_url or f"sqlite:///{workdir}/syncd.db"
        began = time.monotonic()
        child = multiprocessing.get_context("spawn").Process(
            target=seed, args=(store_url, workdir, args.incidents))
        child.start()
        child.join()
        if child.exitcode != 0:
            print(f"seeding failed (exit {child.exitcode})", file=sys.stderr)
            return 1
        print(f"seeded {args.incidents} linked incidents in {time.monotonic() - began:.1f} s; "
              f"store {store_url.split('://')[0]}, latency {args.latency * 1000:.0f} ms, "
              f"{args.workers} outbox workers, poll every {args.poll_interval:g} s; "
              f"phases {', '.join(phases)}")
        latency_fault = {"kind": "latency", "seconds": args.latency, "path": "^/(api|rest)/"}
        reports = []
        with simulator_process("servicenow", extra=["--state-file", f"{workdir}/servicenow.json"]) as sn_url, \
                simulator_process("jira", extra=["--state-file", f"{workdir}/jira.json"]) as jira_url:
            for url in (sn_url, jira_url):
                requests.post(f"{url}/_sim/faults", json=latency_fault, timeout=10).raise_for_status()
            engine_db = db.open_engine(store_url, pool_size=args.workers + 4)
            engine = build_engine(db.session_factory(engine_db), sn_url, jira_url,
                                  workers=args.workers, poll_interval=args.poll_interval)
            targets = random.Random(7).sample(range(1, args.incidents + 1),
                                              sum(edits.get(phase, 0) for phase in phases))
            with RssSampler() as rss:
                at_start = rss.peak
                loops = Loops(engine)
                loops.start()
                try:
                    for phase in phases:
                        mine, targets = targets[:edits.get(phase, 0)], targets[edits.get(phase, 0):]
                        if phase == "burst":
                            result = run_phase(engine, sn_url, jira_url, mine, rate=None,
                                               timeout=args.timeout)
                            reports.append(lambda r=result: report_phase(
                                f"burst of {args.changes}", r, args.latency, args.workers))
                        elif phase == "paced":
                            result = run_phase(engine, sn_url, jira_url, mine, rate=args.rate,
                                               timeout=args.timeout)
                            reports.append(lambda r=result: report_phase(
                                f"paced, {args.rate:g}/s", r, args.latency, args.workers))
                        elif phase == "creates":
                            for source in ("servicenow", "api"):
                                result = run_creates(engine, sn_url, jira_url, args.creates,
                                                     source=source, timeout=args.timeout)
                                reports.append(lambda r=result: report_creates(r))
                        else:
                            counts, operations = run_quiet(engine, loops, sn_url, jira_url, mine,
                                                           polls=args.polls, timeout=args.timeout)
                            reports.append(lambda c=counts, o=operations, n=len(mine):
                                           report_quiet(c, o, n))
                finally:
                    loops.stop()
            for runtime in engine.runtimes.values():
                runtime.connector.close()
            engine_db.dispose()
        for report in reports:
            report()
        print(f"\nRSS: {at_start / 2**20:.0f} MiB with the engine built, peak {rss.peak / 2**20:.0f} MiB "
              f"during the run ({args.incidents} linked incidents)")
        print(f"wall time {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
