"""Regression tests from the second review of issue 10: outcomes recorded in groups by the
sender survive one bad claim and an exception before the send."""
from __future__ import annotations

import pytest

from syncd.notify import service
from syncd.notify.channels import Delivery
from tests.notify.conftest import open_incident
from tests.notify.test_sender import page, row


def _two_claims(store, clock, people):
    incident_id, escalation_id = open_incident(store, clock)
    alice = people.add("alice", mail="json://127.0.0.1:9/alice")
    bob = people.add("bob", mail="json://127.0.0.1:9/bob")
    a = page(store, clock, alice, "mail", incident_id=incident_id, escalation_id=escalation_id)
    b = page(store, clock, bob, "mail", incident_id=incident_id, escalation_id=escalation_id)
    return a, b


def test_a_failing_settle_of_one_claim_keeps_the_outcomes_of_the_others(store, clock, people,
                                                                        make_sender, monkeypatch):
    a, b = _two_claims(store, clock, people)
    real = service.settle

    def settle(**kw):
        if a in kw["claim"].ids:
            raise RuntimeError("settle of a failed (e.g. a lost connection)")
        return real(**kw)
    monkeypatch.setattr(service, "settle", settle)
    sender = make_sender(deliver=lambda url, **_: Delivery("sent", "ok", 0.0))
    try:
        sender.cycle()
    except RuntimeError:
        pass
    assert row(store, b).state == "sent", f"bob's delivered page was left {row(store, b).state}"


def test_an_exception_escaping_deliver_does_not_lose_the_other_outcomes(store, clock, people,
                                                                       make_sender):
    a, b = _two_claims(store, clock, people)
    calls = {"n": 0}

    def responses():
        calls["n"] += 1
        if calls["n"] == 2:            # a reload race / bad object: _url raises outside the try
            raise RuntimeError("responses unavailable")
        return people.responses()
    sender = make_sender(deliver=lambda url, **_: Delivery("sent", "ok", 0.0))
    sender.responses = responses
    try:
        sender.cycle()
    except RuntimeError:
        pytest.fail("an exception in _deliver escaped send() and would crash the sender loop")
    states = {row(store, a).state, row(store, b).state}
    assert "sending" not in states, states
