"""Acknowledge links: ``{public_url}/a/{token}``, signed with ``http.link_secret`` and expiring.

The token names the incident, the person the page went to and the round of paging that sent it
(the escalation and its epoch), so whoever follows it acknowledges as that person (invariant 9),
and only while that round runs. It names no notification row, so a page can be rendered, link
and all, before its row is written (one INSERT per page). itsdangerous stamps tokens with ``time.time()``;
syncd's time comes from its injected clock, so the signer here takes the instant from the caller:
links made and read on a movable clock expire when the clock says so, not when the wall clock does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from syncd.config import format_duration

SALT = "ack-link"
DEFAULT_MAX_AGE = timedelta(hours=48)


class InvalidAckLink(Exception):
    """The token was not made by this syncd with this secret, or was altered."""


class ExpiredAckLink(InvalidAckLink):
    """The token is genuine but older than the links' lifetime."""


@dataclass(frozen=True)
class AckLink:
    incident_id: int
    user_id: str
    escalation_id: int
    epoch: int


class _ClockSigner(TimestampSigner):
    """A TimestampSigner whose "now" is the caller's clock, not ``time.time()``."""

    def __init__(self, *args: Any, now: datetime, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return int(self._now.timestamp())


class AckLinks:
    """Makes and reads acknowledge links for one secret and public URL."""

    def __init__(self, secret: str, public_url: str, max_age: timedelta = DEFAULT_MAX_AGE):
        if not secret:
            raise ValueError("acknowledge links need http.link_secret")
        self._secret = secret
        self.public_url = public_url.rstrip("/")
        self.max_age = max_age

    def _serializer(self, now: datetime) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._secret, salt=SALT, signer=_ClockSigner,
                                      signer_kwargs={"now": now})

    def token_for(self, *, incident_id: int, user_id: str, escalation_id: int, epoch: int,
                  now: datetime) -> str:
        # A list, not a dict: the token ends up in SMS, where every character counts.
        return self._serializer(now).dumps([incident_id, user_id, escalation_id, epoch])

    def url_for(self, *, incident_id: int, user_id: str, escalation_id: int, epoch: int,
                now: datetime) -> str:
        token = self.token_for(incident_id=incident_id, user_id=user_id,
                               escalation_id=escalation_id, epoch=epoch, now=now)
        return f"{self.public_url}/a/{token}"

    def read(self, token: str, *, now: datetime) -> AckLink:
        """The link's contents; InvalidAckLink when it was tampered with, ExpiredAckLink when
        it is older than ``max_age`` (or stamped in the future by a clock that went back)."""
        serializer = self._serializer(now)
        try:
            payload = serializer.loads(token, max_age=int(self.max_age.total_seconds()))
        except SignatureExpired as error:
            return self._expired(serializer, error, now)
        except BadSignature:
            raise InvalidAckLink("this acknowledge link is not valid: it was changed or cut "
                                 "short, or was made with another link secret; acknowledge "
                                 "from the console instead") from None
        return _link(payload)

    def _expired(self, serializer: URLSafeTimedSerializer, error: SignatureExpired,
                 now: datetime) -> AckLink:
        link = _link(serializer.load_payload(error.payload) if error.payload else None)
        signed = error.date_signed
        if signed is not None and signed > now:
            raise ExpiredAckLink(f"this acknowledge link for incident SYN-{link.incident_id} is "
                                 f"dated in the future; acknowledge from the console instead")
        age = format_duration(now - signed) if signed is not None else "too long"
        raise ExpiredAckLink(
            f"this acknowledge link for incident SYN-{link.incident_id} expired: it is {age} old "
            f"and links last {format_duration(self.max_age)}; acknowledge from the console or "
            f"with `syncd ack {link.incident_id}`")


def _link(payload: Any) -> AckLink:
    if (not isinstance(payload, list) or len(payload) != 4 or not isinstance(payload[0], int)
            or not isinstance(payload[1], str)
            or not all(isinstance(part, int) for part in payload[2:])):
        raise InvalidAckLink("this acknowledge link is not valid: it does not name an incident, "
                             "a person and a page")
    return AckLink(incident_id=payload[0], user_id=payload[1], escalation_id=payload[2],
                   epoch=payload[3])
