"""The Connector interface: what the engine may ask of a ticket system.

Connectors know HTTP and the remote API, never the store. They hand the engine remote records in a
plain shape that the (pure) mapping layer turns into canonical incident fields:

* ``RemoteRecord.fields`` maps a remote field name to a plain value: a string, number, bool, None or
  list of strings. Connectors flatten the remote's wrappers (a Jira priority ``{"name": "High"}``
  arrives as ``"High"``, a Jira status as its name). Jira custom fields are keyed by their display
  name, translated through ``/rest/api/2/field``.
* References to people and groups (ServiceNow ``assigned_to``/``assignment_group``, Jira
  ``assignee``) arrive as a dict of identifying attributes, e.g.
  ``{"sys_id": "...", "user_name": "beth.anglin", "email": "beth@example.com", "name": "Beth Anglin"}``
  or ``{"accountId": "...", "name": "beth", "emailAddress": "...", "displayName": "..."}``; an empty
  reference is None. The connector looks these up and caches them.
* Outbound, the mapping produces the same field names with plain values, or a :class:`Ref` for a
  reference, which the connector resolves (e.g. a user name to a sys_id). A Jira ``status`` value
  is a target status name, which the connector reaches through a transition.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence


def same_text(stored: str, written: str) -> bool:
    """Whether a comment body as a ticket system stored it is the text that was written: both
    ServiceNow and Jira may trim it and turn CRLF into LF."""
    def normal(text: str) -> str:
        return text.replace("\r\n", "\n").strip()
    return normal(stored) == normal(written)


class RemoteError(Exception):
    """A remote call failed. ``transient`` tells the engine whether retrying later can help."""

    transient = False

    def __init__(self, connector: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(f"{connector}: {message}")
        self.connector = connector
        self.message = message
        self.status = status
        self.retry_after = retry_after


class TransientRemoteError(RemoteError):
    """429, 502-504, timeouts and connection errors: worth retrying later."""

    transient = True


class PermanentRemoteError(RemoteError):
    """Validation errors and other refusals: retrying the same request will fail the same way."""


class AuthError(PermanentRemoteError):
    """The credentials were refused (401/403)."""


class WebhookRejected(Exception):
    """A webhook request that must be refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Ref:
    """An outbound reference: find the remote record whose ``match`` attribute equals ``value``."""

    match: str
    value: str


@dataclass(frozen=True)
class RemoteComment:
    remote_id: str
    channel: str                   # ServiceNow "work_notes" / "comments"; Jira "comment"
    body: str
    author: str | None
    created_at: datetime
    restricted: bool = False       # Jira comment with a visibility restriction
    own: bool = False              # written by the integration's own user (syncd), not a person


@dataclass(frozen=True)
class RemoteRecord:
    remote_id: str                 # ServiceNow sys_id, Jira issue id
    key: str                       # INC0010001, OPS-12
    url: str                       # where a person looks at it
    version: str                   # sys_mod_count, Jira `updated`
    updated_at: datetime           # aware UTC
    fields: Mapping[str, Any]
    correlation_id: str | None = None
    # Every comment of the record, oldest first, when the read that produced the record carried
    # them all (Jira's ``comment`` field); None when unknown, and the engine asks list_comments.
    comments: tuple[RemoteComment, ...] | None = None


@dataclass(frozen=True)
class SyncCursor:
    """Where a poll resumes: a watermark and the (remote id, version) pairs already seen at it."""

    watermark: datetime | None = None
    seen: frozenset[str] = field(default_factory=frozenset)


class Connector(abc.ABC):
    """One configured ticket system. Implementations must be safe to call from several threads."""

    name: str

    @abc.abstractmethod
    def check_auth(self) -> None:
        """Raise AuthError naming the connector when the credentials are refused."""

    @abc.abstractmethod
    def fetch_changes(self, cursor: SyncCursor, *, limit: int = 500
                      ) -> tuple[list[RemoteRecord], SyncCursor]:
        """Records changed since the cursor (an overlapping window, deduped), and the next cursor."""

    @abc.abstractmethod
    def fetch(self, remote_id: str) -> RemoteRecord | None:
        """One record by remote id (or key), None when it does not exist."""

    def to_local_time(self, remote: datetime) -> datetime:
        """A time read from the remote, on syncd's clock (connectors that measure the remote
        clock's offset correct it here)."""
        return remote

    def fetch_many(self, remote_ids: Sequence[str]) -> list[RemoteRecord]:
        """The records that exist among ``remote_ids`` (webhook hints drained as a batch).
        Connectors that can read several records (and their comments) in one request override this."""
        return [record for record in map(self.fetch, remote_ids) if record is not None]

    # Whether a create's or update's answer is the record exactly as our write left it, with
    # nothing else in between (ServiceNow answers the write with the record it just saved). Then
    # the engine may trust the answer's version instead of confirming it at the next read.
    writes_answer_exact_record: bool = False

    def version_follows(self, previous: str, current: str) -> bool:
        """True when ``current`` is the version right after ``previous`` (or the same one): the
        write we just made was the only change. Only meaningful with sequential versions."""
        return False

    @abc.abstractmethod
    def find_by_correlation(self, correlation_id: str) -> RemoteRecord | None:
        """The record a previous create tagged with this correlation id, if any."""

    @abc.abstractmethod
    def create(self, fields: Mapping[str, Any], *, correlation_id: str) -> RemoteRecord:
        """Create a record carrying the correlation id, so a retry can find it instead of duplicating."""

    @abc.abstractmethod
    def update(self, remote_id: str, fields: Mapping[str, Any]) -> RemoteRecord | None:
        """Write the given fields. Returns the record as it is after the write when the write's
        answer carries it (ServiceNow's PATCH), else None rather than paying another request to
        re-read it (Jira's PUT answers 204): the engine records what it wrote in the link's
        shadow and confirms the version at the next read, so it never needs this answer."""

    @abc.abstractmethod
    def add_comment(self, remote_id: str, body: str, *, channel: str) -> RemoteComment:
        """Append a comment or journal entry."""

    @abc.abstractmethod
    def list_comments(self, remote_id: str) -> list[RemoteComment]:
        """All comments and journal entries of a record, oldest first."""

    @abc.abstractmethod
    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """Verify a webhook delivery and return the remote ids it hints at (WebhookRejected if bad)."""

    def close(self) -> None:
        """Release HTTP sessions."""
