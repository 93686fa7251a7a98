"""Defect 7: after a kill -9 mid-delivery, the work the dead process claimed moves on within
seconds, not when its lease ends, and the log says so. Real `syncd run` processes against the
simulators; Jira creates hang so deliveries are in flight when the process dies. The lease is ten
minutes here, so only the end of the dead process can explain a prompt recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from syncd.engine.models import Link, OutboxItem
from syncd.simulators.base import Fault
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import ServiceNowSimulator
from syncd.store import db

from .support import ENV, free_port, wait_until, write_config

INCIDENTS = 3
RECOVERY_SECONDS = 20       # heartbeats go stale after 10 s; the lease is 600 s
SETTINGS = ("sync: {claim_lease: 10m, outbox_workers: 2, reconcile_after_downtime: 1h}\n"
            "logging: {level: WARNING}")

pytestmark = pytest.mark.slow


def start_syncd(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "syncd.cli", "run", "--config", str(config)],
                            env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                            stderr=open(log, "a"))


def outbox_states(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(connection.execute(select(OutboxItem.state, func.count())
                                       .group_by(OutboxItem.state)).all())


def claimer_pids(engine) -> dict[int, int]:
    """{pid: in-flight rows} from the claims' worker names (host:pid:start/outbox-n)."""
    with engine.connect() as connection:
        workers = connection.execute(select(OutboxItem.claimed_by)
                                     .where(OutboxItem.state == "in_flight")).scalars().all()
    pids: dict[int, int] = {}
    for worker in workers:
        pid = int(worker.split(":")[1].split("/")[0])
        pids[pid] = pids.get(pid, 0) + 1
    return pids


def jira_links(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(Link)
                                  .where(Link.connector == "jira")).scalar()


def everything_delivered(engine) -> bool:
    states = outbox_states(engine)
    return (not states.get("pending") and not states.get("in_flight")
            and jira_links(engine) == INCIDENTS)


@pytest.fixture
def simulators():
    sn = ServiceNowSimulator().start()
    jira = JiraSimulator().start()
    yield sn, jira
    sn.stop()
    jira.stop()


def kill_mid_delivery(simulators, store_engine, processes: list[subprocess.Popen]) -> subprocess.Popen:
    """People raise incidents in ServiceNow while Jira hangs on creates; once deliveries are in
    flight the process holding the most claims is killed, and Jira recovers."""
    sn, jira = simulators
    for n in range(INCIDENTS):
        sn.human_create({"short_description": f"outage {n}", "impact": "2", "urgency": "2"})
    wait_until("deliveries in flight", lambda: claimer_pids(store_engine), timeout=60)
    pids = claimer_pids(store_engine)
    victim = next(p for p in processes if p.pid == max(pids, key=pids.get))
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    jira.clear_faults()
    return victim


def assert_one_issue_per_incident(jira) -> None:
    assert len(jira.search("project = OPS")) == INCIDENTS


def test_a_restarted_daemon_takes_back_its_dead_claims_at_once_on_sqlite(simulators, tmp_path):
    sn, jira = simulators
    jira.inject(Fault("hang", method="POST", path=r"/issue$"))
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    config = write_config(tmp_path, url, sn_url=sn.base_url, jira_url=jira.base_url, extra=SETTINGS)
    first = start_syncd(config, tmp_path / "first.log")
    restarted = None
    store_engine = None
    try:
        wait_until("the store", lambda: (tmp_path / "crash.db").exists(), timeout=60)
        store_engine = db.open_engine(url)
        wait_until("the schema", lambda: db.current_revision(store_engine) is not None)
        kill_mid_delivery(simulators, store_engine, [first])
        assert outbox_states(store_engine).get("in_flight"), "the kill left claims in flight"

        began = time.monotonic()
        restarted = start_syncd(config, tmp_path / "restarted.log")
        wait_until("the outbox to empty", lambda: everything_delivered(store_engine),
                   timeout=RECOVERY_SECONDS)
        print(f"\noutbox empty {time.monotonic() - began:.1f} s after the restart (SQLite)")
        assert_one_issue_per_incident(jira)
        assert "took back a claim" in (tmp_path / "restarted.log").read_text()
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(60) == 0
    finally:
        for process in (first, restarted):
            if process is not None and process.poll() is None:
                process.kill()
        if store_engine is not None:
            store_engine.dispose()


def test_a_replica_takes_the_claims_of_a_killed_one_within_seconds(simulators, postgres_store,
                                                                   tmp_path):
    sn, jira = simulators
    jira.inject(Fault("hang", method="POST", path=r"/issue$"))
    replicas = []
    for n in range(2):
        config = write_config(tmp_path, f"{postgres_store.url}&application_name=replica{n}",
                              sn_url=sn.base_url, jira_url=jira.base_url, port=free_port(),
                              extra=SETTINGS, filename=f"replica{n}.yaml")
        replicas.append(start_syncd(config, tmp_path / f"replica{n}.log"))
    try:
        victim = kill_mid_delivery(simulators, postgres_store.engine, replicas)
        survivor = next(p for p in replicas if p is not victim)
        survivor_log = tmp_path / f"replica{replicas.index(survivor)}.log"

        began = time.monotonic()
        wait_until("the outbox to empty", lambda: everything_delivered(postgres_store.engine),
                   timeout=RECOVERY_SECONDS)
        print(f"\noutbox empty {time.monotonic() - began:.1f} s after the kill (PostgreSQL)")
        assert_one_issue_per_incident(jira)
        text = survivor_log.read_text()
        assert "stopped beating" in text and "took back a claim" in text
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(60) == 0
    finally:
        for process in replicas:
            if process.poll() is None:
                process.kill()
