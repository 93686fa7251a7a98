"""Who may call what: the API wants a bearer token from `http.api_tokens`; health, readiness,
metrics and the OpenAPI document are open to the platform's probes and scrapers."""

from __future__ import annotations

import re
from itertools import product

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from syncd.api.app import ApiSettings, create_app
from syncd.api.auth import ApiToken
from tests.api.conftest import API_TOKEN, OTHER_TOKEN

API_CALLS = [("GET", "/api/v1/incidents"), ("POST", "/api/v1/incidents"),
             ("GET", "/api/v1/incidents/1"), ("POST", "/api/v1/incidents/1/acknowledge"),
             ("POST", "/api/v1/incidents/1/resolve"), ("POST", "/api/v1/incidents/1/notes"),
             ("GET", "/api/v1/dead-letters"), ("POST", "/api/v1/dead-letters/1/retry")]

REFUSED_AUTHORIZATIONS = {
    "no header": None,
    "empty header": "",
    "scheme without token": "Bearer",
    "scheme and blank": "Bearer   ",
    "wrong token": "Bearer not-the-token",
    "token prefix": f"Bearer {API_TOKEN[:-1]}",
    "token with extra": f"Bearer {API_TOKEN}x",
    "basic scheme": f"Basic {API_TOKEN}",
    "token without scheme": API_TOKEN,
    "token as scheme": f"{API_TOKEN} Bearer",
}


def test_every_api_call_without_a_valid_bearer_token_is_401(api_world):
    for (method, path), (name, authorization) in product(API_CALLS, REFUSED_AUTHORIZATIONS.items()):
        headers = {} if authorization is None else {"Authorization": authorization}
        answer = api_world.client.request(method, path, headers=headers, json={"title": "x"})
        where = f"{method} {path} with {name}"
        assert answer.status_code == 401, f"{where}: {answer.status_code} {answer.text}"
        assert answer.headers["www-authenticate"] == "Bearer", where
        assert "token" in answer.json()["detail"], where
    with api_world.store.transaction() as session:
        from syncd.incidents import service as incident_service
        assert incident_service.list_incidents(session=session) == [], "a refused call changed the store"


def test_any_configured_token_is_accepted_and_the_scheme_is_case_insensitive(api_world):
    for authorization in (f"Bearer {API_TOKEN}", f"bearer {OTHER_TOKEN}",
                          f"BEARER {API_TOKEN}"):
        answer = api_world.client.get("/api/v1/incidents",
                                      headers={"Authorization": authorization})
        assert answer.status_code == 200, authorization
        assert answer.json() == {"incidents": []}


def test_health_readiness_and_metrics_need_no_token(api_world):
    assert api_world.client.get("/healthz").json() == {"status": "ok"}
    assert api_world.client.get("/readyz").status_code == 200
    assert api_world.client.get("/metrics").status_code == 200
    assert api_world.client.get("/openapi.json").status_code == 200


def test_readyz_follows_the_readiness_check_and_shows_its_report(api_world):
    ready = api_world.client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "store": "ok"}
    api_world.readiness.update(ready=False, store="unreachable: OperationalError")
    not_ready = api_world.client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["store"] == "unreachable: OperationalError"
    assert api_world.client.get("/healthz").status_code == 200, "liveness must not follow readiness"
    api_world.readiness.update(ready=True, store="ok")
    assert api_world.client.get("/readyz").status_code == 200


def test_metrics_are_prometheus_text_with_syncd_metrics(api_world):
    api_world.raise_sn_incident()
    api_world.engine.update_gauges()
    answer = api_world.client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=")
    text = answer.text
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"syncd_sync_changes", "syncd_outbox_pending", "syncd_dead_letters"} <= families
    for family in ("syncd_sync_changes_total", "syncd_remote_requests_total",
                   "syncd_remote_request_seconds_bucket", "syncd_outbox_pending",
                   "syncd_dead_letters"):
        assert re.search(rf"^{family}{{", text, re.M), f"{family} missing from /metrics"
    assert 'syncd_sync_changes_total{connector="servicenow",direction="in",outcome="created"}' in text
    assert re.search(r'^syncd_outbox_pending\{connector="jira"\} 0\.0$', text, re.M)


# DESIGN.md, "External contract", HTTP: public names users script against.
HTTP_CONTRACT = [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
                 ("POST", "/webhooks/{}"), ("GET", "/api/v1/incidents"),
                 ("GET", "/api/v1/incidents/{}"), ("POST", "/api/v1/incidents/{}/acknowledge"),
                 ("POST", "/api/v1/incidents/{}/resolve"), ("POST", "/api/v1/incidents/{}/notes"),
                 ("GET", "/api/v1/dead-letters"), ("POST", "/api/v1/dead-letters/{}/retry")]


def test_the_openapi_document_lists_every_path_of_the_http_contract(api_world):
    document = api_world.client.get("/openapi.json").json()
    served = {(method.upper(), re.sub(r"\{[^}]*\}", "{}", path))
              for path, operations in document["paths"].items() for method in operations}
    assert [call for call in HTTP_CONTRACT if call not in served] == []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/v1/"):
                assert operation.get("security"), f"{method.upper()} {path} does not declare auth"
    schemes = document["components"]["securitySchemes"].values()
    assert any(s.get("scheme", "").lower() == "bearer" for s in schemes)


def test_with_no_configured_token_every_api_call_is_refused(api_world):
    app = create_app(api_world.engine, ApiSettings(api_tokens=[ApiToken("api", "")]))
    with TestClient(app) as client:
        for authorization in ("Bearer ", "Bearer x", f"Bearer {API_TOKEN}"):
            answer = client.get("/api/v1/incidents", headers={"Authorization": authorization})
            assert answer.status_code == 401, authorization
        assert client.get("/healthz").status_code == 200
