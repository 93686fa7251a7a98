"""Throughput of the ServiceNow and Jira simulators (issue 3: at least 1,000 requests/s).

Each simulator runs in its own process (``syncd simulate servicenow|jira --port N``, started here)
with no latency injected; ``--threads`` client threads in this process, each with its own requests
Session (one keep-alive connection), send a mix that looks like syncd's traffic: a poll-style list
with a query, a read of one record, and a write (ServiceNow PATCH, Jira PUT), in equal shares.
Prints requests/s and p50/p99 latency per simulator and per operation.

    /work/venv/bin/python bench/simulators.py [--seconds 10] [--threads 8] [--records 500]
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ms, percentile, simulator_process  # noqa: E402

SN_AUTH = ("admin", "admin")
JIRA_AUTH = ("syncd", "syncd-api-token")
OPERATIONS = ("list", "get", "write")


@dataclass
class Samples:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})
    errors: int = 0


class Target:
    """One simulator's seed step and its three request kinds."""

    def __init__(self, url: str, records: int):
        self.url = url
        self.ids: list[str] = []
        self.seed(records)

    def seed(self, records: int) -> None:
        raise NotImplementedError

    def call(self, session: requests.Session, operation: str, rng: random.Random) -> requests.Response:
        raise NotImplementedError


class ServiceNowTarget(Target):
    def seed(self, records: int) -> None:
        with requests.Session() as session:
            session.auth = SN_AUTH
            for n in range(records):
                answer = session.post(f"{self.url}/api/now/table/incident", json={
                    "short_description": f"bench incident {n}", "urgency": "2", "impact": "2",
                    "assignment_group": "Network"}, params={"sysparm_fields": "sys_id"})
                answer.raise_for_status()
                self.ids.append(answer.json()["result"]["sys_id"])

    def call(self, session, operation, rng):
        table = f"{self.url}/api/now/table/incident"
        if operation == "list":     # a poll page: changed lately, oldest first
            return session.get(table, params={
                "sysparm_query": "active=true^sys_updated_on>=2000-01-01 00:00:00"
                                 "^ORDERBYsys_updated_on^ORDERBYsys_id",
                "sysparm_limit": "20", "sysparm_offset": str(rng.randrange(0, len(self.ids), 20))})
        sys_id = rng.choice(self.ids)
        if operation == "get":
            return session.get(f"{table}/{sys_id}")
        return session.patch(f"{table}/{sys_id}",
                             json={"short_description": f"edited {rng.random():.6f}"})


class JiraTarget(Target):
    def seed(self, records: int) -> None:
        with requests.Session() as session:
            session.auth = JIRA_AUTH
            for n in range(records):
                answer = session.post(f"{self.url}/rest/api/2/issue", json={"fields": {
                    "project": {"key": "OPS"}, "issuetype": {"name": "Incident"},
                    "summary": f"bench issue {n}", "priority": {"name": "High"}}})
                answer.raise_for_status()
                self.ids.append(answer.json()["id"])

    def call(self, session, operation, rng):
        api = f"{self.url}/rest/api/2"
        if operation == "list":     # a poll page on Cloud's /search/jql
            return session.get(f"{api}/search/jql", params={
                "jql": 'project = "OPS" AND updated >= "2000/01/01 00:00" ORDER BY updated ASC, key ASC',
                "maxResults": "20", "fields": "summary,status,priority,assignee,labels,updated"})
        issue = rng.choice(self.ids)
        if operation == "get":
            return session.get(f"{api}/issue/{issue}")
        return session.put(f"{api}/issue/{issue}",
                           json={"fields": {"summary": f"edited {rng.random():.6f}"}})


def hammer(target: Target, auth: tuple[str, str], *, threads: int, seconds: float) -> Samples:
    """Run ``threads`` clients for ``seconds``; each cycles through the three operations."""
    samples = [Samples() for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop_at: list[float] = []

    def client(index: int) -> None:
        rng = random.Random(index)
        mine = samples[index]
        with requests.Session() as session:
            session.auth = auth
            operations = itertools.cycle(OPERATIONS[index % 3:] + OPERATIONS[:index % 3])
            start.wait()
            while time.perf_counter() < stop_at[0]:
                operation = next(operations)
                began = time.perf_counter()
                answer = target.call(session, operation, rng)
                mine.latencies[operation].append(time.perf_counter() - began)
                if answer.status_code >= 400:
                    mine.errors += 1

    workers = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    stop_at.append(time.perf_counter() + seconds)
    start.wait()
    for worker in workers:
        worker.join()
    merged = Samples()
    for sample in samples:
        merged.errors += sample.errors
        for operation in OPERATIONS:
            merged.latencies[operation] += sample.latencies[operation]
    return merged


def report(name: str, samples: Samples, seconds: float) -> float:
    every = [x for values in samples.latencies.values() for x in values]
    rate = len(every) / seconds
    print(f"{name:<11} {rate:8.0f} req/s   p50 {ms(percentile(every, 0.5)):>9}   "
          f"p99 {ms(percentile(every, 0.99)):>9}   requests {len(every)}   errors {samples.errors}")
    for operation in OPERATIONS:
        values = samples.latencies[operation]
        print(f"  {operation:<9} {len(values) / seconds:8.0f} req/s   p50 {ms(percentile(values, 0.5)):>9}"
              f"   p99 {ms(percentile(values, 0.99)):>9}")
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per simulator")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--records", type=int, default=500, help="records seeded in each simulator")
    parser.add_argument("--only", choices=["servicenow", "jira"], help="benchmark one simulator")
    args = parser.parse_args(argv)
    systems: list[tuple[str, Callable[[str, int], Target], tuple[str, str]]] = [
        ("servicenow", ServiceNowTarget, SN_AUTH), ("jira", JiraTarget, JIRA_AUTH)]
    print(f"{args.threads} client threads, {args.seconds:g} s each, {args.records} records, "
          f"mix list:get:write 1:1:1, no injected latency")
    worst = float("inf")
    for system, make, auth in systems:
        if args.only and system != args.only:
            continue
        with simulator_process(system) as url:
            target = make(url, args.records)
            hammer(target, auth, threads=args.threads, seconds=min(1.0, args.seconds))  # warm up
            samples = hammer(target, auth, threads=args.threads, seconds=args.seconds)
        worst = min(worst, report(system, samples, args.seconds))
    print(f"target >= 1000 req/s: {'met' if worst >= 1000 else 'NOT met'} (lowest {worst:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
