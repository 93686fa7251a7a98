"""Several `syncd run` processes on one PostgreSQL share the work: one poller per connector (an
advisory lock), outbox rows claimed once (SKIP LOCKED), and a replica killed with SIGKILL mid-run
loses nothing and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests
from sqlalchemy import text

from syncd.engine import service as sync_service
from syncd.store.locks import SingletonLock, advisory_key, poller_key
from syncd.incidents import service as incident_service
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import ServiceNowSimulator
from syncd.store import db

from .support import ENV, free_port, wait_until, write_config

REPLICAS = 3
def replica_config(folder, store_url: str, n: int, port: int, sn: str, jira: str):
    return write_config(folder, f"{store_url}&application_name=replica{n}", sn_url=sn,
                        jira_url=jira, port=port, filename=f"replica{n}.yaml",
                        connector_extra="timeout: 2s\n    retry_for: 1s",
                        extra="sync: {claim_lease: 4s, outbox_workers: 2, "
                              "reconcile_after_downtime: 1h}\nlogging: {level: WARNING}")


def poller_holder(engine, connector: str) -> str | None:
    """The application_name of the replica holding a connector's poller lock."""
    with engine.connect() as connection:
        schema = connection.execute(text("SELECT current_schema()")).scalar()
    key = poller_key(schema, connector)
    high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :high AND l.objid = :low"),
            {"high": high, "low": low}).scalar()


@pytest.mark.slow
def test_three_replicas_share_the_work_and_survive_a_sigkill(postgres_store, tmp_path):
    store = postgres_store
    sn = ServiceNowSimulator().start()
    jira = JiraSimulator().start()
    processes: list[subprocess.Popen] = []
    try:
        for n in range(REPLICAS):
            port = free_port()
            path = replica_config(tmp_path, store.url, n, port, sn.base_url, jira.base_url)
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "syncd.cli", "run", "--config", str(path)],
                env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / f"replica{n}.log", "w")))
            processes[-1].port = port
        for process in processes:
            wait_until("replicas to start", lambda p=process: requests.get(
                f"http://127.0.0.1:{p.port}/healthz", timeout=2).status_code == 200)

        sys_ids = [sn.human_create({"short_description": f"outage {n}", "impact": "2",
                                    "urgency": "2"})["sys_id"] for n in range(8)]
        wait_until("the first issues", lambda: len(jira.search("project = OPS")) >= 3)
        holder = poller_holder(store.engine, "servicenow")
        assert holder and holder.startswith("replica")
        victim = processes[int(holder[len("replica"):])]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)

        sys_ids += [sn.human_create({"short_description": f"outage {n}", "impact": "2",
                                     "urgency": "2"})["sys_id"] for n in range(8, 16)]
        for sys_id in sys_ids[:4]:
            sn.human_update(sys_id, {"impact": "1", "urgency": "1"})

        def all_synced():
            with store.transaction() as session:
                links = {}
                for incident in incident_service.list_incidents(session=session, limit=100):
                    sn_link = sync_service.link_for(session=session, incident_id=incident.id,
                                               connector="servicenow")
                    jira_link = sync_service.link_for(session=session, incident_id=incident.id,
                                                 connector="jira")
                    if sn_link and jira_link:
                        links[sn_link.remote_id] = jira_link.remote_key
            if len(links) != len(sys_ids):
                return False
            for n, sys_id in enumerate(sys_ids):
                expected = "Highest" if n < 4 else "Medium"
                if jira.get_issue(links[sys_id])["fields"]["priority"]["name"] != expected:
                    return False
            return True

        wait_until("every incident to reach Jira with its priority", all_synced)
        assert poller_holder(store.engine, "servicenow") != holder, "a survivor took over polling"
        creates = [r for r in jira.request_log()
                   if r.method == "POST" and r.path.endswith("/issue") and r.status == 201]
        assert len(creates) == len(sys_ids), "each incident created exactly one Jira issue"
        assert len(jira.search("project = OPS")) == len(sys_ids)
        with store.transaction() as session:
            assert sync_service.dead_letters(session=session) == []

        for process in processes:
            if process is not victim:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            if process is not victim:
                assert process.wait(60) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        sn.stop()
        jira.stop()


def test_advisory_keys_are_stable_and_distinct():
    assert poller_key("public", "jira") == poller_key("public", "jira")
    assert poller_key("public", "jira") != poller_key("public", "servicenow")
    assert poller_key("public", "jira") != poller_key("team_b", "jira")   # another deployment
    assert -2**63 <= advisory_key("poller:public:jira") < 2**63


def test_only_one_of_two_owners_polls_and_the_other_takes_over(postgres_store):
    store = postgres_store
    first = SingletonLock(store.engine, "poller:jira")
    second_engine = db.open_engine(store.url)
    second = SingletonLock(second_engine, "poller:jira")
    try:
        assert first.holds() and first.holds()
        assert not second.holds()
        first.release()
        assert second.holds()
        assert not first.holds()
    finally:
        first.release()
        second.release()
        second_engine.dispose()
