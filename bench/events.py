"""Events API v2 intake (issue 11): accepted events per second, the 202's latency, and how soon
an event that opens an incident pages someone.

Setup: a real daemon (``syncd.daemon.Daemon``, opened and started in this process from a
generated config): the store (``--store sqlite``: a file in a temporary folder; ``postgresql``: a
fresh schema in ``--pg-url``, dropped at the end), no connectors, the HTTP server on a free
port. The generated response file has ``--services`` services, each with its own routing key and
``alert_grouping`` on ``component`` (window 5m), all on one policy whose one rule pages one user;
her ``json://`` contact points at a JSON receiver in this process (an http.server
ThreadingHTTPServer that records when each message arrived and the SYN-n it names).

The intake allows 120 events a minute per routing key (PagerDuty's limit, the daemon's default):
a rate of R events/s needs at least ceil(R / 2) routing keys, so by default the services are that
many plus a quarter, and the events go round-robin over them. ``--events-per-minute`` raises the
limit instead (each service's ``events_per_minute`` in the generated response file); the output
says which. The contact throttle (1 message a minute per contact, GoAlert's
default) would bundle every page after the first into one message a minute later, so the bench
relaxes it on the daemon's sender and says so (``--keep-throttle`` keeps it).

Warm-up (not measured): ``--components`` trigger events per service open one incident each
(components c0..); the bench waits for their pages. Then the load: a child process (so this
process's CPU and RSS are the daemon's, plus the small receiver) with ``--threads`` threads, each
with a keep-alive ``requests.Session``, posts trigger events to ``/v2/enqueue`` at ``--rate`` a
second (0: as fast as the threads can) for ``--seconds``. Each event goes to the next service;
with probability ``--new-share`` it names a new component (a new group, so a new incident and a
page), otherwise one of the service's warm components with a dedup key that is new (the alert
joins the open group's incident) or one of three per component (it repeats an open alert).
For each event that opened an incident, a checker thread in the child reads
``GET /api/v1/alerts?service=..&dedup_key=..`` until the alert names its incident.

Printed: events sent, the answers (202, 429, other), accepted events per second, the 202's
latency p50/p99 (and how late the generator sent, to show it kept the rate), the time from a
202 to its incident being readable through the API (p99), the time from sending an event to the
first page for its incident arriving at the receiver (p50/p99/max, the goal: p99 under 1 s at
200 events/s), the outcome counts from the store, and the daemon process's CPU and peak RSS.

    .venv/bin/python bench/events.py --seconds 5                          # SQLite, 200/s
    .venv/bin/python bench/events.py --store postgresql
    .venv/bin/python bench/events.py --rate 0 --seconds 10                # the maximum
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import random
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import requests
import yaml
from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, ms, percentile  # noqa: E402
from bench.escalation import PG_URL, Receiver  # noqa: E402
from syncd.alerts.models import Alert  # noqa: E402
from syncd.config import load_config  # noqa: E402
from syncd.daemon import Daemon  # noqa: E402
from syncd.incidents.models import Incident  # noqa: E402
from syncd.notify import throttle  # noqa: E402
from syncd.store import db  # noqa: E402

API_TOKEN = "bench-events-api-token-0123456789"
RELAXED_THROTTLE = throttle.Rate(messages=100_000, per=timedelta(minutes=1))
REPEATED_KEYS = 3                # dedup keys per warm component that repeat an open alert
CHECKERS = 2                     # threads reading each new incident back through the API


EVENTS_PER_MINUTE = 120      # a service's default events_per_minute (PagerDuty's limit)


def routing_key(service: int) -> str:
    return f"bench-key-{service:05d}"


def keys_needed(rate: float, per_minute: int) -> int:
    """Routing keys that keep ``rate`` events/s within ``per_minute`` each, sustained."""
    return max(1, math.ceil(rate * 60 / per_minute))


# -- set-up --------------------------------------------------------------------------------------

def response_file(path: Path, *, services: int, receiver_port: int,
                  events_per_minute: int) -> None:
    document = {
        "users": [{"id": "oncall", "name": "Bench On-call", "email": "oncall@example.com",
                   "contacts": {"hook": f"json://127.0.0.1:{receiver_port}/oncall"}}],
        "escalation_policies": [{"id": "ops", "rules": [
            {"targets": [{"user": "oncall"}], "escalate_after": "30m"}]}],
        "services": [{"id": f"s{n}", "name": f"Service {n}", "escalation_policy": "ops",
                      "page_on": {"priority": ["P1", "P2"]}, "routing_key": routing_key(n),
                      "events_per_minute": events_per_minute,
                      "alert_grouping": {"type": "content", "fields": ["component"],
                                         "window": "5m"}}
                     for n in range(services)],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def config_file(path: Path, *, store_url: str, port: int, responses: Path) -> None:
    document = {
        "store": {"url": store_url, "auto_upgrade": True, "pool_size": 20},
        "http": {"listen": f"127.0.0.1:{port}",
                 "api_tokens": [{"name": "bench", "token": API_TOKEN}]},
        "response": {"files": [str(responses)]},
        "logging": {"level": "WARNING"},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def trigger(service: int, component: str, dedup_key: str, summary: str) -> dict[str, Any]:
    return {"routing_key": routing_key(service), "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {"summary": summary, "source": f"host-{service}.example.com",
                        "severity": "critical", "component": component,
                        "custom_details": {"bench": True}}}


def warm_up(base: str, *, services: int, components: int) -> int:
    """One incident per (service, warm component), sent from a few threads; returns how many."""
    bodies = [trigger(s, f"c{c}", f"warm-{s}-{c}", f"warm-up {s}/{c}")
              for s in range(services) for c in range(components)]
    failures: list[str] = []
    lock = threading.Lock()

    def send(part: list[dict[str, Any]]) -> None:
        with requests.Session() as session:
            for body in part:
                answer = session.post(f"{base}/v2/enqueue", json=body, timeout=30)
                if answer.status_code != 202:
                    with lock:
                        failures.append(f"{answer.status_code} {answer.text[:200]}")
    threads = [threading.Thread(target=send, args=(bodies[k::8],)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} warm-up events refused, e.g. {failures[0]}")
    return len(bodies)


# -- the load (a child process) ------------------------------------------------------------------

def load(base: str, settings: dict[str, Any], results: Any) -> None:
    """Post the events; put one dict of per-event records on ``results``."""
    rate, seconds, threads = settings["rate"], settings["seconds"], settings["threads"]
    services, components = settings["services"], settings["components"]
    counter = iter(range(10**9))
    counter_lock = threading.Lock()
    sent: list[tuple] = []          # (index, scheduled, sent, answered, status)
    openers: Queue = Queue()        # (index, service, dedup_key, answered)
    visible: list[tuple] = []       # (index, incident_id, answered, visible)
    errors: list[str] = []
    start = time.time() + 0.5
    stop_at = start + seconds
    checking = threading.Event()

    def post(worker: int) -> None:
        rng = random.Random(worker)
        with requests.Session() as session:
            while True:
                with counter_lock:
                    index = next(counter)
                scheduled = start + index / rate if rate else time.time()
                if scheduled >= stop_at:
                    return
                pause = scheduled - time.time()
                if pause > 0:
                    time.sleep(pause)
                service = index % services
                opener = rng.random() < settings["new_share"]
                if opener:
                    component, dedup_key = f"n{index}", f"open-{index}"
                else:
                    component = f"c{rng.randrange(components)}"
                    dedup_key = (f"{component}-r{rng.randrange(REPEATED_KEYS)}"
                                 if rng.random() < 0.5 else f"join-{index}")
                body = trigger(service, component, dedup_key, f"event {index} on {component}")
                began = time.time()
                try:
                    answer = session.post(f"{base}/v2/enqueue", json=body, timeout=30)
                    status = answer.status_code
                    if status not in (202, 429) and len(errors) < 5:
                        errors.append(f"{status} {answer.text[:200]}")
                except requests.RequestException as error:
                    status = 0
                    if len(errors) < 5:
                        errors.append(f"{type(error).__name__}: {error}")
                answered = time.time()
                sent.append((index, scheduled, began, answered, status))
                if opener and status == 202:
                    openers.put((index, service, dedup_key, answered))

    def check() -> None:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        with requests.Session() as session:
            while checking.is_set() or not openers.empty():
                try:
                    index, service, dedup_key, answered = openers.get(timeout=0.1)
                except Empty:
                    continue
                for _ in range(200):
                    alerts = session.get(f"{base}/api/v1/alerts", headers=headers, timeout=30,
                                         params={"service": f"s{service}",
                                                 "dedup_key": dedup_key}).json()["alerts"]
                    if alerts and alerts[0]["incident_id"] is not None:
                        visible.append((index, alerts[0]["incident_id"], answered, time.time()))
                        break
                    time.sleep(0.01)

    checking.set()
    checkers = [threading.Thread(target=check) for _ in range(CHECKERS)]
    posters = [threading.Thread(target=post, args=(k,)) for k in range(threads)]
    for thread in checkers + posters:
        thread.start()
    for thread in posters:
        thread.join()
    checking.clear()
    for thread in checkers:
        thread.join()
    results.put({"start": start, "sent": sent, "visible": visible, "errors": errors})


# -- the run -------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    schema = None
    admin = None
    if args.store == "sqlite":
        store_url = f"sqlite:///{workdir / 'syncd.db'}"
    else:
        schema = f"bench_events_{uuid.uuid4().hex[:10]}"
        admin = db.open_engine(args.pg_url, pool_size=1)
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        separator = "&" if "?" in args.pg_url else "?"
        store_url = f"{args.pg_url}{separator}options=-csearch_path%3D{schema}"
    try:
        with Receiver() as receiver:
            port = free_port()
            responses = workdir / "oncall.yaml"
            response_file(responses, services=args.services, receiver_port=receiver.port,
                          events_per_minute=args.events_per_minute)
            config_path = workdir / "syncd.yaml"
            config_file(config_path, store_url=store_url, port=port, responses=responses)
            daemon = Daemon(load_config(config_path))
            try:
                daemon.open()
                if not args.keep_throttle:
                    daemon.sender.rate = RELAXED_THROTTLE
                daemon.start()
                figures = measure(args, daemon, f"http://127.0.0.1:{port}", receiver)
            finally:
                daemon.stop()
        report(args, **figures)
    finally:
        if admin is not None:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def measure(args, daemon: Daemon, base: str, receiver: Receiver) -> dict[str, Any]:
    began = time.monotonic()
    warm = warm_up(base, services=args.services, components=args.components)
    deadline = time.monotonic() + args.timeout
    while receiver.count() < warm and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"warm-up: {warm} incidents opened, {receiver.count()} pages in "
          f"{time.monotonic() - began:.1f} s", flush=True)
    warm_pages = len(receiver.arrivals)

    settings = {"rate": args.rate, "seconds": args.seconds, "threads": args.threads,
                "services": args.services, "components": args.components,
                "new_share": args.new_share}
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    before = resource.getrusage(resource.RUSAGE_SELF)
    child = context.Process(target=load, args=(base, settings, results))
    child.start()
    outcome = results.get()         # before join: a big result would block the child's exit
    child.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    if child.exitcode != 0:
        raise RuntimeError(f"the load generator failed (exit code {child.exitcode})")

    incident_of = {index: incident for index, incident, _, _ in outcome["visible"]}
    wanted = set(incident_of.values())
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        with receiver.lock:
            paged = {i for _, _, incidents in receiver.arrivals[warm_pages:] for i in incidents}
        if wanted <= paged:
            break
        time.sleep(0.1)
    first_page: dict[int, float] = {}
    with receiver.lock:
        for _, arrived, incidents in receiver.arrivals[warm_pages:]:
            for incident_id in incidents:
                first_page.setdefault(incident_id, arrived)
    with db.transaction(daemon.sessions, readonly=True) as session:
        incidents = session.scalar(select(func.count()).select_from(Incident))
        alerts = session.scalar(select(func.count()).select_from(Alert))
        events_stored = session.scalar(select(func.sum(Alert.event_count)))
    return {"outcome": outcome, "incident_of": incident_of, "first_page": first_page,
            "warm": warm, "incidents": incidents, "alerts": alerts,
            "events_stored": events_stored,
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss": after.ru_maxrss * 1024}


def report(args, *, outcome, incident_of, first_page, warm, incidents, alerts, events_stored,
           cpu, peak_rss) -> None:
    sent = outcome["sent"]
    by_status = Counter(status for *_, status in sent)
    accepted = [row for row in sent if row[4] == 202]
    first_sent = min((row[2] for row in sent), default=outcome["start"])
    last_answer = max((row[3] for row in sent), default=first_sent)
    span = max(last_answer - first_sent, 1e-9)
    answer_latency = [answered - began for _, _, began, answered, status in accepted]
    lateness = [began - scheduled for _, scheduled, began, _, _ in sent]
    visible = [seen - answered for _, _, answered, seen in outcome["visible"]]
    sent_at = {index: began for index, _, began, _, _ in sent}
    to_page = [first_page[incident] - sent_at[index]
               for index, incident in incident_of.items() if incident in first_page]
    needed = keys_needed(args.rate, args.events_per_minute) if args.rate else None

    def line(name: str, values: list[float]) -> str:
        return (f"{name:<28}p50 {ms(percentile(values, 0.5)):>10}  p99 "
                f"{ms(percentile(values, 0.99)):>10}  max {ms(max(values, default=math.nan)):>10}"
                f"  (n={len(values)})")

    limit = (f"{args.events_per_minute}/min per routing key (the daemon's default)"
             if args.events_per_minute == EVENTS_PER_MINUTE else
             f"RAISED for the benchmark to {args.events_per_minute}/min per routing key")
    print(f"store                       {args.store}")
    print(f"rate limit                  {limit}; {args.services} services (routing keys), "
          + (f"{args.rate:g}/s needs >= {needed}" if needed else "rate 0: as fast as possible"))
    print("contact throttle            " + ("default (1 message per minute)" if args.keep_throttle
                                              else f"RELAXED to {RELAXED_THROTTLE.messages} "
                                                   f"messages per minute"))
    print(f"load                        {args.threads} threads, target "
          + (f"{args.rate:g}/s" if args.rate else "max") + f" for {args.seconds:g} s, "
          f"new-component share {args.new_share:g}, {args.components} warm components/service")
    answers = ", ".join(f"{status or 'error'}: {count}"
                        for status, count in sorted(by_status.items()))
    print(f"events sent                 {len(sent)} ({answers})")
    print(f"accepted events/s           {len(accepted) / span:.1f} "
          f"(first send to last answer: {span:.1f} s)")
    print(line("202 latency", answer_latency))
    if args.rate:
        print(line("generator lateness", lateness))
    print(line("202 -> incident via API", visible))
    print(line("event -> first page", to_page))
    print(f"store after the run         {incidents} incidents, {alerts} alerts, "
          f"{events_stored} events counted on them ({warm} warm-up + {len(accepted)} accepted)")
    print(f"daemon process CPU          {cpu:.1f} s during the load "
          f"({cpu / span:.2f} cores; receiver included)")
    print(f"peak RSS                    {peak_rss / 2**20:.0f} MiB")
    if args.rate:
        goal = bool(to_page) and percentile(to_page, 0.99) < 1.0
        print(f"goal (p99 event -> page < 1 s at {args.rate:g}/s)  {'met' if goal else 'MISSED'}")
    missing = len(incident_of) - len(to_page)
    if missing:
        print(f"warning: {missing} new incidents got no page within {args.timeout:g} s")
    if outcome["errors"]:
        print(f"errors, e.g.: {outcome['errors'][:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL URL (a schema is made in it)")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="events per second to send (0: as fast as possible)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send")
    parser.add_argument("--threads", type=int, default=16, help="sending threads")
    parser.add_argument("--services", type=int, default=0,
                        help="services, one routing key each (default: what the rate limit "
                             "needs for --rate, plus a quarter; 125 for --rate 0)")
    parser.add_argument("--events-per-minute", type=int, default=EVENTS_PER_MINUTE,
                        help="the intake's limit per routing key")
    parser.add_argument("--components", type=int, default=3,
                        help="warm components (open incidents) per service")
    parser.add_argument("--new-share", type=float, default=0.05,
                        help="share of events that name a new component (open an incident)")
    parser.add_argument("--keep-throttle", action="store_true",
                        help="keep the contact throttle at its default (1 message a minute)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for pages after the warm-up and the load")
    args = parser.parse_args()
    if args.rate < 0 or args.seconds <= 0 or args.threads < 1 or args.components < 1 \
            or not 0 <= args.new_share <= 1 or args.events_per_minute < 1:
        parser.error("--rate >= 0, --seconds > 0, --threads and --components >= 1, "
                     "--new-share in 0..1, --events-per-minute >= 1")
    if not args.services:
        args.services = math.ceil(keys_needed(args.rate or 200.0, args.events_per_minute) * 1.25)
    run(args)


if __name__ == "__main__":
    main()
