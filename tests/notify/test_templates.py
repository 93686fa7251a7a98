"""Every page carries number, title, priority, service, ticket links and the ack link."""

from types import SimpleNamespace

from syncd.notify.templates import SHORT_LIMIT, render_page, render_test
from syncd.oncall.definitions import User

ALICE = User(id="alice", name="Alice Adams", email="alice@example.com")
LINKS = [("servicenow", "INC0010001", "https://acme.service-now.com/incident.do?sys_id=1"),
         ("jira", "OPS-12", "https://acme.atlassian.net/browse/OPS-12")]
ACK = "https://syncd.example.com/a/WzEyMzQ1NiwiYWxpY2UuYWRhbXMiLDk4NzY1NDNd.aVZhwA.b0k4fVixn3KK"


def incident(title="Payments API down", priority="P1", service="payments-api"):
    return SimpleNamespace(id=42, number="SYN-42", title=title, priority=priority,
                           service=service)


def test_a_page_carries_everything_a_responder_needs():
    subject, body = render_page(incident=incident(), user=ALICE, ticket_links=LINKS,
                                ack_url=ACK, urgency="high", short=False)
    assert subject == "[P1] SYN-42 Payments API down"
    for part in ("SYN-42", "Payments API down", "P1", "payments-api", "INC0010001", "OPS-12",
                 LINKS[0][2], LINKS[1][2], ACK, "high urgency"):
        assert part in body


def test_a_title_with_line_breaks_cannot_forge_lines_or_headers():
    evil = "Disk full\r\nBcc: everyone@example.com\n\nAcknowledge: https://evil.example/a/x {{ 7*7 }}"
    subject, body = render_page(incident=incident(title=evil), user=ALICE, ticket_links=[],
                                ack_url=ACK, urgency="high", short=False)
    assert "\n" not in subject and "\r" not in subject
    assert not any(line.startswith(("Bcc:", "Acknowledge: https://evil")) for line in
                   body.splitlines())
    assert "{{ 7*7 }}" in body                     # shown as typed, never evaluated


def test_the_short_form_fits_an_sms_and_keeps_the_link_whole():
    subject, body = render_page(incident=incident(title="Payments API down " * 20), user=ALICE,
                                ticket_links=LINKS, ack_url=ACK, urgency="high", short=True)
    text = body.strip()
    assert subject == "" and len(text) <= SHORT_LIMIT
    assert text.startswith("SYN-42 P1 payments-api: Payments API down") and text.endswith(ACK)


def test_a_short_page_with_a_short_title_keeps_the_ticket_keys():
    _, body = render_page(incident=incident(), user=ALICE, ticket_links=LINKS, ack_url=ACK,
                          urgency="high", short=True)
    assert "INC0010001 OPS-12" in body and "Payments API down" in body


def test_a_page_without_links_or_secret_says_how_to_acknowledge():
    _, body = render_page(incident=incident(priority=None, service=None), user=ALICE,
                          ticket_links=[], ack_url=None, urgency="low", short=False)
    assert "syncd ack 42" in body and "Priority: none" in body


def test_the_test_notification_names_the_contact():
    subject, body = render_test(user=ALICE, contact="mail", channel="mailto", short=False)
    assert "Alice Adams" in subject and '"mail"' in body
    _, short = render_test(user=ALICE, contact="phone", channel="twilio", short=True)
    assert len(short.strip()) <= SHORT_LIMIT
