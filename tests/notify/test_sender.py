"""The sender over a real store (SQLite and PostgreSQL): pages go out once, outcomes are recorded,
a send cut short is marked unknown and never repeated."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from syncd.incidents import service as incidents
from syncd.incidents.models import Incident
from syncd.incidents.timeline import describe
from syncd.notify import service
from syncd.notify.channels import Delivery
from syncd.notify.links import AckLinks
from syncd.notify.mail_sink import MailSink
from syncd.notify.models import Notification
from syncd.oncall.models import Escalation

from .conftest import open_incident
from .receivers import JsonReceiver

SECRET = "0123456789abcdef0123456789abcdef"


def page(store, clock, user, contact, *, incident_id, escalation_id, after=timedelta(0),
         ack_links=None):
    with store.transaction() as session:
        incident = session.get(Incident, incident_id)
        row = service.enqueue_page(session=session, incident=incident,
                                   escalation=session.get(Escalation, escalation_id), user=user,
                                   contact=contact, after=after, now=clock.now(),
                                   ticket_links=[("jira", "OPS-12", "https://jira/browse/OPS-12")],
                                   ack_links=ack_links)
        session.flush()
        return row.id


def row(store, row_id) -> Notification:
    with store.transaction() as session:
        return session.get(Notification, row_id)


def sentences(store, incident_id) -> list[str]:
    with store.transaction() as session:
        return [describe(entry) for entry in incidents.timeline(session=session,
                                                                incident_id=incident_id)
                if entry.kind.startswith("notification")]


class Recorder:
    """A deliver() that records what it was asked to send and answers as told."""

    def __init__(self, outcome="sent"):
        self.calls = []
        self.outcome = outcome

    def __call__(self, url, *, title, body, timeout):
        self.calls.append((url, title, body))
        return Delivery(self.outcome, f"fake {self.outcome}", 0.0)


def test_a_due_page_is_mailed_once_with_its_ack_link_and_recorded(store, clock, people,
                                                                   make_sender):
    incident_id, escalation_id = open_incident(store, clock)
    links = AckLinks(SECRET, "https://syncd.example.com")
    with MailSink() as sink:
        alice = people.add("alice", mail=sink.url_for("alice@example.com"))
        row_id = page(store, clock, alice, "mail", incident_id=incident_id,
                      escalation_id=escalation_id, ack_links=links)
        sender = make_sender()
        sender.cycle()
        clock.advance(120)
        sender.cycle()
        (mail,) = sink.wait_for(1)
    assert mail["Subject"] == f"[P1] SYN-{incident_id} Payments API down"
    text = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
    body = text.get_payload(decode=True).decode()
    ack_url = next(word for word in body.split() if "/a/" in word)
    link = links.read(ack_url.rsplit("/a/", 1)[1], now=clock.now())
    stored = row(store, row_id)
    assert (link.incident_id, link.user_id, link.escalation_id, link.epoch) == (
        incident_id, "alice", stored.escalation_id, stored.epoch)
    assert "OPS-12" in body
    sent = row(store, row_id)
    assert (sent.state, sent.attempts, sent.claimed_by) == ("sent", 1, "sender-1")
    assert sentences(store, incident_id) == ["page to alice by mail sent"]


def test_the_store_refuses_the_same_page_twice(store, clock, people):
    """The backstop under escalation's one-page-per-contact-per-step rule: the unique page key."""
    incident_id, escalation_id = open_incident(store, clock)
    alice = people.add("alice", mail="json://127.0.0.1:9/x")
    with pytest.raises(IntegrityError):
        with store.transaction() as session:
            incident = session.get(Incident, incident_id)
            escalation = session.get(Escalation, escalation_id)
            arguments = dict(session=session, incident=incident, escalation=escalation,
                             user=alice, contact="mail", after=timedelta(0), now=clock.now(),
                             ticket_links=[], ack_links=None)
            service.enqueue_page(**arguments)
            service.enqueue_page(**arguments)
    with store.transaction() as session:
        assert session.scalars(select(Notification)).all() == []


def test_a_phone_rule_three_minutes_later_waits_and_is_cancelled_by_an_ack(store, clock, people,
                                                                            make_sender):
    incident_id, escalation_id = open_incident(store, clock)
    alice = people.add("alice", mail="json://127.0.0.1:9/mail", phone="json://127.0.0.1:9/phone")
    recorder = Recorder()
    mail_id = page(store, clock, alice, "mail", incident_id=incident_id,
                   escalation_id=escalation_id)
    phone_id = page(store, clock, alice, "phone", incident_id=incident_id,
                    escalation_id=escalation_id, after=timedelta(minutes=3))
    sender = make_sender(deliver=recorder)
    sender.cycle()
    clock.advance(60)
    with store.transaction() as session:
        assert service.cancel_pending(session=session, incident_id=incident_id, now=clock.now(),
                                      reason="acknowledged by alice") == 1
    clock.advance(180)
    sender.cycle()
    assert [url for url, _, _ in recorder.calls] == ["json://127.0.0.1:9/mail"]
    assert row(store, mail_id).state == "sent" and row(store, phone_id).state == "cancelled"
    with store.transaction() as session:
        last = incidents.timeline(session=session, incident_id=incident_id)[-1]
    assert describe(last) == "1 pending page cancelled: acknowledged by alice"


def test_a_receiver_answering_500_is_retried_then_failed(store, clock, people, make_sender):
    incident_id, escalation_id = open_incident(store, clock)
    with JsonReceiver() as receiver:
        alice = people.add("alice", hook=receiver.url("fail"))
        row_id = page(store, clock, alice, "hook", incident_id=incident_id,
                      escalation_id=escalation_id)
        sender = make_sender(max_attempts=3, retry_delay=15)
        for _ in range(6):
            sender.cycle()
            clock.advance(10)
        assert receiver.paths() == ["/fail"] * 3
    failed = row(store, row_id)
    assert (failed.state, failed.attempts) == ("failed", 3) and "500" in failed.detail
    said = sentences(store, incident_id)
    assert len(said) == 3 and said[0].startswith("page to alice by hook failed (attempt 1 of 3)")
    assert said[-1].startswith("page to alice by hook failed: ") and "500" in said[-1]


def test_a_receiver_that_hangs_is_unknown_and_never_resent(store, clock, people, make_sender):
    incident_id, escalation_id = open_incident(store, clock)
    with JsonReceiver() as receiver:
        alice = people.add("alice", hook=receiver.url("hang"))
        row_id = page(store, clock, alice, "hook", incident_id=incident_id,
                      escalation_id=escalation_id)
        sender = make_sender(send_timeout=0.5)
        sender.cycle()
        for _ in range(3):
            clock.advance(3600)
            sender.cycle()
        assert receiver.paths() == ["/hang"]
    unknown = row(store, row_id)
    assert unknown.state == "unknown" and unknown.attempts == 1
    assert sentences(store, incident_id) == [
        "page to alice by hook: outcome unknown (JSON did not answer within 0.5s: the message "
        "may have gone, so it is not resent)"]


def test_a_row_left_sending_by_a_crash_becomes_unknown_after_its_deadline(store, clock, people,
                                                                          make_sender):
    incident_id, escalation_id = open_incident(store, clock)
    alice = people.add("alice", mail="json://127.0.0.1:9/mail")
    row_id = page(store, clock, alice, "mail", incident_id=incident_id,
                  escalation_id=escalation_id)
    with store.transaction() as session:           # the crashed sender's claim, committed
        (claim,) = service.claim_due(session=session, now=clock.now(), worker_id="crashed",
                                     send_timeout=10)
    recorder = Recorder()
    sender = make_sender(deliver=recorder)
    clock.advance(10)
    sender.cycle()
    assert row(store, row_id).state == "sending"   # its deadline has not passed yet
    clock.advance(6)
    sender.cycle()
    clock.advance(600)
    sender.cycle()
    assert recorder.calls == []
    assert row(store, row_id).state == "unknown"
    assert sentences(store, incident_id) == [
        "page to alice by mail: outcome unknown (the sender stopped mid-send)"]
    with store.transaction() as session:           # the slow sender comes back: too late
        assert service.settle(session=session, claim=claim, delivery=Delivery("sent", "ok", 1),
                              channel="json", now=clock.now(), retry=True, max_attempts=3,
                              retry_delay=timedelta(seconds=15)) == []
    assert row(store, row_id).state == "unknown"


def test_a_contact_removed_from_the_files_fails_with_the_reason(store, clock, people,
                                                                make_sender):
    incident_id, escalation_id = open_incident(store, clock)
    alice = people.add("alice", mail="json://127.0.0.1:9/mail")
    row_id = page(store, clock, alice, "mail", incident_id=incident_id,
                  escalation_id=escalation_id)
    people.add("alice")                            # a reload dropped her contacts
    recorder = Recorder()
    make_sender(deliver=recorder).cycle()
    failed = row(store, row_id)
    assert recorder.calls == [] and failed.state == "failed" and failed.attempts == 1
    assert failed.detail == "user alice has no contact 'mail' any more"


def test_pages_of_two_incidents_to_a_throttled_contact_go_as_one_message(store, clock, people,
                                                                         make_sender):
    first = open_incident(store, clock, title="Payments API down")
    second = open_incident(store, clock, title="Checkout slow")
    third = open_incident(store, clock, title="Refunds stuck")
    alice = people.add("alice", mail="json://127.0.0.1:9/mail")
    recorder = Recorder()
    sender = make_sender(deliver=recorder)
    page(store, clock, alice, "mail", incident_id=first[0], escalation_id=first[1])
    sender.cycle()
    clock.advance(20)
    ids = [page(store, clock, alice, "mail", incident_id=i, escalation_id=e)
           for i, e in (second, third)]
    sender.cycle()
    assert len(recorder.calls) == 1                # the minute is not over
    clock.advance(40)
    sender.cycle()
    assert len(recorder.calls) == 2
    _, title, body = recorder.calls[1]
    assert title == f"2 incidents need you: SYN-{second[0]}, SYN-{third[0]}"
    assert "Checkout slow" in body and "Refunds stuck" in body
    assert {row(store, i).state for i in ids} == {"sent"}
