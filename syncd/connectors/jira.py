"""The Jira connector: Jira Cloud and Server/Data Center through the ``jira`` library (REST API v2).

Conventions a Jira admin needs to know:

* **Time zone.** JQL date literals have minute granularity and are read in the *searching user's*
  time zone. Polls query ``updated >= "<watermark - overlap>"`` in UTC, so the integration user's
  profile time zone must be UTC (``check_auth`` warns when it is not). Results are deduplicated by
  (issue id, ``updated``), so the overlap costs re-reads, never duplicate changes.
* **Correlation.** A created issue carries its correlation id as the label ``syncd-<id>``
  (``correlation="label"``, the default; the label is hidden from the ``labels`` field syncd reads
  and kept when syncd writes labels) or as the entity property ``syncd`` =
  ``{"correlationId": "<id>"}`` (``correlation="property"``, sent in the create request itself).
  A create retried after a lost answer looks for the issue first in both modes: by label, or (as
  Jira searches only properties an app has indexed) among the project's issues created since the
  first attempt, read with their property. ``find_by_correlation`` in property mode, which has no
  such time bound (e.g. after a crash), finds the issue only when an app indexes the property.
  Cloud search is eventually consistent, so a lookup right after a create may miss it.
* **Comment channels.** ``"comment"`` is a comment everyone who sees the issue can read;
  ``"comment:<role>"`` restricts it to a project role (e.g. ``"comment:Developers"``) and
  ``"comment:group:<group>"`` to a group. Comments read back carry the same channel names.
* **Fields.** syncd reads the standard fields (summary, description, priority, status, resolution,
  labels, assignee, reporter, issuetype, project, created, updated) plus ``fields_to_read`` (names or
  ids), or every custom field when ``fields_to_read`` is None. Custom fields appear under their
  display name, as listed by ``/rest/api/2/field``. ``status`` is written through a workflow
  transition; ``resolution`` travels with that transition when both are written together.

HTTP requests per call, as measured against the simulator (the server info, the field list and
``/myself`` are read once per process): create = one POST, in both correlation modes, and not
re-read (see ``create``); a create that names a status reads the issue once per process (and
hour) to learn the status issues start in, and adds a POST transition (plus one ``GET
transitions`` uncached) when the target is another status; update of plain fields = one
PUT (1), one more GET when it writes ``labels``; status change = read + POST transition (2), plus
one ``GET transitions`` the first time a (project, issue type, from-status) is met. ``update`` returns None: the engine
does not need the issue read back (see Connector.update). Issues read by polls, ``fetch`` and
``fetch_many`` carry their comments (the ``comment`` field), so the engine needs no
``list_comments`` call for them; ``fetch_many`` reads up to 50 issues with one search. A comment
is one POST; when it is retried, the retry first reads the issue's comments newest first (one GET
per ``page_size`` comments posted since the first attempt) and posts again only when none of
them is ours (author ``myself``) with the same text. Comments carry ``own`` (authored by
``myself``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence, TypeVar

import requests
from jira import JIRA, JIRAError
from jira.resilientsession import ResilientSession

from syncd.clock import Clock, SystemClock
from syncd.connectors.base import (OWN_COMMENT_TOLERANCE, Connector, PermanentRemoteError, Ref,
                                   RemoteComment, RemoteRecord, SyncCursor, WebhookRejected,
                                   same_text)
from syncd.connectors.http import (RetryPolicy, call_remote, instrumented_session,
                                   retry_finds_earlier)

log = logging.getLogger(__name__)

T = TypeVar("T")

CORRELATION_LABEL_PREFIX = "syncd-"
CORRELATION_PROPERTY = "syncd"
COMMENT_CHANNEL = "comment"
STANDARD_FIELDS = ("summary", "description", "priority", "status", "resolution", "labels",
                   "assignee", "reporter", "issuetype", "project", "created", "updated")
# Read with every issue so the engine gets its comments without a list_comments call each.
COMMENT_FIELD = "comment"
JQL_TIME_FORMAT = "%Y/%m/%d %H:%M"
# Issue ids per fetch_many search: Jira Cloud makes at most 50 issues of a search read-after-write
# consistent (``reconcileIssues``), and 50 ids keep the JQL short.
FETCH_MANY_BATCH = 50
DEPLOYMENTS = ("auto", "cloud", "server")
CORRELATIONS = ("label", "property")
UTC_ZONES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Universal", "Zulu", "Etc/Zulu"})
# How long the status a new issue starts in (per project and issue type) is trusted without a
# read: workflows change rarely, and a create whose target is that status then needs no read.
INITIAL_STATUS_CACHE_SECONDS = 3600.0

_PROJECT_KEY = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_CORRELATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*\Z")
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)
_PERSON_KEYS = ("accountId", "name", "emailAddress", "displayName")
# Outbound system fields whose value Jira wants as {"name": ...}.
_NAMED_FIELDS = frozenset({"priority", "resolution", "issuetype", "security"})
_NAMED_LIST_FIELDS = frozenset({"components", "fixVersions", "versions"})
_PERSON_FIELDS = frozenset({"assignee", "reporter"})


def parse_jira_time(value: str) -> datetime:
    """``2026-01-01T10:00:00.000+0000`` (Jira's form, also with ``+00:00``) as aware UTC."""
    for form in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(value, form).astimezone(timezone.utc)
        except ValueError:
            continue
    raise ValueError(f"not a Jira timestamp: {value!r}")


def jql_string(value: str) -> str:
    """A JQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flatten_value(value: Any) -> Any:
    """A Jira field value in the plain shape of syncd.connectors.base: wrappers reduced to names,
    people to a dict of identifying attributes."""
    if isinstance(value, list):
        return [flatten_value(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "accountId" in value or "emailAddress" in value or ("displayName" in value and "name" in value):
        return {key: value.get(key) for key in _PERSON_KEYS}
    for key in ("value", "key", "name"):      # option, project (key, not name), priority, status...
        if key in value:
            return value[key]
    return value


def _author_id(author: Any) -> str | None:
    """A comment author as ``myself`` names the integration user: accountId, else name."""
    if not isinstance(author, Mapping):
        return None
    found = author.get("accountId") or author.get("name")
    return str(found) if found else None


def _oldest_first(comments: Iterable[RemoteComment]) -> list[RemoteComment]:
    return sorted(comments, key=lambda c: (c.created_at, int(c.remote_id)
                                           if c.remote_id.isdigit() else 0))


def _seen_entry(remote_id: str, version: str) -> str:
    return f"{remote_id}@{version}"


def _latest_versions(records: Sequence[RemoteRecord]) -> list[RemoteRecord]:
    """Each issue once, as last read (an issue edited mid-poll is read twice), oldest first."""
    latest: dict[str, RemoteRecord] = {}
    for record in records:
        latest.pop(record.remote_id, None)
        latest[record.remote_id] = record
    return list(latest.values())


def _property_correlation(raw: Mapping[str, Any]) -> str | None:
    """The correlation id in a raw issue's ``syncd`` entity property, if it was read and set."""
    prop = (raw.get("properties") or {}).get(CORRELATION_PROPERTY)
    found = prop.get("correlationId") if isinstance(prop, dict) else None
    return found if isinstance(found, str) else None


class _DelegatingSession(requests.Session):
    """Sends every request through another session (``through``), with this session's auth."""

    through: requests.Session

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
                ) -> requests.Response:
        kwargs.setdefault("auth", self.auth)
        return self.through.request(method, url, *args, **kwargs)


class _JiraSession(ResilientSession, _DelegatingSession):
    """The jira library's session (it turns error answers into JIRAError) without its own retries
    (``max_retries=0``), whose requests go through syncd's instrumented session to be counted."""


@dataclass(frozen=True)
class _Field:
    id: str
    name: str
    custom: bool
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class _Transition:
    id: str
    name: str
    to: str


def _leading_to(transitions: Iterable[_Transition], status: str) -> _Transition | None:
    return next((t for t in transitions if t.to.casefold() == status.casefold()), None)


class JiraConnector(Connector):
    """One Jira project (or JQL selection) on Jira Cloud or Server/Data Center."""

    def __init__(self, name: str, *, url: str, username: str | None = None, token: str,
                 project: str, issue_type: str = "Incident", jql: str | None = None,
                 deployment: str = "auto", page_size: int = 100,
                 fields_to_read: Sequence[str] | None = None,
                 overlap: timedelta = timedelta(minutes=2), correlation: str = "label",
                 policy: RetryPolicy = RetryPolicy(), clock: Clock = SystemClock(),
                 timeout: float = 30, verify_tls: bool = True, webhook_secret: str | None = None):
        def refuse(key: str, problem: str) -> ValueError:
            return ValueError(f"connector {name!r}: {key}: {problem}")

        if not url.startswith(("http://", "https://")):
            raise refuse("url", f"must start with http:// or https://, got {url!r}")
        if not token:
            raise refuse("token", "must not be empty")
        if not _PROJECT_KEY.match(project):
            raise refuse("project", f"must be a Jira project key such as OPS, got {project!r}")
        if jql is not None and (not jql.strip() or _ORDER_BY.search(jql)):
            raise refuse("jql", "must be a non-empty filter without ORDER BY (syncd orders by "
                                f"updated itself), got {jql!r}")
        if deployment not in DEPLOYMENTS:
            raise refuse("deployment", f"must be one of {', '.join(DEPLOYMENTS)}, got {deployment!r}")
        if correlation not in CORRELATIONS:
            raise refuse("correlation", f"must be one of {', '.join(CORRELATIONS)}, "
                                        f"got {correlation!r}")
        if not 1 <= page_size <= 1000:
            raise refuse("page_size", f"must be between 1 and 1000, got {page_size}")
        if overlap < timedelta(0):
            raise refuse("overlap", f"must not be negative, got {overlap}")

        self.name = name
        self.server_url = url.rstrip("/")
        self.project = project
        self.issue_type = issue_type
        self.base_jql = jql or f"project = {jql_string(project)}"
        self.page_size = page_size
        self.fields_to_read = tuple(fields_to_read) if fields_to_read is not None else None
        self.overlap = overlap
        self.correlation = correlation
        self.policy = policy
        self.clock = clock
        self.webhook_secret = webhook_secret

        self._client = JIRA(server=self.server_url, options={"verify": verify_tls},
                            basic_auth=(username, token) if username else None,
                            token_auth=None if username else token,
                            get_server_info=False, max_retries=0, timeout=timeout)
        self._http = instrumented_session(name, timeout=timeout, verify=verify_tls, clock=clock)
        self._adopt_session(timeout)

        self._setup_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cloud: bool | None = None
        if deployment != "auto":
            self._set_deployment(deployment == "cloud")
        self._fields: dict[str, _Field] | None = None          # by id
        self._transitions: dict[tuple[str, str, str], list[_Transition]] = {}
        self._users: dict[Ref, dict[str, str]] = {}
        self._me: str | None = None             # the integration user, see _own_author
        # (project, issue type) -> (read at, on the clock's monotonic time; the status it starts in)
        self._initial_status: dict[tuple[str, str], tuple[float, str]] = {}

    @property
    def clock_offset(self) -> timedelta:
        return self._http.remote_clock.offset

    def _adopt_session(self, timeout: float) -> None:
        """Give the library a session that keeps its error handling but sends through ours.

        The library builds its ResilientSession itself and offers no parameter for another one;
        its headers, auth and TLS setting carry over to the replacement."""
        built = self._client._session
        session = _JiraSession(timeout=timeout, max_retries=0)
        session.through = self._http
        session.headers = built.headers
        session.auth = built.auth
        session.verify = built.verify
        built.close()
        self._client._session = session

    # -- plumbing ----------------------------------------------------------------------------
    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        return call_remote(self.name, operation, fn, policy=self.policy, clock=self.clock)

    def _set_deployment(self, cloud: bool) -> None:
        """Tell the library too: it picks the search endpoint and user shapes by deploymentType."""
        self._client.deploymentType = "Cloud" if cloud else "Server"
        self._cloud = cloud

    @property
    def is_cloud(self) -> bool:
        """Cloud or Server/DC: configured, or read once from serverInfo's deploymentType (the
        library would read it when constructed; here it happens on first use, under the policy)."""
        if self._cloud is None:
            with self._setup_lock:
                if self._cloud is None:
                    info = self._call("server_info", self._client.server_info)
                    if not isinstance(info, dict) or "versionNumbers" not in info:
                        raise PermanentRemoteError(
                            self.name, f"{self.server_url}/rest/api/2/serverInfo did not describe "
                                       f"a Jira server (no versionNumbers): {str(info)[:200]}")
                    self._client._version = tuple(info["versionNumbers"])
                    self._set_deployment(info.get("deploymentType") == "Cloud")
        assert self._cloud is not None
        return self._cloud

    def _field_catalogue(self, *, refresh: bool = False) -> dict[str, _Field]:
        """Every field of the instance by id, from ``/field``, read once (again on ``refresh``)."""
        with self._setup_lock:
            if self._fields is None or refresh:
                raw = self._call("fields", self._client.fields)
                self._fields = {f["id"]: _Field(f["id"], f.get("name") or f["id"],
                                                bool(f.get("custom")), f.get("schema") or {})
                                for f in raw}
                # Seed the library's own cache (JQL clause name -> id), which its search would
                # otherwise fill with a second GET /field.
                self._client._fields_cache_value = {
                    clause: f["id"] for f in raw for clause in f.get("clauseNames") or ()}
            return self._fields

    def _field_id(self, name: str) -> _Field:
        """The field a mapping name means: a field id, or a custom field's display name."""
        for refresh in (False, True):
            catalogue = self._field_catalogue(refresh=refresh)
            if name in catalogue:
                return catalogue[name]
            by_name = [f for f in catalogue.values() if f.custom and f.name == name]
            if len(by_name) == 1:
                return by_name[0]
            if len(by_name) > 1:
                raise PermanentRemoteError(
                    self.name, f"field {name!r} is ambiguous: custom fields "
                               f"{', '.join(f.id for f in by_name)} share that name; use the id")
        raise PermanentRemoteError(self.name, f"field {name!r} is not a field of {self.server_url} "
                                              "(neither a field id nor a custom field's name)")

    def _fields_param(self) -> list[str]:
        catalogue = self._field_catalogue()
        if self.fields_to_read is None:
            extra = [f.id for f in catalogue.values() if f.custom]
        else:
            extra = [self._field_id(name).id for name in self.fields_to_read]
        return list(dict.fromkeys([*STANDARD_FIELDS, *extra, COMMENT_FIELD]))

    def _properties_param(self) -> str | None:
        return CORRELATION_PROPERTY if self.correlation == "property" else None

    # -- reading -----------------------------------------------------------------------------
    def _record(self, raw: Mapping[str, Any]) -> RemoteRecord:
        """A search or GET answer's issue as a RemoteRecord (see the module docstring)."""
        key = raw.get("key") or raw.get("id")
        fields = dict(raw.get("fields") or {})
        comments = self._embedded_comments(fields.pop(COMMENT_FIELD, None))
        version = fields.get("updated")
        if not isinstance(version, str):
            raise PermanentRemoteError(self.name, f"issue {key} came without its 'updated' field")
        try:
            updated_at = parse_jira_time(version)
        except ValueError as exc:
            raise PermanentRemoteError(self.name, f"issue {key}: field 'updated': {exc}") from None
        flat, correlation_id = self._plain_fields(fields, raw)
        return RemoteRecord(remote_id=str(raw["id"]), key=str(raw.get("key")),
                            url=f"{self.server_url}/browse/{raw.get('key')}", version=version,
                            updated_at=updated_at, fields=flat, correlation_id=correlation_id,
                            comments=comments)

    def _plain_fields(self, fields: Mapping[str, Any], raw: Mapping[str, Any]
                      ) -> tuple[dict[str, Any], str | None]:
        """Raw issue fields in the plain shape, and the correlation id they (or ``raw``'s
        property) carry, hidden from ``labels``."""
        catalogue = self._field_catalogue()
        flat: dict[str, Any] = {}
        for field_id, value in fields.items():
            known = catalogue.get(field_id)
            flat[known.name if known and known.custom else field_id] = flatten_value(value)
        for person in _PERSON_FIELDS & flat.keys():
            if not isinstance(flat[person], dict):
                flat[person] = None
        correlation_id = None
        if self.correlation == "label":
            labels = flat.get("labels") or []
            tags = [label for label in labels if label.startswith(CORRELATION_LABEL_PREFIX)]
            if tags:
                correlation_id = tags[0][len(CORRELATION_LABEL_PREFIX):]
                flat["labels"] = [label for label in labels if label not in tags]
        else:
            correlation_id = _property_correlation(raw)
        return flat, correlation_id

    def _embedded_comments(self, page: Any) -> tuple[RemoteComment, ...] | None:
        """The comments an issue read carried, when it carried them all (Jira caps the embedded
        list; a partial one is None and the engine reads them with list_comments)."""
        if not isinstance(page, Mapping) or not isinstance(page.get("comments"), list):
            return None
        listed = page["comments"]
        if int(page.get("total", len(listed))) > len(listed):
            return None
        me = self._own_author() if listed else None
        return tuple(_oldest_first(self._comment(raw, me) for raw in listed))

    def _search_page(self, jql: str, fields: list[str], position: str | int | None,
                     reconcile: Sequence[int] = ()) -> tuple[list[dict[str, Any]], str | int | None]:
        """One page of raw issues and where the next page starts (None: last page); not retried.

        Cloud: /search/jql with nextPageToken; Server/DC: the old /search with startAt (it answers
        410 on Cloud). ``fields`` are always explicit: /search/jql returns only ids otherwise.
        ``reconcile``: issue ids (at most 50) Cloud must show as they are now, not as its
        eventually consistent index last saw them; Server/DC search is consistent already."""
        properties = self._properties_param()
        if self.is_cloud:
            answer = self._client.enhanced_search_issues(
                jql, nextPageToken=position or None, maxResults=self.page_size,
                fields=list(fields), properties=properties, json_result=True,
                reconcileIssues=list(reconcile) or None)
            issues = answer.get("issues") or []
            token = answer.get("nextPageToken")
            return issues, None if answer.get("isLast") or not token else token
        start = int(position or 0)
        answer = self._client.search_issues(
            jql, startAt=start, maxResults=self.page_size, fields=list(fields),
            properties=properties, json_result=True)
        issues = answer.get("issues") or []
        start += len(issues)
        return issues, None if not issues or start >= int(answer.get("total") or 0) else start

    def _search_pages(self, jql: str, *, operation: str = "search", reconcile: Sequence[int] = ()
                      ) -> Iterable[list[dict[str, Any]]]:
        """Raw issues matching ``jql``, a page at a time, each page one retried operation."""
        fields = self._fields_param()
        position: str | int | None = None
        while True:
            issues, position = self._call(operation, lambda position=position: self._search_page(
                jql, fields, position, reconcile))
            yield issues
            if position is None:
                return

    def fetch_changes(self, cursor: SyncCursor, *, limit: int = 500
                      ) -> tuple[list[RemoteRecord], SyncCursor]:
        """Issues changed since the cursor's watermark minus ``overlap``, oldest first.

        Pages are read in a sliding window, not by offset: each page is the first page of
        ``updated >= "<minute of the newest issue read so far>"``, and issues already read in this
        poll (same id and ``updated``) are dropped. An issue edited mid-poll moves to the end of
        the order and is read there, and none can slip across a page boundary, as it can with
        ``startAt`` (Server/DC) and with Cloud's ``nextPageToken`` (an offset into a query that
        is run again; Atlassian promises no snapshot). When a whole page falls in one minute the
        window cannot advance, so the next query also leaves out the issues already read at that
        minute's versions (``NOT (id in (...) AND updated < <next minute>)``)."""
        since = cursor.watermark - self.overlap if cursor.watermark is not None else None
        window = since.astimezone(timezone.utc).replace(second=0, microsecond=0) if since else None
        fields = self._fields_param()
        read: dict[str, RemoteRecord] = {}          # id@updated -> issue, in reading order
        records: list[RemoteRecord] = []
        stalled = False
        while len(records) < limit:
            jql = self._window_jql(window, read.values() if stalled else ())
            page, position = self._call("search", lambda jql=jql: self._search_page(
                jql, fields, None))
            known = len(read)
            for record in map(self._record, page):
                entry = _seen_entry(record.remote_id, record.version)
                if entry in read:
                    continue
                read[entry] = record
                if entry not in cursor.seen:
                    records.append(record)
            if position is None or not read:
                break
            if stalled and len(read) == known:
                log.warning("%s: the search ignored the issues left out of it (%s); this poll "
                            "stops here and the next one resumes from its watermark", self.name,
                            jql, extra={"connector": self.name})
                break
            newest = max(r.updated_at for r in read.values()).replace(second=0, microsecond=0)
            stalled = newest == window
            window = newest
        records = _latest_versions(records[:limit])
        return records, self._next_cursor(cursor, records)

    def _window_jql(self, window: datetime | None, read: Iterable[RemoteRecord]) -> str:
        """The poll's query from minute ``window`` on, leaving out the ``read`` issues whose
        version lies within that minute (how a poll moves past a minute fuller than a page)."""
        jql = f"({self.base_jql})"
        if window is not None:
            jql += f" AND updated >= {jql_string(window.strftime(JQL_TIME_FORMAT))}"
            within = sorted({r.remote_id for r in read
                             if r.updated_at.replace(second=0, microsecond=0) == window}, key=int)
            if within:
                next_minute = (window + timedelta(minutes=1)).strftime(JQL_TIME_FORMAT)
                jql += (f" AND NOT (id in ({', '.join(within)}) AND updated < "
                        f"{jql_string(next_minute)})")
        return jql + " ORDER BY updated ASC, key ASC"

    def _next_cursor(self, cursor: SyncCursor, records: list[RemoteRecord]) -> SyncCursor:
        """Advance the watermark to the newest record and remember every (id, version) the next,
        overlapping query can return again (those at or after its minute-rounded start)."""
        if not records:
            return cursor
        newest = max(r.updated_at for r in records)
        watermark = max(newest, cursor.watermark) if cursor.watermark else newest
        window_start = (watermark - self.overlap).replace(second=0, microsecond=0)
        seen = {_seen_entry(r.remote_id, r.version) for r in records}
        for entry in cursor.seen:
            version = entry.rpartition("@")[2]
            try:
                if parse_jira_time(version) >= window_start:
                    seen.add(entry)
            except ValueError:
                continue
        return SyncCursor(watermark=watermark, seen=frozenset(seen))

    def _read_issue(self, remote_id: str, fields: Sequence[str]) -> dict[str, Any] | None:
        """GET one issue's raw JSON (None on 404); not retried (runs inside call_remote)."""
        try:
            issue = self._client.issue(remote_id, fields=",".join(fields),
                                       properties=self._properties_param())
        except JIRAError as exc:
            if exc.status_code == 404:
                return None
            raise
        return issue.raw

    def fetch(self, remote_id: str) -> RemoteRecord | None:
        fields = self._fields_param()
        raw = self._call("fetch", lambda: self._read_issue(remote_id, fields))
        return self._record(raw) if raw is not None else None

    def fetch_many(self, remote_ids: Sequence[str]) -> list[RemoteRecord]:
        """The issues among ``remote_ids`` that exist, in the order asked, with their comments:
        one search ``id in (...)`` per FETCH_MANY_BATCH ids, where fetch costs a GET each. A
        deleted id is simply not found (``key in`` would fail the whole search with 400 for one
        deleted key, so keys, which the engine never hints, are read one by one)."""
        wanted = list(dict.fromkeys(remote_ids))
        ids = [r for r in wanted if r.isdigit()]
        found: dict[str, RemoteRecord] = {}
        for start in range(0, len(ids), FETCH_MANY_BATCH):
            batch = ids[start:start + FETCH_MANY_BATCH]
            jql = f"id in ({', '.join(batch)}) ORDER BY key ASC"
            for page in self._search_pages(jql, operation="fetch",
                                           reconcile=[int(i) for i in batch]):
                found.update((record.remote_id, record) for record in map(self._record, page))
        for key in (r for r in wanted if not r.isdigit()):
            record = self.fetch(key)
            if record is not None:
                found[key] = record
        return list({found[r].remote_id: found[r] for r in wanted if r in found}.values())

    def _fetch_existing(self, remote_id: str) -> RemoteRecord:
        record = self.fetch(remote_id)
        if record is None:
            raise PermanentRemoteError(self.name, f"issue {remote_id} does not exist (any more)")
        return record

    def find_by_correlation(self, correlation_id: str) -> RemoteRecord | None:
        self._check_correlation_id(correlation_id)
        found = [self._record(raw) for page in self._search_pages(self._correlation_jql(correlation_id))
                 for raw in page]
        if len(found) > 1:
            log.warning("%s: %d issues carry correlation id %s (%s); using the oldest", self.name,
                        len(found), correlation_id, ", ".join(r.key for r in found),
                        extra={"connector": self.name})
        return found[0] if found else None

    def _correlation_jql(self, correlation_id: str) -> str:
        if self.correlation == "label":
            clause = f"labels = {jql_string(CORRELATION_LABEL_PREFIX + correlation_id)}"
        else:
            clause = (f"issue.property[{CORRELATION_PROPERTY}].correlationId = "
                      f"{jql_string(correlation_id)}")
        return f"project = {jql_string(self.project)} AND {clause} ORDER BY created ASC"

    def _check_correlation_id(self, correlation_id: str) -> None:
        if not _CORRELATION_ID.match(correlation_id or ""):
            raise ValueError(f"connector {self.name!r}: correlation id {correlation_id!r} must be "
                             "letters, digits, '_', '.', ':' or '-' (it becomes a Jira label)")

    # -- writing -----------------------------------------------------------------------------
    def _user(self, field: str, value: Any) -> dict[str, str] | None:
        """The JSON a user field takes: {"accountId"} on Cloud, {"name"} on Server/DC."""
        if value is None:
            return None
        if not isinstance(value, Ref):
            raise PermanentRemoteError(self.name, f"field {field!r} takes a Ref to a user "
                                                  f"(or None), got {value!r}")
        native = "accountId" if self.is_cloud else "name"
        if value.match in (("accountId",) if self.is_cloud else ("name", "key")):
            return {value.match: value.value}
        with self._cache_lock:
            cached = self._users.get(value)
        if cached is not None:
            return cached

        def search() -> list[dict[str, Any]]:
            if self.is_cloud:
                users = self._client.search_users(query=value.value, maxResults=50)
            else:
                users = self._client.search_users(user=value.value, maxResults=50)
            return [user.raw for user in users]

        matches = [u for u in self._call("search_users", search) if u.get(value.match) == value.value]
        if len(matches) != 1:
            raise PermanentRemoteError(
                self.name, f"field {field!r}: {'no' if not matches else len(matches)} Jira users "
                           f"with {value.match} = {value.value!r}")
        payload = {native: matches[0][native]}
        with self._cache_lock:
            self._users[value] = payload
        return payload

    def _encode(self, name: str, value: Any) -> tuple[str, Any]:
        """A mapping field and plain value as the (field id, JSON value) Jira's edit takes."""
        if name in _PERSON_FIELDS:
            return name, self._user(name, value)
        if name in _NAMED_FIELDS:
            return name, None if value is None else {"name": value}
        if name in _NAMED_LIST_FIELDS:
            return name, [{"name": v} for v in value or []]
        if name in ("summary", "description", "labels", "environment", "duedate"):
            return name, value
        field = self._field_id(name)
        schema_type = field.schema.get("type")
        items = field.schema.get("items")
        if value is None:
            return field.id, None
        if schema_type == "option":
            return field.id, {"value": value}
        if schema_type == "user":
            return field.id, self._user(name, value)
        if schema_type == "array" and items == "option":
            return field.id, [{"value": v} for v in value]
        if schema_type == "array" and items == "user":
            return field.id, [self._user(name, v) for v in value]
        if schema_type == "array" and items in ("version", "component"):
            return field.id, [{"name": v} for v in value]
        if schema_type in ("priority", "resolution", "issuetype", "securitylevel", "version"):
            return field.id, {"name": value}
        return field.id, value

    def _encode_fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._encode(name, value) for name, value in fields.items())

    def _url(self, path: str) -> str:
        return f"{self.server_url}/rest/api/2/{path}"

    def create(self, fields: Mapping[str, Any], *, correlation_id: str) -> RemoteRecord:
        """POST an issue carrying its correlation id (label, or entity property sent in the same
        request, so no issue is ever left untagged). A retried attempt first looks for the issue
        an earlier attempt may have created before its answer was lost; a first attempt looks
        up nothing.

        The answer (id, key, self) is not followed by a read: the record returned holds in
        ``fields`` only what was written (plus ``project``, ``issuetype`` and the status it was
        moved to), ``version`` None and ``updated_at`` the local time on the remote's clock. A
        target ``status`` is reached by a transition when the issue starts elsewhere; the status
        issues start in is read once per (project, issue type) and trusted for an hour."""
        self._check_correlation_id(correlation_id)
        plain = dict(fields)
        target_status = plain.pop("status", None)
        resolution = plain.pop("resolution", None) if target_status is not None else None
        payload = {"project": {"key": self.project}, "issuetype": {"name": self.issue_type},
                   **self._encode_fields(plain)}
        body: dict[str, Any] = {"fields": payload}
        if self.correlation == "label":
            payload["labels"] = [*(payload.get("labels") or []),
                                 CORRELATION_LABEL_PREFIX + correlation_id]
        else:
            body["properties"] = [{"key": CORRELATION_PROPERTY,
                                   "value": {"correlationId": correlation_id}}]
        created_after = self.clock.now() - self.overlap

        def create_once() -> tuple[str, str]:
            answer = self._client._session.post(self._url("issue"), data=json.dumps(body)).json()
            return str(answer["id"]), str(answer.get("key") or answer["id"])

        remote_id, key = self._call("create", retry_finds_earlier(
            create_once, lambda: self._created_by_earlier_attempt(correlation_id, created_after)))
        flat, _ = self._plain_fields(payload, {})
        record = RemoteRecord(remote_id=remote_id, key=key, url=f"{self.server_url}/browse/{key}",
                              version=None, updated_at=self.to_remote_time(self.clock.now()),
                              fields=flat, correlation_id=correlation_id)
        if target_status is None:
            return record
        starts_in = self._starts_in()
        if starts_in is None:
            read = self._fetch_existing(remote_id)
            starts_in = str(read.fields.get("status"))
            with self._cache_lock:
                self._initial_status[(self.project, self.issue_type)] = (
                    self.clock.monotonic(), starts_in)
        record = replace(record, fields={**record.fields, "status": starts_in})
        if starts_in.casefold() != str(target_status).casefold():
            self._transition(remote_id, target_status, resolution, known=record)
            moved = {"status": target_status}
            if resolution is not None:
                moved["resolution"] = resolution
            record = replace(record, fields={**record.fields, **moved})
        return record

    def _starts_in(self) -> str | None:
        """The status new issues of the configured project and type start in, if read lately."""
        with self._cache_lock:
            cached = self._initial_status.get((self.project, self.issue_type))
        if cached is None or self.clock.monotonic() - cached[0] >= INITIAL_STATUS_CACHE_SECONDS:
            return None
        return cached[1]

    def _created_by_earlier_attempt(self, correlation_id: str, created_after: datetime
                                    ) -> tuple[str, str] | None:
        """The id and key of the issue a lost-answer create made, if search shows it; not retried.

        Label mode searches the label. Property mode cannot search the property unless an app
        indexes it (Jira searches indexed properties only), so it reads the project's issues
        created since the first attempt (less ``overlap`` for clock skew) with their ``syncd``
        property and compares it here. Cloud search is eventually consistent: an issue created
        a moment ago can still be missing from both searches."""
        if self.correlation == "label":
            jql = self._correlation_jql(correlation_id)
        else:
            since = self.to_remote_time(created_after).astimezone(timezone.utc).strftime(
                JQL_TIME_FORMAT)
            jql = (f"project = {jql_string(self.project)} AND created >= {jql_string(since)} "
                   "ORDER BY created ASC")
        fields = ["created"]
        position: str | int | None = None
        while True:
            issues, position = self._search_page(jql, fields, position)
            for raw in issues:
                if self.correlation == "label" or _property_correlation(raw) == correlation_id:
                    return str(raw["id"]), str(raw.get("key") or raw["id"])
            if position is None:
                return None

    def update(self, remote_id: str, fields: Mapping[str, Any]) -> None:
        """PUT the plain fields and move the status through its transition. The issue is not read
        back (Jira's PUT answers 204; see Connector.update)."""
        plain = dict(fields)
        target_status = plain.pop("status", None)
        if "status" in fields and target_status is None:
            raise PermanentRemoteError(self.name, f"issue {remote_id}: status cannot be empty")
        resolution = plain.pop("resolution", None) if target_status is not None else None
        if plain:
            payload = self._encode_fields(plain)

            def put() -> None:
                edit = dict(payload)
                if self.correlation == "label" and "labels" in edit:
                    current = self._read_issue(remote_id, ["labels"]) or {}
                    kept = [label for label in (current.get("fields") or {}).get("labels") or []
                            if label.startswith(CORRELATION_LABEL_PREFIX)]
                    edit["labels"] = [*(edit["labels"] or []), *kept]
                self._client._session.put(self._url(f"issue/{remote_id}"),
                                          data=json.dumps({"fields": edit}))

            self._call("update", put)
        if target_status is not None:
            self._transition(remote_id, target_status, resolution)

    def _transitions_from(self, remote_id: str, state: tuple[str, str, str]
                          ) -> tuple[list[_Transition], bool]:
        """The transitions out of a (project, issue type, status), cached; and whether cached."""
        with self._cache_lock:
            cached = self._transitions.get(state)
        if cached is not None:
            return cached, True
        found = [_Transition(str(t["id"]), t.get("name", ""), (t.get("to") or {}).get("name", ""))
                 for t in self._client.transitions(remote_id)]
        with self._cache_lock:
            self._transitions[state] = found
        return found, False

    def _transition(self, remote_id: str, target: str, resolution: Any,
                    known: RemoteRecord | None = None) -> None:
        """Move the issue to ``target`` through the workflow transition that leads there.

        Runs as one retried operation that reads the current status first (``known`` spares the
        read on the first attempt), so a retry after a lost answer sees the move already made."""
        use_known = known is not None

        def move() -> None:
            nonlocal use_known
            if use_known and known is not None:
                fields = known.fields
            else:
                raw = self._read_issue(remote_id, ["status", "issuetype", "project"])
                if raw is None:
                    raise PermanentRemoteError(self.name, f"issue {remote_id} does not exist")
                fields = {k: flatten_value(v) for k, v in (raw.get("fields") or {}).items()}
            use_known = False
            current = fields.get("status")
            if isinstance(current, str) and current.casefold() == target.casefold():
                return
            state = (str(fields.get("project")), str(fields.get("issuetype")), str(current))
            transitions, cached = self._transitions_from(remote_id, state)
            chosen = _leading_to(transitions, target)
            if chosen is None and cached:          # the workflow may have changed: look again
                with self._cache_lock:
                    self._transitions.pop(state, None)
                transitions, _ = self._transitions_from(remote_id, state)
                chosen = _leading_to(transitions, target)
            if chosen is None:
                reachable = ", ".join(sorted({t.to for t in transitions})) or "none"
                raise PermanentRemoteError(
                    self.name, f"issue {remote_id}: no transition from status {current!r} to "
                               f"{target!r}; reachable from there: {reachable}")
            transition_fields = {} if resolution is None else {"resolution": {"name": resolution}}
            try:
                self._client.transition_issue(remote_id, chosen.id, fields=transition_fields)
            except JIRAError:
                with self._cache_lock:             # a stale cached transition must not stick
                    self._transitions.pop(state, None)
                raise

        self._call("transition", move)

    # -- comments ----------------------------------------------------------------------------
    def _visibility(self, channel: str) -> dict[str, str] | None:
        if channel == COMMENT_CHANNEL:
            return None
        prefix, _, audience = channel.partition(":")
        if prefix == COMMENT_CHANNEL and audience:
            kind, _, group = audience.partition(":")
            if kind == "group" and group:
                return {"type": "group", "value": group}
            return {"type": "role", "value": audience}
        raise PermanentRemoteError(self.name, f"comment channel {channel!r} is not one of 'comment', "
                                              "'comment:<role>', 'comment:group:<group>'")

    def _comment(self, raw: Mapping[str, Any], me: str | None) -> RemoteComment:
        """A comment's JSON as a RemoteComment; ``me`` is the integration user (_own_author)."""
        visibility = raw.get("visibility") or None
        channel = COMMENT_CHANNEL
        if visibility:
            audience = visibility.get("value", "")
            channel += f":group:{audience}" if visibility.get("type") == "group" else f":{audience}"
        author = raw.get("author") or {}
        try:
            created_at = parse_jira_time(raw.get("created", ""))
        except ValueError as exc:
            raise PermanentRemoteError(self.name, f"comment {raw.get('id')}: {exc}") from None
        author_id = _author_id(author)
        return RemoteComment(remote_id=str(raw["id"]), channel=channel, body=raw.get("body") or "",
                             author=author.get("displayName") or author_id,
                             created_at=created_at, restricted=bool(visibility),
                             own=me is not None and author_id == me)

    def add_comment(self, remote_id: str, body: str, *, channel: str = COMMENT_CHANNEL
                    ) -> RemoteComment:
        """POST a comment. A retried attempt first looks for the comment an earlier attempt may
        have posted before its answer was lost (a timeout, a reset, a 500 after Jira stored it):
        ours, on the channel, saying ``body``, posted since this call began."""
        visibility = self._visibility(channel)
        since = self.clock.now()

        def post_once() -> RemoteComment:
            raw = self._client.add_comment(remote_id, body, visibility=visibility).raw
            return self._comment(raw, _author_id(raw.get("author")))   # ours: we just posted it

        return self._call("add_comment", retry_finds_earlier(
            post_once, lambda: self._own_comment(remote_id, body, since=since, exclude=(),
                                                 channel=channel)))

    def find_own_comment(self, remote_id: str, body: str, *, since: datetime,
                         exclude: Collection[str], channel: str | None = None
                         ) -> RemoteComment | None:
        if channel is not None:
            self._visibility(channel)
        return self._call("find_own_comment", lambda: self._own_comment(
            remote_id, body, since=since, exclude=exclude, channel=channel))

    def _own_comment(self, remote_id: str, body: str, *, since: datetime,
                     exclude: Collection[str], channel: str | None) -> RemoteComment | None:
        """See find_own_comment: reads the comments newest first, a page at a time, and stops at
        the first one older than ``since`` (on the remote's clock, less the tolerance)."""
        me = self._own_author()
        if me is None:
            return None
        oldest = self.to_remote_time(since) - OWN_COMMENT_TOLERANCE
        start = 0
        while True:
            page = [self._comment(c.raw, me) for c in self._client.comments(
                remote_id, start_at=start, max_results=self.page_size, order_by="-created")]
            for comment in page:
                if comment.created_at < oldest:
                    return None
                if (comment.own and (channel is None or comment.channel == channel)
                        and comment.remote_id not in exclude and same_text(comment.body, body)):
                    return comment
            if len(page) < self.page_size:
                return None
            start += len(page)

    def _own_author(self) -> str | None:
        """The integration user as comment authors name it (accountId or name), read once (or
        taken from check_auth)."""
        with self._setup_lock:
            if self._me is None:
                self._remember_me(self._call("myself", self._client.myself))
            return self._me or None

    def _remember_me(self, me: Any) -> None:
        self._me = (_author_id(me) or "") if isinstance(me, Mapping) else ""

    def list_comments(self, remote_id: str) -> list[RemoteComment]:
        comments: list[RemoteComment] = []
        while True:
            start = len(comments)
            page = self._call("list_comments", lambda: [c.raw for c in self._client.comments(
                remote_id, start_at=start, max_results=self.page_size)])
            me = self._own_author() if page else None
            comments += [self._comment(raw, me) for raw in page]
            if len(page) < self.page_size:
                break
        return _oldest_first(comments)

    # -- auth and webhooks -------------------------------------------------------------------
    def check_auth(self) -> None:
        me = self._call("check_auth", self._client.myself)
        with self._setup_lock:
            self._remember_me(me)
        zone = me.get("timeZone") if isinstance(me, dict) else None
        if zone and zone not in UTC_ZONES:
            log.warning("%s: the Jira user's time zone is %s, not UTC: polls read JQL times in that "
                        "zone and can miss changes; set the integration user's time zone to UTC",
                        self.name, zone, extra={"connector": self.name})

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """A Jira webhook delivery, signed with the connector's secret. Without a configured
        secret every delivery is refused, as on ServiceNow: an open endpoint would let anyone make
        syncd re-read records at will."""
        if not self.webhook_secret:
            raise WebhookRejected(401, f"connector {self.name!r} has no webhook_secret configured")
        given = next((v for k, v in headers.items() if k.lower() == "x-hub-signature"), None)
        if not given:
            raise WebhookRejected(401, f"{self.name}: webhook without X-Hub-Signature")
        expected = "sha256=" + hmac.new(self.webhook_secret.encode(), body,
                                        hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.strip().encode("utf-8", "replace")):
            raise WebhookRejected(401, f"{self.name}: webhook signature does not match the "
                                       "configured secret")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise WebhookRejected(400, f"{self.name}: webhook body is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise WebhookRejected(400, f"{self.name}: webhook body must be a JSON object")
        issue = payload.get("issue")
        if issue is None:
            return []
        issue_id = issue.get("id") if isinstance(issue, dict) else None
        if not isinstance(issue_id, (str, int)) or isinstance(issue_id, bool) or issue_id == "":
            raise WebhookRejected(400, f"{self.name}: webhook 'issue' has no id")
        return [str(issue_id)]

    def close(self) -> None:
        self._client.close()
        self._http.close()
