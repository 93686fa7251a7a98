"""Custom Incident Actions against a real local HTTP receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import socket
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from syncd.api.actions import action_router
from syncd.api.auth import ApiToken, bearer_actor
from syncd.incidents import service as incident_service
from syncd.incidents.timeline import describe
from syncd.response import actions
from syncd.response.models import ActionRun
from syncd.response_files import ResponseFileError, load_response_files


class Receiver:
    """An http.server that records each request and answers ``status`` (or hangs ``hang`` s)."""

    def __init__(self, status: int = 200, answer: bytes = b'{"ok": true}', hang: float = 0):
        self.requests: list[dict] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                receiver.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers),
                                          "body": self.rfile.read(length).decode()})
                if hang:
                    receiver.release.wait(hang)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            do_POST = do_PUT = do_GET = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**kwargs):
        made.append(Receiver(**kwargs))
        return made[-1]
    yield make
    for item in made:
        item.close()


def responses(tmp_path: Path, text: str, environ: dict | None = None):
    path = tmp_path / "actions.yaml"
    path.write_text(textwrap.dedent(text))
    return load_response_files([path], environ=environ or {})


def action_file(url: str, **extra: str) -> str:
    lines = "".join(f"    {key}: {value}\n" for key, value in extra.items())
    return f"actions:\n  - id: restart\n    label: Restart web\n    url: {url}\n{lines}"


def new_incident(store, clock, service: str | None = "web") -> int:
    with store.transaction() as session:
        incident = incident_service.create_incident(
            session=session, fields={"title": "Checkout down", "priority": "P1",
                                     "service": service}, now=clock.now(), actor="x", source="api")
        session.flush()
        return incident.id


def timeline_texts(store, incident_id: int) -> list[str]:
    with store.transaction() as session:
        return [describe(e) for e in incident_service.timeline(session=session,
                                                               incident_id=incident_id)
                if e.kind.startswith("action_")]


def run(store, clock, loaded, incident_id, actor="alice", **kwargs) -> ActionRun:
    return actions.run_action(sessions=store.sessions, clock=clock, responses=loaded,
                              action_id="restart", incident_id=incident_id, actor=actor,
                              source="api", **kwargs)


def test_the_receiver_gets_the_rendered_body_and_headers(store, clock, receiver, tmp_path):
    hook = receiver()
    loaded = responses(tmp_path, action_file(
        hook.url, headers='{Authorization: "Bearer ${HOOK_TOKEN}"}',
        body="'{\"title\": {{ incident.title | tojson }}, \"number\": \"{{ incident.number }}\", "
             "\"by\": {{ actor | tojson }}}'"), environ={"HOOK_TOKEN": "s3cret"})
    assert loaded.redacted()["actions"][0]["headers"] == {"Authorization": "***"}
    incident_id = new_incident(store, clock)
    done = run(store, clock, loaded, incident_id)
    assert done.state == "succeeded" and done.status_code == 200
    assert done.response_excerpt == '{"ok": true}' and done.duration_ms is not None
    [request] = hook.requests
    assert request["method"] == "POST" and request["path"] == "/hook"
    assert request["headers"]["Authorization"] == "Bearer s3cret"
    assert json.loads(request["body"]) == {"title": "Checkout down",
                                           "number": f"SYN-{incident_id}", "by": "alice"}
    assert "s3cret" not in json.dumps(done.request)
    texts = timeline_texts(store, incident_id)
    assert texts[0] == "action Restart web run by alice"
    assert texts[1].startswith("action Restart web succeeded: HTTP 200 in ")


def test_a_500_answer_fails_with_its_excerpt(store, clock, receiver, tmp_path):
    hook = receiver(status=500, answer=b"x" * 10000)
    loaded = responses(tmp_path, action_file(hook.url))
    incident_id = new_incident(store, clock)
    done = run(store, clock, loaded, incident_id)
    assert done.state == "failed" and done.status_code == 500
    assert len(done.response_excerpt) == actions.EXCERPT_BYTES
    assert "HTTP 500" in timeline_texts(store, incident_id)[1]


def test_a_hanging_receiver_is_a_timeout(store, clock, receiver, tmp_path):
    hook = receiver(hang=5)
    loaded = responses(tmp_path, action_file(hook.url, timeout="1s"))
    incident_id = new_incident(store, clock)
    done = run(store, clock, loaded, incident_id)
    assert done.state == "failed" and done.error == "timed out after 1s"
    assert timeline_texts(store, incident_id)[1].endswith(": timed out after 1s")


def test_a_refused_connection_fails(store, clock, tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    loaded = responses(tmp_path, action_file(f"http://127.0.0.1:{port}/hook"))
    incident_id = new_incident(store, clock)
    done = run(store, clock, loaded, incident_id)
    assert done.state == "failed" and done.error == "connection refused"
    assert timeline_texts(store, incident_id)[1].endswith("connection refused")


@pytest.mark.parametrize("body, reason", [
    ("'{{ environ }}'", "UndefinedError"),
    ("'{{ incident|attr(\"__class__\") }}'", "SecurityError"),
    ("'not json {{ incident.title }}'", "not JSON"),
])
def test_a_body_that_cannot_render_fails_the_run_without_a_call(store, clock, receiver, tmp_path,
                                                               body, reason):
    hook = receiver()
    loaded = responses(tmp_path, action_file(hook.url, body=body))
    incident_id = new_incident(store, clock)
    done = run(store, clock, loaded, incident_id)
    assert done.state == "failed" and reason in done.error
    assert hook.requests == []
    assert reason in timeline_texts(store, incident_id)[1]


@pytest.mark.parametrize("extra, message", [
    ({"method": "FETCH"}, "actions[0].method"),
    ({"body": "'{{ incident.title '"}, "does not parse"),
    ({"body": "\"{{ ''.__class__ }}\""}, "'__class__'"),
    ({"body": "'{{ cycler.__init__.__globals__ }}'"}, "'__globals__'"),
    ({"timeout": "0s"}, "actions[0].timeout"),
    ({"colour": "red"}, "actions[0].colour"),
])
def test_bad_definitions_are_refused_with_file_and_line(tmp_path, extra, message):
    with pytest.raises(ResponseFileError) as refused:
        responses(tmp_path, action_file("https://hooks.example.com/x", **extra))
    [problem] = refused.value.problems
    assert f"{tmp_path / 'actions.yaml'}:" in str(problem) and problem.line is not None
    assert message in str(problem)


def test_a_url_that_is_not_http_is_refused(tmp_path):
    with pytest.raises(ResponseFileError, match="actions.yaml:4: actions\\[0\\].url"):
        responses(tmp_path, action_file("file:///etc/passwd"))


def test_interrupted_runs_become_unknown_never_retried(store, clock, tmp_path):
    incident_id = new_incident(store, clock)
    with store.transaction() as session:
        session.add(ActionRun(incident_id=incident_id, action="restart", label="Restart web",
                              actor="alice", source="api", state="running", timeout_seconds=16,
                              request={}, created_at=clock.now(), started_at=clock.now()))
    actions.sweep_interrupted_runs(store.sessions, clock)
    with store.transaction() as session:
        assert session.query(ActionRun).one().state == "running"   # may still be in flight
    clock.advance(16 + actions.INTERRUPTED_MARGIN.total_seconds() + 1)
    actions.sweep_interrupted_runs(store.sessions, clock)
    with store.transaction() as session:
        assert session.query(ActionRun).one().state == "unknown"
    assert timeline_texts(store, incident_id)[-1].startswith("action Restart web outcome unknown")


def api(store, clock, loaded) -> TestClient:
    app = FastAPI()
    app.include_router(action_router(sessions=store.sessions, responses=lambda: loaded,
                                     clock=clock, actor=bearer_actor([ApiToken("ops-bot", "t0k")])))
    return TestClient(app, headers={"Authorization": "Bearer t0k"})


def test_the_api_runs_lists_and_refuses(store, clock, receiver, tmp_path):
    hook = receiver()
    loaded = responses(tmp_path, action_file(hook.url, services="[web]", confirm="true"))
    client = api(store, clock, loaded)
    web, db = new_incident(store, clock), new_incident(store, clock, service="db")
    path = f"/api/v1/incidents/{web}/actions"
    assert client.post(f"{path}/restart").status_code == 409
    assert client.post(f"{path}/restart", json={"confirmed": False}).status_code == 409
    assert client.post(f"{path}/nope", json={"confirmed": True}).status_code == 404
    assert client.post("/api/v1/incidents/999/actions/restart",
                       json={"confirmed": True}).status_code == 404
    assert client.post(f"/api/v1/incidents/{db}/actions/restart",
                       json={"confirmed": True}).status_code == 400
    assert hook.requests == []
    answer = client.post(f"{path}/restart", json={"confirmed": True})
    assert answer.status_code == 200 and answer.json()["state"] == "succeeded"
    assert answer.json()["actor"] == "ops-bot"
    listed = client.get(path).json()
    assert [a["id"] for a in listed["actions"]] == ["restart"]
    assert [r["state"] for r in listed["runs"]] == ["succeeded"]
    assert client.get(f"/api/v1/incidents/{db}/actions").json()["actions"] == []
    assert timeline_texts(store, web)[0] == "action Restart web run by ops-bot"
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_syncd_action_run_calls_the_url_and_prints_the_outcome(tmp_path, receiver):
    """The CLI runs the action as the API does: the row, the call, the outcome, exit 0 / 1."""
    from syncd.config import load_config
    from syncd.daemon import Daemon
    from tests.support import syncd

    target = receiver()
    (tmp_path / "actions.yaml").write_text(action_file(
        target.url, confirm="true", body="'{\"incident\": \"{{ incident.number }}\"}'"))
    config = tmp_path / "syncd.yaml"
    config.write_text(f'store: {{url: "sqlite:///{tmp_path / "s.db"}"}}\n'
                      'response: {files: ["actions.yaml"]}\nconnectors: {}\n')
    assert syncd("db", "upgrade", "--config", str(config)).returncode == 0
    daemon = Daemon(load_config(config))
    daemon.open(for_commands=True)
    try:
        incident = daemon.engine.commands.create({"title": "Checkout down"}, actor="t",
                                                 source="test")
    finally:
        daemon.stop()
    refused = syncd("action", "run", "restart", str(incident.id), "--config", str(config))
    assert refused.returncode == 1 and "confirm" in refused.stderr.lower()
    assert target.requests == []
    done = syncd("action", "run", "restart", str(incident.id), "--yes", "--as", "alice",
                 "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert f"SYN-{incident.id}: action Restart web succeeded HTTP 200" in done.stdout
    assert json.loads(target.requests[0]["body"]) == {"incident": f"SYN-{incident.id}"}
