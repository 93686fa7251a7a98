"""`syncd ack`, `resolve`, `note` and `incidents list|show` change incidents as the daemon would:
escalation stops, pages not yet sent are cancelled, the acknowledging person is the assignee."""

from __future__ import annotations

import json
import textwrap

from syncd.config import load_config
from syncd.daemon import Daemon
from tests.oncall_escalation.conftest import RESPONSES
from tests.support import syncd


# The daemon runs on the real clock here: page alice directly, whoever the schedule has today.
DIRECT = RESPONSES.replace("      - {targets: [{schedule: primary}], escalate_after: 10m}",
                           "      - {targets: [{user: alice}], escalate_after: 10m}")


def setup(tmp_path):
    assert DIRECT != RESPONSES
    (tmp_path / "oncall.yaml").write_text(textwrap.dedent(DIRECT))
    path = tmp_path / "syncd.yaml"
    path.write_text(f'store: {{url: "sqlite:///{tmp_path / "s.db"}"}}\n'
                    'response: {files: ["oncall.yaml"]}\nconnectors: {}\n')
    assert syncd("db", "upgrade", "--config", str(path)).returncode == 0
    daemon = Daemon(load_config(path))
    daemon.open(for_commands=True)
    try:
        incident = daemon.engine.commands.create(
            {"title": "Checkout down", "priority": "P1", "group": "Payments"},
            actor="beth", source="test")
        daemon.escalations.cycle()                  # the first rule pages alice
    finally:
        daemon.stop()
    return path, incident.id


def test_ack_as_a_person_stops_escalation_and_assigns_them(tmp_path):
    path, incident = setup(tmp_path)
    done = syncd("ack", str(incident), "--as", "alice", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert "status triggered -> acknowledged" in done.stdout
    assert "assignee None -> alice@example.com" in done.stdout
    shown = json.loads(syncd("incidents", "show", str(incident), "--config", str(path)).stdout)
    assert shown["escalation"]["state"] == "acknowledged"
    assert [page["state"] for page in shown["notifications"]] == ["cancelled", "cancelled"]
    assert shown["fields"]["assignee"] == "alice@example.com"
    assert syncd("ack", str(incident), "--config", str(path)).stdout.strip() == \
        f"SYN-{incident}: no change"


def test_resolve_with_a_note_and_a_note_then_the_list(tmp_path):
    path, incident = setup(tmp_path)
    assert syncd("note", str(incident), "rolled back", "--config", str(path)).returncode == 0
    resolved = syncd("resolve", str(incident), "--note", "rollback", "--config", str(path))
    assert resolved.returncode == 0 and "status triggered -> resolved" in resolved.stdout
    listing = syncd("incidents", "list", "--config", str(path)).stdout
    assert "SYN-1" in listing and "resolved" in listing and "Checkout down" in listing
    refused = syncd("ack", str(incident), "--config", str(path))
    assert refused.returncode == 1 and "cannot be acknowledged" in refused.stderr


def test_an_unknown_incident_is_a_usage_error_naming_it(tmp_path):
    path, _ = setup(tmp_path)
    missing = syncd("ack", "99", "--config", str(path))
    assert missing.returncode == 2 and "incident 99 does not exist" in missing.stderr
    assert syncd("note", "1", "  ", "--config", str(path)).returncode == 2


def test_a_command_never_migrates_the_store_under_a_daemon(tmp_path):
    path = tmp_path / "syncd.yaml"
    path.write_text(f'store: {{url: "sqlite:///{tmp_path / "s.db"}", auto_upgrade: true}}\n'
                    'connectors: {}\n')
    refused = syncd("ack", "1", "--config", str(path))
    assert refused.returncode == 2 and "syncd db upgrade" in refused.stderr
