"""A world for HTTP tests: syncd's FastAPI app over a real engine on the parametrized store, both
simulators over loopback HTTP, and fastapi's TestClient (or a real uvicorn server) in front.

Tests drive the engine step by step (`engine.run_cycle()`, `engine.drain_hints()`), never by
sleeping."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from syncd.api.app import ApiSettings, create_app
from syncd.api.auth import ApiToken
from syncd.engine import service as sync_service
from syncd.engine.sync_engine import SyncEngine
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import ServiceNowSimulator
from tests.engine.conftest import make_engine, mappings, simulators  # noqa: F401 (fixtures)

API_TOKEN = "api-t0ken-for-tests"
OTHER_TOKEN = "second-t0ken-for-a-script"
JIRA_SECRET = "jira-hook-s3cret"
SN_SECRET = "sn-hook-s3cret"
MAX_BODY_BYTES = 16 * 1024
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def jira_signature(body: bytes, secret: str = JIRA_SECRET) -> str:
    """What Jira sends in X-Hub-Signature: the HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class ApiWorld:
    store: Any
    clock: Any
    sn: ServiceNowSimulator
    jira: JiraSimulator
    engine: SyncEngine
    app: FastAPI
    client: TestClient
    readiness: dict[str, Any]

    def api(self, method: str, path: str, **kwargs: Any):
        """A request to the API as a script holding a valid token."""
        return self.client.request(method, path, headers={**AUTH, **kwargs.pop("headers", {})},
                                   **kwargs)

    def raise_sn_incident(self, **fields: Any) -> str:
        """A person raises a P1 in ServiceNow; one cycle brings it in and creates the Jira issue."""
        record = self.sn.human_create({"short_description": "Checkout database down",
                                       "impact": "1", "urgency": "1", **fields})
        self.engine.run_cycle()
        self.engine.run_cycle()
        return record["sys_id"]

    def link(self, connector: str, incident_id: int = 1):
        with self.store.transaction() as session:
            return sync_service.link_for(session=session, incident_id=incident_id, connector=connector)

    def jira_issue(self, incident_id: int = 1) -> dict[str, Any]:
        link = self.link("jira", incident_id)
        assert link is not None, f"incident {incident_id} has no Jira issue"
        return self.jira.get_issue(link.remote_key)

    def queued_hints(self) -> list[tuple[str, str]]:
        return list(self.engine.hints.queue)


@pytest.fixture
def api_world(store, clock, simulators, mappings):  # noqa: F811 (fixtures imported above)
    sn, jira = simulators
    engine = make_engine(store, clock, sn, jira, mappings, sn_creates_tickets=True)
    engine.runtimes["jira"].connector.webhook_secret = JIRA_SECRET
    engine.runtimes["servicenow"].connector.webhook_secret = SN_SECRET
    readiness: dict[str, Any] = {"ready": True, "store": "ok"}
    app = create_app(engine, ApiSettings(api_tokens=[ApiToken("ops-bot", API_TOKEN), ApiToken("script", OTHER_TOKEN)],
                                         max_body_bytes=MAX_BODY_BYTES,
                                         readiness=lambda: dict(readiness)))
    with TestClient(app) as client:
        yield ApiWorld(store, clock, sn, jira, engine, app, client, readiness)
    for runtime in engine.runtimes.values():
        runtime.connector.close()


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """The app behind a real uvicorn server on a free loopback port, bound by uvicorn as the
    daemon does (a socket bound by hand without IPPROTO_TCP misses asyncio's TCP_NODELAY and
    every answer then waits ~40 ms for a delayed ACK); yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                           access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
