"""`syncd simulate` and `syncd mappings preview` as a user runs them: real processes, the real
pysnow and jira clients, signals, exit codes and messages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from contextlib import contextmanager
from typing import Iterator

import pysnow
import pytest
import requests
from jira import JIRA

from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import WEBHOOK_SECRET_HEADER, ServiceNowSimulator
from tests.support import ENV, SYNCD, free_port, wait_until, write_config


@contextmanager
def simulate(system: str, *options: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """`syncd simulate SYSTEM --port N`, yielded once it answers HTTP; killed if a test leaves it."""
    port = free_port()
    process = subprocess.Popen([*SYNCD, "simulate", system, "--port", str(port), *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def answering() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"simulate {system} exited with {process.returncode}: "
                                 f"{process.stderr.read()}")
        return requests.get(f"http://127.0.0.1:{port}/_sim/requests", timeout=1).ok

    try:
        wait_until(f"syncd simulate {system} to answer on port {port}", answering)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def stop(process: subprocess.Popen, signum: int) -> int:
    process.send_signal(signum)
    return process.wait(timeout=20)


def snow_client(port: int) -> pysnow.Client:
    return pysnow.Client(host=f"127.0.0.1:{port}", use_ssl=False, user="admin", password="admin")


def jira_client(port: int) -> JIRA:
    return JIRA(server=f"http://127.0.0.1:{port}", basic_auth=("syncd", "syncd-api-token"),
                max_retries=0)


def test_simulate_servicenow_answers_pysnow_keeps_its_state_file_and_stops_on_sigint(tmp_path):
    state = tmp_path / "servicenow.json"
    with simulate("servicenow", "--state-file", str(state)) as (process, port):
        client = snow_client(port)
        incidents = client.resource(api_path="/table/incident")
        created = incidents.create(payload={"short_description": "VPN down", "impact": "1",
                                            "urgency": "1"}).one()
        assert created["priority"] == "1" and created["number"].startswith("INC")
        client.close()
        assert stop(process, signal.SIGINT) == 0
        assert f"listening on http://127.0.0.1:{port}" in process.stdout.read()
    assert json.loads(state.read_text())["next_number"] > 10001

    with simulate("servicenow", "--state-file", str(state)) as (process, port):
        client = snow_client(port)
        again = client.resource(api_path="/table/incident").get(
            query={"number": created["number"]}).one()
        assert (again["sys_id"], again["short_description"]) == (created["sys_id"], "VPN down")
        client.close()
        assert stop(process, signal.SIGINT) == 0


def test_simulate_jira_answers_the_jira_client_keeps_its_state_file_and_stops_on_sigint(tmp_path):
    state = tmp_path / "jira.json"
    with simulate("jira", "--state-file", str(state)) as (process, port):
        client = jira_client(port)
        issue = client.create_issue(project="OPS", summary="Queue backlog",
                                    issuetype={"name": "Incident"}, priority={"name": "High"})
        assert issue.key == "OPS-1"
        client.close()
        assert stop(process, signal.SIGINT) == 0

    with simulate("jira", "--state-file", str(state)) as (process, port):
        client = jira_client(port)
        again = client.issue("OPS-1")
        assert (again.id, again.fields.summary, again.fields.priority.name) == \
            (issue.id, "Queue backlog", "High")
        assert client.create_issue(project="OPS", summary="second",
                                   issuetype={"name": "Incident"}).key == "OPS-2"
        client.close()
        assert stop(process, signal.SIGINT) == 0


@pytest.mark.parametrize("system", ["servicenow", "jira"])
def test_simulate_stops_cleanly_on_sigterm_and_saves_its_state(tmp_path, system):
    state = tmp_path / f"{system}.json"
    with simulate(system, "--state-file", str(state)) as (process, _):
        assert stop(process, signal.SIGTERM) == 0
    assert state.exists()


def printed_at_start(process: subprocess.Popen, count: int) -> list[str]:
    """The first ``count`` lines the simulator printed, read while it runs."""
    return [process.stdout.readline().rstrip("\n") for _ in range(count)]


def test_simulate_servicenow_prints_the_credentials_it_accepts_and_they_work():
    with simulate("servicenow", "--webhook-secret", "hook-s3cret") as (process, port):
        _, url, login, secret = printed_at_start(process, 4)
        assert url == f"  url: http://127.0.0.1:{port}"
        user, password = re.fullmatch(r"  basic auth: user (\S+), password (\S+)", login).groups()
        assert secret == f"  webhook secret: hook-s3cret (sent in {WEBHOOK_SECRET_HEADER})"
        client = pysnow.Client(host=f"127.0.0.1:{port}", use_ssl=False, user=user,
                               password=password)
        assert client.resource(api_path="/table/incident").get(query={}).all() == []
        client.close()
        assert stop(process, signal.SIGTERM) == 0


@pytest.mark.parametrize("deployment", ["Cloud", "Server"])
def test_simulate_jira_prints_the_credentials_it_accepts_and_they_work(deployment):
    with simulate("jira", "--deployment", deployment) as (process, port):
        _, url, login, bearer, *_ = printed_at_start(process, 5)
        assert url == f"  url: http://127.0.0.1:{port}"
        user, secret = re.fullmatch(r"  basic auth: user (\S+) \(or \S+\), "
                                    r"(?:API token|password) (\S+)", login).groups()
        assert ("@" in user) == (deployment == "Cloud"), "Cloud logs in by email"
        client = JIRA(server=url.split()[-1], basic_auth=(user, secret), max_retries=0)
        assert client.myself()["displayName"] == "syncd integration"
        client.close()
        token = re.fullmatch(r"  bearer token: (\S+) \(personal access token of syncd\)",
                             bearer).group(1)
        answer = requests.get(f"{url.split()[-1]}/rest/api/2/myself", timeout=10,
                              headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json()["displayName"] == "syncd integration"
        assert stop(process, signal.SIGTERM) == 0


def test_simulate_help_lists_the_credentials_each_simulator_accepts():
    shown = subprocess.run([*SYNCD, "simulate", "--help"], capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    help_text = shown.stdout
    for simulator in (ServiceNowSimulator(), JiraSimulator(deployment="Cloud"),
                      JiraSimulator(deployment="Server")):
        for line in simulator.credentials():
            assert f"    {line}\n" in help_text
    assert "basic auth: user admin, password admin" in help_text
    assert "--webhook-secret S" in help_text


def run_preview(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SYNCD, "mappings", "preview", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **ENV})


def test_mappings_preview_shows_canonical_values_and_outbound_writes(tmp_path):
    with ServiceNowSimulator() as sn, JiraSimulator() as jira:
        record = sn.human_create({"short_description": "Disk full on db-3", "impact": "1",
                                  "urgency": "2", "assigned_to": "beth.anglin"})
        issue = jira.human_create({"summary": "[SYN-4] Queue backlog",
                                   "priority": {"name": "Low"}})
        config = write_config(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}",
                              sn_url=sn.base_url, jira_url=jira.base_url)

        shown = run_preview(config, "servicenow", record["number"])
        assert shown.returncode == 0, shown.stderr
        preview = json.loads(shown.stdout)
        assert preview["remote"]["key"] == record["number"]
        assert preview["canonical"] == {
            "title": "Disk full on db-3", "description": "", "status": "triggered",
            "resolution": None, "priority": "P2", "urgency": "high", "group": None,
            "assignee": "beth.anglin@example.com"}
        writes = preview["outbound_writes"]
        assert (writes["short_description"], writes["state"], writes["impact"],
                writes["urgency"]) == ("Disk full on db-3", "1", "1", "2")
        assert writes["assigned_to"] == {"reference": {"match": "email",
                                                       "value": "beth.anglin@example.com"}}
        assert "priority" not in writes, "ServiceNow computes priority; syncd writes impact+urgency"

        shown = run_preview(config, "jira", issue["key"])
        assert shown.returncode == 0, shown.stderr
        preview = json.loads(shown.stdout)
        assert preview["canonical"]["title"] == "Queue backlog"
        assert preview["canonical"]["priority"] == "P4"
        assert preview["outbound_writes"]["summary"] == "[SYN-0] Queue backlog"
        assert preview["outbound_writes"]["priority"] == "Low"
        assert preview["template_placeholders"]["number"] == "SYN-0"
        for sim in (sn, jira):
            assert [(r.method, r.path) for r in sim.request_log() if r.method != "GET"] == [], \
                "a preview must write nothing"

        missing = run_preview(config, "servicenow", "INC0099999")
        assert missing.returncode == 2
        assert "servicenow" in missing.stderr and "'INC0099999'" in missing.stderr
        assert "Traceback" not in missing.stderr
        missing = run_preview(config, "jira", "OPS-404")
        assert missing.returncode == 2 and "no record 'OPS-404'" in missing.stderr

    unknown = run_preview(config, "github", "X-1")
    assert unknown.returncode == 2
    assert "no connector named 'github'" in unknown.stderr
    assert "servicenow, jira" in unknown.stderr
