"""Page delay (issue 10): how late a page reaches its receiver after its escalation step was due.

Setup: a fresh PostgreSQL schema (``--url``; dropped at the end), migrated with
``syncd.store.db.upgrade``. A generated response file has ``--users`` people (one ``json://``
contact each, pointing at a JSON receiver in this process: an ``http.server``
ThreadingHTTPServer on 127.0.0.1 that records when each message arrived), and for each person a
policy whose one rule targets them and a service using that policy. ``--incidents`` P1 incidents
are created through ``incident_service.create_incident`` in batches of 500 per transaction, with
the escalation hook installed on the sessions as the daemon installs it, so every incident gets
its escalation row as in production; incident ``n`` names service ``n mod users`` in its
``service`` field. The seeding runs in a child process, so its CPU and memory do not count. Then
every escalation row's ``next_step_at`` is set to one deadline ``--lead`` seconds ahead (or spread
evenly over ``--spread`` seconds after it), and the paging loops run as the daemon runs them:
``Escalations.cycle`` and ``--senders`` ``NotificationSender.cycle`` loops under the supervisor,
every 0.25 s, the escalation loop waking the senders, on the real system clock, with acknowledge
links signed into every page and apprise's own json:// delivery.

Why one person per incident by default (``--users`` = ``--incidents``): the per-contact throttle
stays at its default (1 message per minute) and is not what is measured; with fewer people each
gets several pages at once, the throttle would hold the later ones a minute (the product's choice,
GoAlert's default), so the benchmark then relaxes it to enough messages per minute for every page
to go at once and says so in its output. Services are found by the incident's ``service`` field
(a dict lookup), so thousands of services cost nothing at creation.

Per page: delay = arrival at the receiver - the escalation step's deadline, split into the
escalation's part (when the step fired, the time of its ``escalated`` timeline entry - the
deadline) and the sender's part (arrival - that). Printed: incidents, pages, p50/p95/p99/max delay, pages per second
(from the deadline to the last arrival), process CPU seconds of the run and peak RSS.

    /work/wt-bench-esc/.venv/bin/python bench/escalation.py --incidents 1000
    /work/wt-bench-esc/.venv/bin/python bench/escalation.py                  # 10,000
    /work/wt-bench-esc/.venv/bin/python bench/escalation.py --senders 4
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import resource
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from sqlalchemy import bindparam, select, text, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile  # noqa: E402
from syncd.clock import SystemClock  # noqa: E402
from syncd.engine.supervisor import Loop, Supervisor  # noqa: E402
from syncd.incidents import hooks  # noqa: E402
from syncd.incidents import service as incident_service  # noqa: E402
from syncd.incidents.models import TimelineEntry  # noqa: E402
from syncd.notify import throttle  # noqa: E402
from syncd.notify.links import AckLinks  # noqa: E402
from syncd.notify.sender import NotificationSender  # noqa: E402
from syncd.oncall.escalation import Escalations  # noqa: E402
from syncd.oncall.models import Escalation  # noqa: E402
from syncd.response_files import ResponseFiles  # noqa: E402
from syncd.store import db  # noqa: E402

PG_URL = os.environ.get("SYNCD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PAGING_CYCLE_SECONDS = 0.25          # as syncd.daemon runs the escalation and sender loops
SEED_BATCH = 500
NUMBER = re.compile(r"SYN-(\d+)")
LINK_SECRET = "bench-escalation-link-secret-0123456789abcdef"


# -- the receiver --------------------------------------------------------------------------------

class Receiver:
    """A JSON webhook receiver: every POST is recorded as (user, arrival wall time, incident ids
    the message names), then answered 200."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float, list[int]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text_ = f"{payload.get('title', '')}\n{payload.get('message', '')}"
                incidents = sorted({int(n) for n in NUMBER.findall(text_)})
                with receiver.lock:
                    receiver.arrivals.append((self.path.strip("/"), arrived, incidents))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver",
                                       daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self) -> int:
        with self.lock:
            return sum(len(incidents) for _, _, incidents in self.arrivals)


# -- set-up --------------------------------------------------------------------------------------

def response_file(path: Path, *, users: int, port: int) -> None:
    """``users`` people, each with one json:// contact, a policy targeting them and a service."""
    document = {
        "users": [{"id": f"u{n}", "name": f"Bench User {n}", "email": f"u{n}@example.com",
                   "contacts": {"hook": f"json://127.0.0.1:{port}/u{n}"}} for n in range(users)],
        "escalation_policies": [{"id": f"p{n}", "rules": [
            {"targets": [{"user": f"u{n}"}], "escalate_after": "30m"}]} for n in range(users)],
        "services": [{"id": f"s{n}", "name": f"Service {n}", "escalation_policy": f"p{n}",
                      "page_on": {"priority": ["P1"]}} for n in range(users)],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def seed(url: str, responses_path: str, incidents: int, users: int) -> None:
    """Create the incidents with the escalation hook installed (a child process)."""
    engine = db.open_engine(url, pool_size=2)
    sessions = db.session_factory(engine)
    clock = SystemClock()
    responses = ResponseFiles([responses_path])
    escalations = Escalations(sessions=sessions, clock=clock, responses=responses.current,
                              ack_links=None, propagate=lambda **_: None)
    hooks.install(sessions, escalations.on_incident_change)
    for start in range(0, incidents, SEED_BATCH):
        with db.transaction(sessions) as session:
            for n in range(start, min(start + SEED_BATCH, incidents)):
                incident_service.create_incident(
                    session=session, now=clock.now(), actor="bench", source="api",
                    fields={"title": f"bench incident {n}", "priority": "P1",
                            "service": f"s{n % users}"})
    engine.dispose()


def set_deadlines(sessions, *, lead: float, spread: float, incidents: int) -> dict[int, datetime]:
    """Every escalation's next step due at the deadline (spread evenly after it): incident -> due."""
    deadline = datetime.now(timezone.utc) + timedelta(seconds=lead)
    with db.transaction(sessions) as session:
        ids = session.scalars(select(Escalation.incident_id).order_by(Escalation.incident_id)).all()
        if len(ids) != incidents:
            raise RuntimeError(f"{len(ids)} escalation rows for {incidents} incidents: the hook "
                               f"did not start them all")
        step = spread / len(ids) if spread else 0.0
        due = {incident_id: deadline + timedelta(seconds=index * step)
               for index, incident_id in enumerate(ids)}
        if step:
            table = Escalation.__table__
            session.connection().execute(
                update(table).where(table.c.incident_id == bindparam("incident"))
                .values(next_step_at=bindparam("due", type_=table.c.next_step_at.type)),
                [{"incident": i, "due": at} for i, at in due.items()])
        else:
            session.execute(update(Escalation).values(next_step_at=deadline))
    return due


# -- the run -------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> None:
    users = args.users or args.incidents
    per_contact = math.ceil(args.incidents / users)
    rate = throttle.DEFAULT_RATE if per_contact == 1 else throttle.Rate(
        messages=per_contact, per=throttle.DEFAULT_RATE.per)
    schema = f"bench_esc_{uuid.uuid4().hex[:10]}"
    admin = db.open_engine(args.url, pool_size=1)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in args.url else "?"
    url = f"{args.url}{separator}options=-csearch_path%3D{schema}"
    workdir = tempfile.mkdtemp(prefix="bench-esc-")
    try:
        with Receiver() as receiver:
            responses_path = Path(workdir) / "oncall.yaml"
            response_file(responses_path, users=users, port=receiver.port)
            engine = db.open_engine(url, pool_size=4 + args.senders * 9)
            db.upgrade(engine)
            started = time.monotonic()
            child = multiprocessing.get_context("spawn").Process(
                target=seed, args=(url, str(responses_path), args.incidents, users))
            child.start()
            child.join()
            if child.exitcode != 0:
                raise RuntimeError(f"seeding failed (exit code {child.exitcode})")
            print(f"seeded {args.incidents} incidents with escalations for {users} people in "
                  f"{time.monotonic() - started:.1f} s (schema {schema})", flush=True)
            figures = measure(args, engine, str(responses_path), receiver, rate=rate)
            engine.dispose()
        report(args, users=users, rate=rate, **figures)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def measure(args, engine, responses_path: str, receiver: Receiver, *, rate) -> dict:
    sessions = db.session_factory(engine)
    clock = SystemClock()
    responses = ResponseFiles([responses_path])
    senders = [NotificationSender(sessions=sessions, clock=clock, responses=responses.current,
                                  worker_id=f"bench-{k}", rate=rate) for k in range(args.senders)]
    sender_loops = [Loop(f"notify-{k}", sender.cycle, interval=PAGING_CYCLE_SECONDS)
                    for k, sender in enumerate(senders)]

    def wake_senders() -> None:
        for loop in sender_loops:
            loop.wake.set()

    escalations = Escalations(sessions=sessions, clock=clock, responses=responses.current,
                              ack_links=AckLinks(LINK_SECRET, "https://syncd.example.com"),
                              propagate=lambda **_: None, wake_sender=wake_senders)
    hooks.install(sessions, escalations.on_incident_change)
    supervisor = Supervisor(clock=clock)
    supervisor.add(Loop("escalation", escalations.cycle, interval=PAGING_CYCLE_SECONDS,
                        wake=escalations.wake))
    for loop in sender_loops:
        supervisor.add(loop)

    due = set_deadlines(sessions, lead=args.lead, spread=args.spread, incidents=args.incidents)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    supervisor.start()
    give_up = time.monotonic() + args.lead + args.spread + args.timeout
    try:
        while receiver.count() < args.incidents and time.monotonic() < give_up:
            time.sleep(0.2)
    finally:
        stopped = supervisor.stop()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    with db.transaction(sessions) as session:
        # When the step fired: the "escalated" entry's time (a row's created_at is its due base,
        # which is the deadline itself for a step less than LATE_STEP late).
        fired = dict(session.execute(select(TimelineEntry.incident_id, TimelineEntry.at)
                                     .where(TimelineEntry.kind == "escalated")).all())
        states = dict(session.execute(text(
            "SELECT state, count(*) FROM notification GROUP BY state")).all())
    arrival: dict[int, float] = {}
    messages = 0
    for _, arrived, incidents in receiver.arrivals:
        messages += 1
        for incident_id in incidents:
            arrival.setdefault(incident_id, arrived)
    delays, escalation_part, sender_part = [], [], []
    for incident_id, arrived in arrival.items():
        deadline = due[incident_id].timestamp()
        delays.append(arrived - deadline)
        if incident_id in fired:
            made = fired[incident_id].timestamp()
            escalation_part.append(made - deadline)
            sender_part.append(arrived - made)
    first_due = min(due.values()).timestamp()
    last_arrival = max(arrival.values()) if arrival else first_due
    return {"delays": delays, "escalation_part": escalation_part, "sender_part": sender_part,
            "messages": messages, "states": states, "stopped": stopped,
            "span": last_arrival - first_due,
            "cpu": (cpu_after.ru_utime - cpu_before.ru_utime)
            + (cpu_after.ru_stime - cpu_before.ru_stime),
            "peak_rss": cpu_after.ru_maxrss * 1024}


def report(args, *, users: int, rate, delays, escalation_part, sender_part, messages, states,
           stopped, span, cpu, peak_rss) -> None:
    def line(name: str, values: list[float]) -> str:
        shown = "  ".join(f"{label} {percentile(values, share):7.3f} s" for label, share in
                          (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)))
        return f"{name:<22}{shown}  max {max(values, default=float('nan')):7.3f} s"

    throttled = ("default (1 message per minute per contact)" if rate == throttle.DEFAULT_RATE
                 else f"RELAXED for the benchmark to {rate.messages} messages per "
                      f"{rate.per.total_seconds():g} s per contact")
    spread = f", due spread over {args.spread:g} s" if args.spread else ", all due at one instant"
    print(f"incidents            {args.incidents} ({users} people{spread})")
    print(f"throttle             {throttled}")
    print(f"senders              {args.senders}")
    print(f"pages received       {len(delays)} in {messages} messages "
          f"(rows: {', '.join(f'{state} {count}' for state, count in sorted(states.items()))})")
    print(line("page delay", delays))
    print(line("  escalation part", escalation_part))
    print(line("  sender part", sender_part))
    print(f"pages per second     {len(delays) / span if span > 0 else float('nan'):.1f} "
          f"(first deadline to last arrival: {span:.1f} s)")
    print(f"process CPU          {cpu:.1f} s (user + system, during the run)")
    print(f"peak RSS             {peak_rss / 2**20:.0f} MiB")
    goal = percentile(delays, 0.99) <= 1.0 if delays else False
    print(f"goal p99 <= 1 s      {'met' if goal else 'MISSED'}")
    if not stopped:
        print("warning: a loop did not stop within the supervisor's timeout")
    if len(delays) < args.incidents:
        print(f"warning: {args.incidents - len(delays)} pages never arrived within the timeout")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=0,
                        help="people to spread the incidents over (default: one per incident)")
    parser.add_argument("--senders", type=int, default=1, help="parallel NotificationSender loops")
    parser.add_argument("--url", default=PG_URL, help="PostgreSQL URL (a schema is made in it)")
    parser.add_argument("--lead", type=float, default=3.0,
                        help="seconds from setting the deadline to the deadline")
    parser.add_argument("--spread", type=float, default=0.0,
                        help="spread the steps' deadlines evenly over this many seconds")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds after the last deadline to wait for every page")
    args = parser.parse_args()
    if args.incidents < 1 or args.senders < 1 or args.users < 0:
        parser.error("--incidents and --senders must be at least 1, --users at least 0")
    run(args)


if __name__ == "__main__":
    main()
