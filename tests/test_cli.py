"""The `syncd` command as a user runs it: real processes, real files, exit codes and messages."""

from __future__ import annotations

import os
import signal
import subprocess

import requests

from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import ServiceNowSimulator
from syncd.store import db

from .support import ENV, SYNCD, free_port, syncd, wait_until, write_config


def test_version_and_help():
    assert syncd("--version").stdout.startswith("syncd ")
    result = syncd()
    assert result.returncode == 2 and "COMMAND" in result.stderr


def test_config_check_prints_the_config_with_secrets_redacted(tmp_path):
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    result = syncd("config", "check", str(path), env=ENV)
    assert result.returncode == 0, result.stderr
    assert '"servicenow"' in result.stdout and "***" in result.stdout
    assert "t0ken-for-tests" not in result.stdout + result.stderr


def test_config_check_names_the_key_and_the_missing_variable_and_exits_2(tmp_path):
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    path.write_text(path.read_text().replace("poll_interval: 1s", "poll_interval: soon"))
    result = syncd("config", "check", str(path), env=ENV)
    assert result.returncode == 2
    assert "connectors.servicenow.poll_interval" in result.stderr and "soon" in result.stderr
    env = {k: v for k, v in {**os.environ, **ENV}.items() if k != "SN_SECRET"}
    result = subprocess.run([*SYNCD, "config", "check", str(write_config(tmp_path, "sqlite://"))],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and "SN_SECRET" in result.stderr


def test_db_upgrade_creates_the_schema(empty_store_url, tmp_path):
    path = write_config(tmp_path, empty_store_url)
    result = syncd("db", "upgrade", "--config", str(path), env=ENV)
    assert result.returncode == 0, result.stderr
    engine = db.open_engine(empty_store_url)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()
    again = syncd("db", "upgrade", "--config", str(path), env=ENV)
    assert again.returncode == 0 and "already at" in again.stdout


def test_mappings_validate_reports_file_line_column_and_exits_2(tmp_path):
    broken = tmp_path / "jira.yaml"
    broken.write_text("system: jira\nfields:\n  - canonical: titel\n    remote: summary\n")
    result = syncd("mappings", "validate", str(broken))
    assert result.returncode == 2
    assert f"{broken}:3:" in result.stderr and "titel" in result.stderr
    from syncd.mapping import default_mapping_path
    ok = syncd("mappings", "validate", str(default_mapping_path("jira")),
               str(default_mapping_path("servicenow")))
    assert ok.returncode == 0, ok.stderr


def test_demo_plays_its_story_and_exits(tmp_path):
    result = syncd("demo", "--once", "--dir", str(tmp_path / "demo"), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "created Jira OPS-1" in out and "P3 does not page" in out
    assert "has the work note" in out
    assert "priority is now Highest; alice was paged" in out
    assert "Subject: [P1] SYN-1 Checkout API returns 500s" in out
    assert "| Service:  payments-api" in out
    assert "GET shows a confirm page" in out
    assert "assigned to alice; Jira OPS-1 is In Progress, assigned to Alice Adams" in out
    assert "is Resolved" in out
    assert "priority P3 → P1 in servicenow by beth.anglin" in out
    assert "paging started (priority P3 → P1): policy payments, high urgency" in out
    assert "escalation rule 1 of 2, loop 1 of 2: paged alice (schedule payments-primary)" in out
    assert "page to alice by mail sent" in out
    assert "status triggered → acknowledged, assignee (empty) → alice@example.com in ack-link " \
           "by alice" in out
    assert "20 events → 4 alerts (web-1 ×5, web-2 ×5, web-3 ×5, web-4 ×5) → one incident SYN-2, " \
           "which created Jira OPS-2; dave was paged" in out


def test_run_serves_syncs_and_stops_cleanly_on_sigterm(tmp_path):
    sn = ServiceNowSimulator().start()
    jira = JiraSimulator().start()
    port = free_port()
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'run.db'}", sn_url=sn.base_url,
                        jira_url=jira.base_url, port=port)
    process = subprocess.Popen([*SYNCD, "run", "--config", str(path)], env={**os.environ, **ENV},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until("readiness", lambda: requests.get(f"{base}/readyz", timeout=2).status_code == 200)
        sn.human_create({"short_description": "Payments down", "impact": "1", "urgency": "1"})
        wait_until("the Jira issue", lambda: jira.search("project = OPS"))
        headers = {"Authorization": "Bearer t0ken-for-tests"}
        incidents = requests.get(f"{base}/api/v1/incidents", headers=headers, timeout=5).json()
        assert [i["title"] for i in incidents["incidents"]] == ["Payments down"]
        assert requests.get(f"{base}/api/v1/incidents", timeout=5).status_code == 401
        metrics = requests.get(f"{base}/metrics", timeout=5).text
        assert 'syncd_sync_changes_total{connector="servicenow",direction="in",outcome="created"}' in metrics

        second = syncd("run", "--config", str(path), env=ENV, timeout=60)
        assert second.returncode == 2 and "already running on the SQLite store" in second.stderr

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        sn.stop()
        jira.stop()


def test_dead_letters_list_and_retry(store, tmp_path, clock):
    from syncd.engine import service as sync_service
    from syncd.incidents import service as incident_service
    with store.transaction() as session:
        incident = incident_service.create_incident(session=session, fields={"title": "x"}, now=clock.now(),
                                           actor=None, source="test")
        item = sync_service.enqueue(session=session, incident_id=incident.id, connector="servicenow",
                                    operation="update", fields={"title": "x"}, now=clock.now())
        item.state, item.last_error = "dead", "400: Invalid field"
    path = write_config(tmp_path, store.url)
    listed = syncd("dead-letters", "list", "--config", str(path), env=ENV)
    assert listed.returncode == 0 and "400: Invalid field" in listed.stdout
    missing = syncd("dead-letters", "retry", "999", "--config", str(path), env=ENV)
    assert missing.returncode == 2 and "999" in missing.stderr
    retried = syncd("dead-letters", "retry", f"out-{item.id}", "--config", str(path), env=ENV)
    assert retried.returncode == 0, retried.stderr
    with store.transaction() as session:
        assert sync_service.dead_letters(session=session) == []


def test_run_refuses_a_mapping_for_the_wrong_system(tmp_path):
    from syncd.mapping import default_mapping_path
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'w.db'}")
    path.write_text(path.read_text().replace(
        "    poll_interval: 1s\n", f"    poll_interval: 1s\n    mapping: {default_mapping_path('jira')}\n", 1))
    result = syncd("run", "--config", str(path), env=ENV, timeout=60)
    assert result.returncode == 2
    assert "connectors.servicenow.mapping" in result.stderr and "maps jira" in result.stderr


def test_resume_unpauses_a_connector_and_refuses_an_unknown_one(store, tmp_path, clock):
    from syncd.engine import service as sync_service
    with store.transaction() as session:
        sync_service.set_paused(session=session, connector="servicenow", reason="mass change",
                           now=clock.now())
    path = write_config(tmp_path, store.url)
    unknown = syncd("resume", "nosuch", "--config", str(path), env=ENV)
    assert unknown.returncode == 2 and "no connector named 'nosuch'" in unknown.stderr
    resumed = syncd("resume", "servicenow", "--config", str(path), env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    with store.transaction() as session:
        cursor = sync_service.get_cursor(session=session, connector="servicenow")
        assert cursor.paused_reason is None and cursor.accept_mass_change
