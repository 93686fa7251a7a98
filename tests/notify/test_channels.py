"""Real delivery through apprise: mail to a loopback SMTP server, JSON to a webhook receiver."""

import pytest

from syncd.notify.channels import channel_of, deliver, is_short, parse_problem
from syncd.notify.mail_sink import MailSink

from .receivers import JsonReceiver


def test_a_mail_reaches_the_sink_with_subject_and_body():
    with MailSink() as sink:
        delivery = deliver(sink.url_for("alice@example.com", sender="oncall@example.com"),
                           title="[P1] SYN-4 Payments down", body="Ack: https://s/a/x\n",
                           timeout=5)
        assert delivery.outcome == "sent", delivery.detail
        (mail,) = sink.wait_for(1)
    assert mail["Subject"] == "[P1] SYN-4 Payments down"
    assert mail["To"] == "alice@example.com" and mail["From"] == "oncall@example.com"
    text = next(part for part in mail.walk() if part.get_content_type() == "text/plain")
    assert "Ack: https://s/a/x" in text.get_payload(decode=True).decode()


def test_a_json_webhook_gets_title_and_message():
    with JsonReceiver() as receiver:
        delivery = deliver(receiver.url("ok"), title="T", body="hello", timeout=5)
    assert delivery.outcome == "sent"
    assert receiver.received == [("/ok", {"version": "1.0", "title": "T", "message": "hello",
                                          "attachments": [], "type": "info"})]


def test_a_receiver_answering_500_is_a_failure_with_its_words():
    with JsonReceiver() as receiver:
        delivery = deliver(receiver.url("fail"), title="T", body="b", timeout=5)
    assert delivery.outcome == "failed" and "500" in delivery.detail


def test_a_receiver_that_hangs_past_the_timeout_is_unknown():
    with JsonReceiver() as receiver:
        delivery = deliver(receiver.url("hang"), title="T", body="b", timeout=0.5)
    assert delivery.outcome == "unknown"
    assert "did not answer within 0.5s" in delivery.detail


def test_a_refused_connection_is_a_failure():
    with JsonReceiver() as receiver:
        url = receiver.url("ok")
    assert deliver(url, title="T", body="b", timeout=2).outcome == "failed"


def test_a_contact_url_apprise_cannot_build_fails_without_showing_its_secret():
    delivery = deliver("twilio://ACsid:supersecrettoken77@15550001111/15550002222",
                       title="T", body="b", timeout=1)
    assert delivery.outcome == "failed"
    assert "supersecrettoken77" not in delivery.detail


@pytest.mark.parametrize(("url", "channel", "short"), [
    ("mailto://mail.example.com?from=a@example.com&to=b@example.com", "mailto", False),
    ("mailtos://u:p@mail.example.com?to=b@example.com", "mailto", False),
    ("json://127.0.0.1:9/x", "json", False),
    ("twilio://AC0123456789abcdef0123456789abcdef:0123456789abcdef0123456789abcdef@15550001111/"
     "15550002222", "twilio", True),
    ("https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "slack",
     False),
])
def test_channel_names_and_short_forms(url, channel, short):
    assert channel_of(url) == channel and is_short(url) is short


@pytest.mark.parametrize(("url", "problem"), [
    ("foo://bar", "apprise has no channel foo://"),
    ("json://", "apprise cannot parse this json:// URL"),
    ("https://example.com/hook", "apprise cannot parse this https:// URL"),
])
def test_urls_apprise_cannot_read_say_why(url, problem):
    assert problem in parse_problem(url)


def test_a_good_url_has_no_problem():
    assert parse_problem("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops") is None
