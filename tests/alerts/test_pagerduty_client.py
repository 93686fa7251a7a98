"""The real ``pagerduty`` package's Events API v2 client, pointed at syncd over loopback HTTPS
(the client refuses any base URL but https://, so the test serves a self-signed certificate and
hands the client that certificate as its CA)."""

from __future__ import annotations

import ssl

import httpx
import pagerduty
import pytest

from .conftest import KEYS, event, self_signed_certificate, served


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def pagerduty_client(routing_key: str, base: str, tls) -> pagerduty.EventsApiV2Client:
    return pagerduty.EventsApiV2Client(
        routing_key, base_url=base, verify=ssl.create_default_context(cafile=str(tls[0])))


def test_the_pagerduty_client_triggers_acknowledges_and_resolves(world, tls):
    with served(world.app, tls) as base:
        client = pagerduty_client(KEYS["time"], base, tls)
        dedup_key = client.trigger("Checkout latency over 2s", "web-1", severity="error",
                                   custom_details={"p99": "2.4s"})
        assert client.trigger("Checkout latency over 2s", "web-1", dedup_key=dedup_key) \
            == dedup_key
        [incident] = world.incidents()
        assert (incident.title, incident.priority, incident.status) == (
            "Checkout latency over 2s", "P2", "triggered")
        assert client.acknowledge(dedup_key) == dedup_key
        assert world.incidents()[0].status == "acknowledged"
        assert client.resolve(dedup_key) == dedup_key
        assert world.incidents()[0].status == "resolved"
        # submit() without a timestamp fails inside pagerduty 7.2.0 (datetime.timezone typo)
        client.submit("Rolled back checkout 7.1", source="deploy-bot",
                      timestamp=world.clock.now().isoformat())
        client.close()
        [alert] = world.alerts()
        assert (alert.status, alert.event_count, alert.custom_details) == (
            "resolved", 2, {})          # the last payload wins, details included


def test_a_flood_from_one_key_gets_429_while_the_client_of_another_key_goes_on(world, tls):
    context = ssl.create_default_context(cafile=str(tls[0]))
    with served(world.app, tls) as base, httpx.Client(base_url=base, verify=context) as http:
        statuses = [http.post("/v2/enqueue", json=event("none", dedup_key="storm")).status_code
                    for _ in range(130)]
        assert statuses.count(202) == 120 and statuses[120:] == [429] * 10
        other = pagerduty_client(KEYS["content"], base, tls)
        assert other.trigger("Packet loss on edge-3", "edge-3", severity="warning")
        other.close()
    assert {a.service for a in world.alerts()} == {"checkout", "network"}
