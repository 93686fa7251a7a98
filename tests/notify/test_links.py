"""Acknowledge links: signed, naming the person, expiring on syncd's clock."""

from datetime import timedelta

import pytest

from syncd.notify.links import AckLink, AckLinks, ExpiredAckLink, InvalidAckLink

SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def links():
    return AckLinks(SECRET, "https://syncd.example.com/")


def token_of(url):
    return url.rsplit("/a/", 1)[1]


def test_a_link_reads_back_as_the_incident_person_and_page(links, clock):
    url = links.url_for(incident_id=42, user_id="alice", escalation_id=7, epoch=1, now=clock.now())
    assert url.startswith("https://syncd.example.com/a/")
    assert links.read(token_of(url), now=clock.now()) == AckLink(42, "alice", 7, 1)


def test_a_link_is_short_enough_for_an_sms(links, clock):
    url = links.url_for(incident_id=123456, user_id="alice.adams", escalation_id=9876543, epoch=12,
                        now=clock.now())
    assert len(url) <= 110


def test_an_altered_link_is_refused(links, clock):
    token = token_of(links.url_for(incident_id=42, user_id="alice", escalation_id=7, epoch=1,
                                   now=clock.now()))
    forged = AckLinks(SECRET, "x").token_for(incident_id=42, user_id="mallory",
                                             escalation_id=7, epoch=1, now=clock.now())
    tampered = forged.split(".")[0] + "." + ".".join(token.split(".")[1:])
    with pytest.raises(InvalidAckLink, match="not valid"):
        links.read(tampered, now=clock.now())
    with pytest.raises(InvalidAckLink):
        links.read(token[:-3], now=clock.now())


def test_a_link_made_with_another_secret_is_refused(links, clock):
    other = AckLinks("another-secret-another-secret-xx", "https://syncd.example.com")
    token = other.token_for(incident_id=42, user_id="alice", escalation_id=7, epoch=1, now=clock.now())
    with pytest.raises(InvalidAckLink) as raised:
        links.read(token, now=clock.now())
    assert not isinstance(raised.value, ExpiredAckLink)


def test_a_link_expires_when_syncds_clock_says_so(links, clock):
    token = links.token_for(incident_id=42, user_id="alice", escalation_id=7, epoch=1, now=clock.now())
    clock.advance(timedelta(hours=47, minutes=59).total_seconds())
    assert links.read(token, now=clock.now()).user_id == "alice"
    clock.advance(timedelta(minutes=2).total_seconds())
    with pytest.raises(ExpiredAckLink, match=r"SYN-42 expired: it is 2d1m old and links last 2d"):
        links.read(token, now=clock.now())


def test_a_shorter_lifetime_is_honoured(clock):
    links = AckLinks(SECRET, "https://s", max_age=timedelta(minutes=10))
    token = links.token_for(incident_id=1, user_id="bob", escalation_id=2, epoch=1, now=clock.now())
    clock.advance(11 * 60)
    with pytest.raises(ExpiredAckLink, match="syncd ack 1"):
        links.read(token, now=clock.now())


def test_links_need_a_secret():
    with pytest.raises(ValueError, match="link_secret"):
        AckLinks("", "https://s")
