"""Regression tests from the review of Custom Incident Actions (issue 12)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from syncd.incidents import service as incident_service
from syncd.metrics import ACTIONS
from syncd.response import actions
from syncd.response.definitions import Action
from syncd.response.models import ActionRun
from syncd.response_files import ResponseFileError
from tests.response.test_actions import (action_file, api, new_incident, receiver,  # noqa: F401
                                         responses, run, timeline_texts)


def _action(body: str) -> Action:
    return Action(id="x", label="X", url="https://hooks.example.com/x", body=body)


CTX = {"incident": {"title": "t"}, "actor": "a"}


# --- sandbox: exceptions that are not TemplateError escape render_body -------------------------
def test_a_recursive_macro_is_refused_at_load(tmp_path, receiver):
    hook = receiver()
    body = '{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}'
    with pytest.raises(ResponseFileError, match="loops and macros are not allowed"):
        responses(tmp_path, action_file(hook.url, body=repr(body).replace("\\'", "''")))


def test_a_runaway_operator_fails_the_run_not_the_request(store, clock, receiver, tmp_path):
    hook = receiver()
    body = '{"a": "{{ "x" * 10**20 }}"}'
    loaded = responses(tmp_path, action_file(hook.url, body=repr(body).replace("\\'", "''")))
    done = run(store, clock, loaded, new_incident(store, clock))
    assert done.state == "failed" and hook.requests == []
    assert "over 64 KB" in done.error


# --- sandbox: no CPU / output bound; the render runs in the API request thread -----------------
@pytest.mark.parametrize("body", [
    '{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}{}',
    '{"a": {{ 9 ** 9 ** 9 }}}',
    '{"a": "{{ lipsum(n=100000, min=1000, max=1000) }}"}',
])
def test_a_template_cannot_hang_the_render(body):
    code = textwrap.dedent(f"""
        from syncd.response.definitions import Action
        from syncd.response.actions import render_body
        a = Action(id="x", label="X", url="https://hooks.example.com/x", body={body!r})
        try:
            render_body(a, {{"incident": {{}}, "actor": "a"}})
        except ValueError:
            pass
    """)
    try:
        subprocess.run([sys.executable, "-c", code], timeout=5, check=False, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail("render_body ran > 5 s: the template hangs the API worker (no time bound)")


@pytest.mark.parametrize("body", [
    '{"a": "{{ "x" * 30000000 }}"}',
    '{"a": "{{ "%030000000d" % 1 }}"}',
])
def test_the_rendered_body_is_bounded(body):
    with pytest.raises(ValueError, match="over 64 KB"):
        actions.render_body(_action(body), CTX)


# --- 4 KB excerpt bound ------------------------------------------------------------------------
def test_the_excerpt_is_at_most_4_kb(store, clock, receiver, tmp_path):
    hook = receiver(answer=b"\xff" * 10000)
    loaded = responses(tmp_path, action_file(hook.url))
    done = run(store, clock, loaded, new_incident(store, clock))
    assert len(done.response_excerpt.encode()) <= actions.EXCERPT_BYTES, \
        f"excerpt is {len(done.response_excerpt.encode())} bytes"


# --- the timeout is not a total deadline -------------------------------------------------------
def _drip_server(chunks: int, pause: float):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", str(chunks))
            self.end_headers()
            for _ in range(chunks):
                self.wfile.write(b"x"); self.wfile.flush(); time.sleep(pause)

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_dripping_receiver_is_cut_at_the_timeout(store, clock, tmp_path):
    server = _drip_server(chunks=8, pause=0.5)
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        loaded = responses(tmp_path, action_file(url, timeout="1s"))
        done = run(store, clock, loaded, new_incident(store, clock))
        assert done.duration_ms < 2000, (
            f"call took {done.duration_ms} ms with timeout 1s, state {done.state}: the timeout is "
            "per socket read; a run can outlive timeout+60s and be swept 'unknown' mid-call")
    finally:
        server.shutdown(); server.server_close()


# --- secrets ----------------------------------------------------------------------------------
def test_a_header_secret_echoed_by_the_receiver_stays_out_of_timeline_and_api(
        store, clock, receiver, tmp_path):
    hook = receiver(answer=b'{"you_sent": "Bearer s3cret"}')   # e.g. httpbin /anything
    loaded = responses(tmp_path, action_file(hook.url, headers='{Authorization: "Bearer ${T}"}'),
                       environ={"T": "s3cret"})
    incident_id = new_incident(store, clock)
    client = api(store, clock, loaded)
    answer = client.post(f"/api/v1/incidents/{incident_id}/actions/restart")
    assert "s3cret" not in answer.text
    assert not any("s3cret" in t for t in timeline_texts(store, incident_id))


# --- redirect ---------------------------------------------------------------------------------
def test_a_redirect_to_another_host_is_not_followed(store, clock, receiver, tmp_path):
    other = receiver()

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(307); self.send_header("Location", other.url)
            self.send_header("Content-Length", "0"); self.end_headers()

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        loaded = responses(tmp_path, action_file(f"http://127.0.0.1:{server.server_port}/x"))
        done = run(store, clock, loaded, new_incident(store, clock))
        assert other.requests == [] and done.state == "failed" and done.status_code == 307
    finally:
        server.shutdown(); server.server_close()


# --- the commit after the call fails -----------------------------------------------------------
def test_a_failed_final_commit_does_not_count_the_outcome(store, clock, receiver, tmp_path,
                                                         monkeypatch):
    hook = receiver()
    loaded = responses(tmp_path, action_file(hook.url))
    incident_id = new_incident(store, clock)
    before = ACTIONS.labels(action="restart", outcome="succeeded")._value.get()
    real = incident_service.append_timeline

    def failing(**kwargs):
        out = real(**kwargs)
        if kwargs["kind"] == "action_succeeded":
            from sqlalchemy import event

            def boom(session):
                raise RuntimeError("commit failed")
            event.listen(kwargs["session"], "before_commit", boom)
        return out
    monkeypatch.setattr(incident_service, "append_timeline", failing)

    with pytest.raises(RuntimeError):
        run(store, clock, loaded, incident_id)
    assert len(hook.requests) == 1
    with store.transaction() as session:
        assert session.query(ActionRun).one().state == "running"   # left to the sweep -> unknown
    after = ACTIONS.labels(action="restart", outcome="succeeded")._value.get()
    assert after == before, "syncd_actions_total{outcome=succeeded} counted a rolled-back outcome"


# --- API confirm rule and actor -----------------------------------------------------------------
@pytest.mark.parametrize("sent", [{"confirmed": "yes"}, {"confirmed": 1}, {"confirmed": "on"}])
def test_confirm_needs_a_literal_true(store, clock, receiver, tmp_path, sent):
    hook = receiver()
    loaded = responses(tmp_path, action_file(hook.url, confirm="true"))
    client = api(store, clock, loaded)
    incident_id = new_incident(store, clock)
    assert client.post(f"/api/v1/incidents/{incident_id}/actions/restart",
                       json=sent).status_code in (409, 422)


def test_the_body_cannot_name_the_actor(store, clock, receiver, tmp_path):
    hook = receiver()
    loaded = responses(tmp_path, action_file(hook.url))
    client = api(store, clock, loaded)
    incident_id = new_incident(store, clock)
    answer = client.post(f"/api/v1/incidents/{incident_id}/actions/restart",
                         json={"actor": "alice", "source": "console"})
    assert answer.json()["actor"] == "ops-bot" and answer.json()["source"] == "api"
