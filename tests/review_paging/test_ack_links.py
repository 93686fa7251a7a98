"""Acknowledge links: GET changes nothing, no XSS, and replays of an old link."""
from fastapi import FastAPI
from fastapi.testclient import TestClient

from syncd.api.ack_links import ack_link_router
from syncd.notify.links import AckLinks
from tests.oncall_escalation.conftest import Paging


def _client(paging: Paging, links: AckLinks) -> TestClient:
    app = FastAPI()
    app.include_router(ack_link_router(links=links, commands=paging.commands,
                                       sessions=paging.store.sessions,
                                       responses=paging.responses.current, clock=paging.clock,
                                       wake=lambda: None))
    return TestClient(app)


def _status(paging, incident_id):
    return paging.escalation(incident_id).state


def test_get_changes_nothing_and_the_title_is_escaped(paging):
    links = AckLinks("s3cret", "https://syncd.example")
    incident = paging.incident(title="<script>alert(1)</script>")
    paging.advance(0)
    token = links.token_for(incident_id=incident, user_id="alice",
                            escalation_id=paging.escalation(incident).id, epoch=1,
                            now=paging.clock.now())
    client = _client(paging, links)
    page = client.get(f"/a/{token}")
    assert page.status_code == 200 and "<script>" not in page.text
    assert _status(paging, incident) == "active"
    assert client.post(f"/a/{token}").status_code == 200
    assert _status(paging, incident) == "acknowledged"


def test_an_old_link_does_not_acknowledge_a_later_reopen_of_the_incident(paging):
    """A page's link from a resolved episode must not acknowledge the incident re-opened a day
    later: it names the escalation run that sent it."""
    links = AckLinks("s3cret", "https://syncd.example")
    incident = paging.incident()
    paging.advance(0)
    old = links.token_for(incident_id=incident, user_id="alice",
                          escalation_id=paging.escalation(incident).id, epoch=1,
                          now=paging.clock.now())
    paging.commands.resolve(incident, actor="alice", source="api")
    paging.advance(24 * 60)
    paging.commands.update(incident, {"status": "triggered"}, actor="beth", source="servicenow")
    paging.advance(0)
    client = _client(paging, links)
    refused = client.post(f"/a/{old}")
    assert refused.status_code == 410 and "earlier round" in refused.text
    assert _status(paging, incident) != "acknowledged", "a stale link from an earlier page acked"


def test_a_user_removed_from_the_response_files_cannot_acknowledge(paging):
    links = AckLinks("s3cret", "https://syncd.example")
    incident = paging.incident()
    paging.advance(0)
    token = links.token_for(incident_id=incident, user_id="mallory",
                            escalation_id=paging.escalation(incident).id, epoch=1,
                            now=paging.clock.now())
    client = _client(paging, links)
    assert client.post(f"/a/{token}").status_code == 403
    assert _status(paging, incident) != "acknowledged", "ack as a user not in the response files"
