"""End-to-end sync figures (issue 5): the real engine against both simulators with remote latency.

Setup: the ServiceNow and Jira simulators each run in their own process (``syncd simulate``) with
``Fault("latency", seconds=--latency)`` on every API request. The store (SQLite by default,
``--store-url`` for PostgreSQL) and both simulators are seeded directly with ``--incidents`` linked
incidents (clones of one incident the real engine synced, written as rows and state files, not
through the API). The engine is ``syncd.engine.runner.Engine`` with its worker threads (pollers
every ``--poll-interval``, the hint worker, ``--workers`` outbox workers), in this process.

Each change is a person editing a ServiceNow incident's short description, followed at once by
``engine.hint("servicenow", sys_id)`` as the webhook would; the change is synced when the Jira
simulator has answered the PUT of that issue's summary. Two phases:

* burst: ``--changes`` edits at once on distinct incidents: changes/s, remote calls per change
  (from the simulators' request logs, and per operation from syncd's own request counter), and the
  throughput the remote calls alone allow at the engine's concurrency;
* paced: ``--paced`` edits at ``--rate`` per second: end-to-end latency p50/p99 from the edit to
  the write landing in Jira.

Peak memory is the RSS of this process (engine, store session, connectors) sampled during the
phases, with the seeding done in a child process so its garbage does not count.

    /work/venv/bin/python bench/sync.py --quick                 # under a minute: a sanity check
    /work/venv/bin/python bench/sync.py --incidents 10000
    /work/venv/bin/python bench/sync.py --incidents 100000
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
from syncd.engine.connector_runtime import ConnectorRuntime  # noqa: E402
from syncd.engine.models import Link, SyncCursorRow  # noqa: E402
from syncd.engine.supervisor import Supervisor  # noqa: E402
from syncd.engine.sync_engine import EngineSettings, SyncEngine  # noqa: E402
from syncd.incidents.models import Incident  # noqa: E402
from syncd.mapping import default_mapping_path  # noqa: E402
from syncd.mapping.reload import MappingSet  # noqa: E402
from syncd.metrics import REMOTE_REQUESTS  # noqa: E402
from syncd.store import db  # noqa: E402

SN_AUTH = ("admin", "admin")
JIRA_AUTH = ("syncd", "syncd-api-token")
SN_TIME = "%Y-%m-%d %H:%M:%S"


# -- building the engine ------------------------------------------------------------------------

def build_engine(sessions, sn_url: str, jira_url: str, *, workers: int, poll_interval: float
                 ) -> Engine:
    """The engine as the daemon assembles it: ServiceNow creates incidents, Jira gets tickets."""
    mappings = MappingSet({"servicenow": default_mapping_path("servicenow"),
                           "jira": default_mapping_path("jira")})
    policy = RetryPolicy(max_attempts=3, max_total_seconds=10)
    clock = SystemClock()
    interval = timedelta(seconds=poll_interval)
    runtimes = {
        "servicenow": ConnectorRuntime(
            "servicenow", ServiceNowConnector("servicenow", url=sn_url, username="admin",
                                              password="admin", policy=policy, clock=clock),
            lambda: mappings.get("servicenow"), create_incidents=True, poll_interval=interval),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=10_000, help="linked incidents seeded")
    parser.add_argument("--changes", type=int, default=200, help="edits in the burst phase")
    parser.add_argument("--paced", type=int, default=100, help="edits in the paced phase")
    parser.add_argument("--rate", type=float, default=4.0, help="paced edits per second")
    parser.add_argument("--latency", type=float, default=0.05, help="injected remote latency (s)")
    parser.add_argument("--workers", type=int, default=4, help="outbox worker threads")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--store-url", help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on a phase after (s)")
    parser.add_argument("--quick", action="store_true",
                        help="a sanity run in under a minute: 300 incidents, 30 + 20 changes")
    args = parser.parse_args(argv)
    if args.quick:
        args.incidents, args.changes, args.paced, args.rate = 300, 30, 20, 5.0
    if args.changes + args.paced > args.incidents:
        parser.error("--changes + --paced must not exceed --incidents (each edit hits a distinct one)")

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
              f"{args.workers} outbox workers, poll every {args.poll_interval:g} s")
        latency_fault = {"kind": "latency", "seconds": args.latency, "path": "^/(api|rest)/"}
        with simulator_process("servicenow", extra=["--state-file", f"{workdir}/servicenow.json"]) as sn_url, \
                simulator_process("jira", extra=["--state-file", f"{workdir}/jira.json"]) as jira_url:
            for url in (sn_url, jira_url):
                requests.post(f"{url}/_sim/faults", json=latency_fault, timeout=10).raise_for_status()
            engine_db = db.open_engine(store_url, pool_size=args.workers + 4)
            engine = build_engine(db.session_factory(engine_db), sn_url, jira_url,
                                  workers=args.workers, poll_interval=args.poll_interval)
            targets = random.Random(7).sample(range(1, args.incidents + 1), args.changes + args.paced)
            with RssSampler() as rss:
                at_start = rss.peak
                supervisor = Supervisor(clock=engine.clock)
                engine.register(supervisor)
                supervisor.start()
                try:
                    burst = run_phase(engine, sn_url, jira_url, targets[:args.changes], rate=None,
                                      timeout=args.timeout)
                    paced = run_phase(engine, sn_url, jira_url, targets[args.changes:],
                                      rate=args.rate, timeout=args.timeout)
                finally:
                    supervisor.stop(timeout=10)
            for runtime in engine.runtimes.values():
                runtime.connector.close()
            engine_db.dispose()
        report_phase(f"burst of {args.changes}", burst, args.latency, args.workers)
        report_phase(f"paced, {args.rate:g}/s", paced, args.latency, args.workers)
        print(f"\nRSS: {at_start / 2**20:.0f} MiB with the engine built, peak {rss.peak / 2**20:.0f} MiB "
              f"during the run ({args.incidents} linked incidents)")
        print(f"wall time {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
