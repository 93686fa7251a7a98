"""ServiceNow through pysnow 0.7.17: incidents (or another task table), their journal and references.

pysnow's pitfalls (see shared/reference/servicenow.md) shape this module: a fresh ``Resource`` per
call because its parameters leak between calls; our own pagination, because pysnow ignores ``Link``;
PATCH sent directly, because pysnow's ``update()`` GETs first and then PUTs; and every request
through the instrumented session under :func:`call_remote`, because pysnow retries nothing.

Records read by polls, ``fetch`` and ``fetch_many`` carry their journal (``RemoteRecord.comments``),
read for up to 100 records with one ``sys_journal_field`` query, so the engine needs no
``list_comments`` call per record: a batch of hinted records costs two requests.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

import pysnow
from requests.auth import HTTPBasicAuth

from syncd.clock import Clock, SystemClock
from syncd.connectors.base import (Connector, PermanentRemoteError, Ref, RemoteComment,
                                   RemoteRecord, SyncCursor, TransientRemoteError, WebhookRejected,
                                   same_text)
from syncd.connectors.http import (RetryPolicy, call_remote, instrumented_session,
                                   retry_finds_earlier)

log = logging.getLogger(__name__)

T = TypeVar("T")

WEBHOOK_SECRET_HEADER = "X-Syncd-Webhook-Secret"
JOURNAL_CHANNELS = ("work_notes", "comments")
JOURNAL_TABLE = "sys_journal_field"
JOURNAL_FIELDS = ("sys_id", "element", "element_id", "value", "sys_created_on", "sys_created_by")
# Fields every read needs, whatever the admin chose to read.
BOOKKEEPING_FIELDS = ("sys_id", "number", "sys_mod_count", "sys_updated_on", "correlation_id")
# Attributes that identify a user or group to the mapping (unknown names are ignored by the API).
REFERENCE_IDENTITY_FIELDS = ("sys_id", "user_name", "name", "email", "first_name", "last_name")
REFERENCE_CACHE_SECONDS = 3600.0   # users and groups are renamed rarely; an hour old is fresh enough
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_SYS_ID = re.compile(r"[0-9a-f]{32}\Z")
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")

DEFAULT_REFERENCES: Mapping[str, str] = {
    "assigned_to": "sys_user", "assignment_group": "sys_user_group", "caller_id": "sys_user"}


def parse_time(value: str) -> datetime:
    """A ServiceNow internal timestamp ("2026-01-22 14:12:37", UTC) as an aware datetime."""
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=timezone.utc)


def format_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime(TIME_FORMAT)


ORDER_BY_UPDATE = "ORDERBYsys_updated_on^ORDERBYsys_id"
# Values per IN query (records, journals, references): 100 sys_ids keep the URL near 3.5 KB, well
# under proxies' limits; a poll page of 500 records costs 5 journal reads, not 500.
IN_QUERY_BATCH = 100


def batches(values: Sequence[str]) -> list[Sequence[str]]:
    """``values`` cut into IN_QUERY_BATCH-sized pieces."""
    return [values[start:start + IN_QUERY_BATCH] for start in range(0, len(values), IN_QUERY_BATCH)]


def and_condition(encoded_query: str, condition: str) -> str:
    """``encoded_query AND condition``, also when the query has ``^NQ`` OR-groups (each gets it)."""
    if not encoded_query:
        return condition
    return "^NQ".join(f"{group}^{condition}" for group in encoded_query.split("^NQ"))


def then_order(encoded_query: str, order: str) -> str:
    return f"{encoded_query}^{order}" if encoded_query else order


# Journal entries oldest first; sys_id breaks ties within one second, so paging is stable.
JOURNAL_ORDER = "ORDERBYsys_created_on^ORDERBYsys_id"
# How many of our newest journal entries on a record are searched for the one just written.
JOURNAL_LOOKBACK = 50


class ServiceNowConnector(Connector):
    """One ServiceNow instance and table, synced by polling and hinted at by a business-rule webhook.

    Thread-safe: pysnow objects are made per call; the reference cache has a lock."""

    # A POST or PATCH answers with the record as that write saved it, and sys_mod_count counts
    # every save: the engine can tell from the answer alone that nothing else happened.
    writes_answer_exact_record = True

    def version_follows(self, previous: str, current: str) -> bool:
        if not (previous.isdigit() and current.isdigit()):
            return False
        return int(current) - int(previous) in (0, 1)

    def __init__(self, name: str, *, url: str, username: str, password: str,
                 table: str = "incident", filter: str = "", page_size: int = 500,
                 fields_to_read: Sequence[str] | None = None,
                 references: Mapping[str, str] | None = None,
                 overlap: timedelta = timedelta(minutes=2),
                 policy: RetryPolicy = RetryPolicy(), clock: Clock = SystemClock(),
                 timeout: float = 30, verify_tls: bool = True,
                 webhook_secret: str | None = None):
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.netloc:
            raise ValueError(f"connector {name!r}: url must look like https://acme.service-now.com, "
                             f"got {url!r}")
        for label, value in [("table", table), *(("references." + f, t) for f, t in
                                                 (references or {}).items())]:
            if not _NAME.match(value):
                raise ValueError(f"connector {name!r}: {label} must be a table name such as "
                                 f"'incident', got {value!r}")
        if page_size < 1:
            raise ValueError(f"connector {name!r}: page_size must be at least 1, got {page_size}")
        self.name = name
        self.instance_url = f"{split.scheme}://{split.netloc}{split.path.rstrip('/')}"
        self.username = username
        self.table = table
        self.filter = filter
        self.page_size = page_size
        self.fields_to_read = (list(dict.fromkeys([*BOOKKEEPING_FIELDS, *fields_to_read]))
                               if fields_to_read is not None else [])
        self.references = dict(DEFAULT_REFERENCES if references is None else references)
        self.overlap = overlap
        self.policy = policy
        self.clock = clock
        self.timeout = timeout
        self.webhook_secret = webhook_secret
        self.session = instrumented_session(name, timeout=timeout, verify=verify_tls)
        self.session.auth = HTTPBasicAuth(username, password)
        # pysnow builds "<scheme>://<host>"; a host with the path kept supports instances behind a
        # path-prefixed proxy, and use_ssl=False the plain-http simulator.
        self._client = pysnow.Client(host=split.netloc + split.path.rstrip("/"),
                                     use_ssl=split.scheme == "https", session=self.session)
        self._cache_lock = threading.Lock()
        self._identities: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self._ref_ids: dict[tuple[str, str, str], tuple[float, str]] = {}

    # -- plumbing --------------------------------------------------------------------------------
    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        return call_remote(self.name, operation, fn, policy=self.policy, clock=self.clock)

    def _resource(self, table: str) -> Any:
        """A fresh pysnow Resource: parameters set on one must never reach another call."""
        return self._client.resource(api_path=f"/table/{table}", timeout=self.timeout)

    def _table_url(self, table: str, sys_id: str) -> str:
        if not _SYS_ID.match(sys_id):
            raise PermanentRemoteError(self.name, f"{sys_id!r} is not a sys_id (32 lowercase hex "
                                                  f"digits); writes address records by sys_id")
        return f"{self.instance_url}/api/now/table/{table}/{sys_id}"

    def _query(self, table: str, query: str, *, limit: int, offset: int = 0,
               fields: Sequence[str] = ()) -> list[dict[str, Any]]:
        return self._resource(table).get(query=query, limit=limit, offset=offset,
                                         fields=list(fields)).all()

    def _read_all(self, table: str, query: str, fields: Sequence[str]) -> list[dict[str, Any]]:
        """Every record matching ``query``, a page at a time (pysnow ignores ``Link``); the query
        must order the records so that offsets stay stable. Not retried (runs inside _call)."""
        rows: list[dict[str, Any]] = []
        while True:
            page = self._query(table, query, limit=self.page_size, offset=len(rows), fields=fields)
            rows.extend(page)
            if len(page) < self.page_size:
                return rows

    def _one_of(self, field: str, values: Sequence[str]) -> str:
        """The condition ``fieldINa,b,c``, refusing values an IN list cannot carry."""
        for value in values:
            if "," in value:
                raise PermanentRemoteError(self.name, f"cannot query {field} for {value!r}: an IN "
                                                      f"list cannot carry ','")
            self._equals(field, value)
        return f"{field}IN{','.join(values)}"

    def _equals(self, field: str, value: str) -> str:
        """The condition ``field=value``, refusing values an encoded query cannot carry."""
        return self._condition(field, "=", value)

    def _condition(self, field: str, operator: str, value: str) -> str:
        """The condition ``field<operator>value``, refusing values an encoded query cannot carry."""
        if "^" in value or "\n" in value:
            raise PermanentRemoteError(self.name, f"cannot query {field} for {value!r}: an encoded "
                                                  f"query cannot carry '^' or a line break")
        return f"{field}{operator}{value}"

    def _after(self, last: Mapping[str, Any]) -> str:
        """The keyset condition for the records after ``last`` in ORDER_BY_UPDATE order:
        ``sys_updated_on>S OR (sys_updated_on=S AND sys_id>X)``, written as
        ``sys_updated_on>=S AND (sys_updated_on>S OR sys_id>X)`` because ``^OR`` binds only the
        two conditions beside it, so the condition is one AND-group that and_condition can add to
        every ``^NQ`` group of the filter."""
        updated = format_time(parse_time(last["sys_updated_on"]))
        return (f"sys_updated_on>={updated}^sys_updated_on>{updated}"
                f"^OR{self._condition('sys_id', '>', last['sys_id'])}")

    def _result(self, response: Any) -> dict[str, Any]:
        """The record in a Table API answer (HTTPError for an error status, classified upstream)."""
        response.raise_for_status()
        result = response.json().get("result")
        if not isinstance(result, dict):
            raise PermanentRemoteError(self.name, f"{response.request.method} {response.url} "
                                                  f"answered without a result record")
        return result

    def _record(self, raw: Mapping[str, Any],
                comments: tuple[RemoteComment, ...] | None = None) -> RemoteRecord:
        """A RemoteRecord from an API record; references must already be in the cache."""
        fields: dict[str, Any] = {}
        for field, value in raw.items():
            if field in JOURNAL_CHANNELS:
                continue        # always "" when read; entries come from sys_journal_field
            if field in self.references:
                fields[field] = self._identity(self.references[field], _reference_id(value))
            elif isinstance(value, dict):
                fields[field] = value.get("value", "")
            else:
                fields[field] = value
        sys_id = raw["sys_id"]
        return RemoteRecord(
            remote_id=sys_id, key=raw.get("number", ""),
            url=f"{self.instance_url}/nav_to.do?uri={self.table}.do?sys_id={sys_id}",
            version=str(raw.get("sys_mod_count", "")),
            updated_at=parse_time(raw["sys_updated_on"]), fields=fields,
            correlation_id=raw.get("correlation_id") or None, comments=comments)

    def _records(self, raws: Sequence[Mapping[str, Any]], *, with_journal: bool = False
                 ) -> list[RemoteRecord]:
        """RemoteRecords from API records; ``with_journal`` also reads their journals (in batches)
        so that the engine needs no list_comments call per record."""
        self._resolve_references(raws)
        journals = self._journals([raw["sys_id"] for raw in raws]) if with_journal else {}
        return [self._record(raw, journals.get(raw["sys_id"])) for raw in raws]

    def _journals(self, sys_ids: Sequence[str]) -> dict[str, tuple[RemoteComment, ...]]:
        """Every journal entry of these records, oldest first, as list_comments gives them: one
        ``element_idIN`` query per IN_QUERY_BATCH records, paged when longer. The records of a batch
        whose read failed for a passing reason are left out (their comments stay unknown, None,
        and the engine asks list_comments), so a partial journal never passes for a complete one."""
        journals: dict[str, tuple[RemoteComment, ...]] = {}
        for batch in batches(list(dict.fromkeys(sys_ids))):
            query = then_order(f"{self._one_of('element_id', batch)}"
                               f"^elementIN{','.join(JOURNAL_CHANNELS)}", JOURNAL_ORDER)
            try:
                entries = self._call("list_comments", lambda: self._read_all(
                    JOURNAL_TABLE, query, JOURNAL_FIELDS))
            except TransientRemoteError as error:
                log.warning("%s: journals of %d records could not be read (%s); their comments "
                            "will be read one record at a time", self.name, len(batch), error,
                            extra={"connector": self.name})
                continue
            by_record: dict[str, list[RemoteComment]] = {sys_id: [] for sys_id in batch}
            for entry in entries:
                owner = by_record.get(entry.get("element_id") or "")
                if owner is not None:
                    owner.append(_comment(entry, self.username))
            journals.update((sys_id, tuple(comments)) for sys_id, comments in by_record.items())
        return journals

    # -- references ------------------------------------------------------------------------------
    def _fresh(self, stamped_at: float) -> bool:
        return self.clock.monotonic() - stamped_at < REFERENCE_CACHE_SECONDS

    def _remember(self, table: str, identity: dict[str, str]) -> None:
        now = self.clock.monotonic()
        with self._cache_lock:
            self._identities[(table, identity["sys_id"])] = (now, identity)

    def _identity(self, table: str, sys_id: str) -> dict[str, str] | None:
        if not sys_id:
            return None
        with self._cache_lock:
            cached = self._identities.get((table, sys_id))
        return cached[1] if cached else {"sys_id": sys_id}

    def _resolve_references(self, raws: Sequence[Mapping[str, Any]]) -> None:
        """Load the identities of the users and groups these records point at, one query per table."""
        wanted: dict[str, set[str]] = {}
        for raw in raws:
            for field, table in self.references.items():
                sys_id = _reference_id(raw.get(field))
                if not sys_id:
                    continue
                with self._cache_lock:
                    cached = self._identities.get((table, sys_id))
                if cached is None or not self._fresh(cached[0]):
                    wanted.setdefault(table, set()).add(sys_id)
        for table, sys_ids in wanted.items():
            ids = sorted(sys_ids)
            found: list[dict[str, Any]] = []
            for batch in batches(ids):
                found += self._call("lookup_reference", lambda: self._query(
                    table, f"sys_idIN{','.join(batch)}", limit=len(batch),
                    fields=REFERENCE_IDENTITY_FIELDS))
            for identity in found:
                self._remember(table, {k: v for k, v in identity.items() if v not in (None, "")})
            missing = sys_ids - {identity.get("sys_id") for identity in found}
            if missing:
                log.warning("%s: %s records %s not found; keeping their sys_ids only",
                            self.name, table, ", ".join(sorted(missing)),
                            extra={"connector": self.name})

    def _resolve_ref(self, field: str, ref: Ref) -> str:
        """The sys_id of the record a Ref names (a user name, a group name, an email...)."""
        table = self.references.get(field)
        if table is None:
            raise PermanentRemoteError(self.name, f"field {field!r} got a reference "
                                                  f"({ref.match}={ref.value!r}) but is not a "
                                                  f"configured reference field")
        if not ref.value:
            return ""
        if not _NAME.match(ref.match):
            raise PermanentRemoteError(self.name, f"field {field!r}: cannot match a {table} record "
                                                  f"by {ref.match!r}")
        key = (table, ref.match, ref.value)
        with self._cache_lock:
            cached = self._ref_ids.get(key)
        if cached is not None and self._fresh(cached[0]):
            return cached[1]
        condition = self._equals(ref.match, ref.value)
        found = self._call("lookup_reference", lambda: self._query(
            table, condition, limit=2,
            fields=list(dict.fromkeys([*REFERENCE_IDENTITY_FIELDS, ref.match]))))
        # An unknown field in a condition is silently dropped by the API: check the match ourselves.
        matches = [r for r in found if r.get(ref.match) == ref.value]
        if not matches:
            raise PermanentRemoteError(self.name, f"field {field!r}: no {table} record has "
                                                  f"{ref.match} = {ref.value!r}")
        if len(matches) > 1:
            raise PermanentRemoteError(self.name, f"field {field!r}: several {table} records have "
                                                  f"{ref.match} = {ref.value!r}; match by a unique "
                                                  f"attribute such as user_name or sys_id")
        sys_id = matches[0]["sys_id"]
        self._remember(table, {k: v for k, v in matches[0].items() if v not in (None, "")})
        with self._cache_lock:
            self._ref_ids[key] = (self.clock.monotonic(), sys_id)
        return sys_id

    def _outbound(self, fields: Mapping[str, Any]) -> dict[str, str]:
        """The request body for a write: Refs resolved to sys_ids, every value a string."""
        body: dict[str, str] = {}
        for field, value in fields.items():
            if isinstance(value, Ref):
                body[field] = self._resolve_ref(field, value)
            elif value is None:
                body[field] = ""
            elif isinstance(value, bool):
                body[field] = "true" if value else "false"
            elif isinstance(value, (list, tuple)):
                body[field] = ",".join(str(v) for v in value)
            else:
                body[field] = str(value)
        return body

    # -- Connector -------------------------------------------------------------------------------
    def check_auth(self) -> None:
        self._call("check_auth", lambda: self._query(self.table, "", limit=1, fields=["sys_id"]))

    def fetch_changes(self, cursor: SyncCursor, *, limit: int = 500
                      ) -> tuple[list[RemoteRecord], SyncCursor]:
        """Records changed since the cursor's watermark minus ``overlap``, oldest first.

        Pages are keyset pages in (``sys_updated_on``, ``sys_id``) order, always at offset 0: each
        next page starts just after the last record read. An offset would count records that an
        edit between two pages moves away, and skip an unread one in their place; a key cannot
        shift. A record edited while we page moves to the end and is read there. Records already
        in ``cursor.seen`` (same sys_id and sys_mod_count) are dropped."""
        since = cursor.watermark - self.overlap if cursor.watermark else None
        selection = (and_condition(self.filter, f"sys_updated_on>={format_time(since)}")
                     if since else self.filter)
        read: list[Mapping[str, Any]] = []   # every record read, duplicates included
        new: list[Mapping[str, Any]] = []
        while len(new) < limit:
            query = then_order(selection, ORDER_BY_UPDATE)
            page = self._call("fetch_changes", lambda: self._query(
                self.table, query, limit=self.page_size, fields=self.fields_to_read))
            for raw in page:
                read.append(raw)
                if _seen_key(raw) not in cursor.seen:
                    new.append(raw)
                    if len(new) >= limit:
                        break
            if len(page) < self.page_size or len(new) >= limit:
                break
            selection = and_condition(self.filter, self._after(page[-1]))
        records = self._records(new, with_journal=True)
        return records, self._next_cursor(cursor, read)

    def _next_cursor(self, cursor: SyncCursor, read: Sequence[Mapping[str, Any]]) -> SyncCursor:
        """Advance the watermark to the newest record read and keep the versions the next,
        overlapping window will see again."""
        if not read:
            return cursor
        watermark = max(parse_time(raw["sys_updated_on"]) for raw in read)
        if cursor.watermark and cursor.watermark > watermark:
            watermark = cursor.watermark
        keep_from = watermark - self.overlap
        seen = frozenset(_seen_key(raw) for raw in read
                         if parse_time(raw["sys_updated_on"]) >= keep_from)
        return SyncCursor(watermark=watermark, seen=seen)

    def fetch(self, remote_id: str) -> RemoteRecord | None:
        """One record by sys_id or by number, with its journal (a second request)."""
        field = "sys_id" if _SYS_ID.match(remote_id) else "number"
        condition = self._equals(field, remote_id)
        found = self._call("fetch", lambda: self._query(self.table, condition, limit=2,
                                                        fields=self.fields_to_read))
        matches = [raw for raw in found if raw.get(field) == remote_id]
        return self._records(matches[:1], with_journal=True)[0] if matches else None

    def fetch_many(self, remote_ids: Sequence[str]) -> list[RemoteRecord]:
        """The records among ``remote_ids`` (sys_ids or numbers) that exist, in the order asked,
        with their journals: one ``sys_idIN`` (or ``numberIN``) query and one journal query per
        IN_QUERY_BATCH ids, where fetch costs two requests per record."""
        wanted = list(dict.fromkeys(remote_ids))
        by_field = {"sys_id": [r for r in wanted if _SYS_ID.match(r)],
                    "number": [r for r in wanted if not _SYS_ID.match(r)]}
        found: dict[str, dict[str, Any]] = {}       # asked id -> record
        for field, values in by_field.items():
            for batch in batches(values):
                query = then_order(self._one_of(field, batch), "ORDERBYsys_id")
                for raw in self._call("fetch", lambda: self._read_all(self.table, query,
                                                                      self.fields_to_read)):
                    found.setdefault(raw.get(field) or "", raw)
        unique = {raw["sys_id"]: raw for raw in (found[r] for r in wanted if r in found)}
        return self._records(list(unique.values()), with_journal=True)

    def _find_raw_by_correlation(self, correlation_id: str) -> dict[str, Any] | None:
        condition = self._equals("correlation_id", correlation_id)
        found = self._query(self.table, f"{condition}^ORDERBYsys_created_on", limit=2,
                            fields=self.fields_to_read)
        matches = [raw for raw in found if raw.get("correlation_id") == correlation_id]
        if len(matches) > 1:
            log.warning("%s: %d records carry correlation id %s; using the oldest, %s",
                        self.name, len(matches), correlation_id, matches[0].get("number"),
                        extra={"connector": self.name})
        return matches[0] if matches else None

    def find_by_correlation(self, correlation_id: str) -> RemoteRecord | None:
        if not correlation_id:
            raise ValueError(f"connector {self.name!r}: find_by_correlation needs a correlation id")
        raw = self._call("find_by_correlation", lambda: self._find_raw_by_correlation(correlation_id))
        return self._records([raw])[0] if raw else None

    def create(self, fields: Mapping[str, Any], *, correlation_id: str) -> RemoteRecord:
        """POST a record carrying ``correlation_id``. A retried attempt first looks for the record
        an earlier attempt may have created before its answer was lost."""
        if not correlation_id:
            raise ValueError(f"connector {self.name!r}: create needs a correlation id")
        body = {**self._outbound(fields), "correlation_id": correlation_id}
        create_once = retry_finds_earlier(
            lambda: self._resource(self.table).create(body).one(),
            lambda: self._find_raw_by_correlation(correlation_id))
        return self._records([self._call("create", create_once)])[0]

    def update(self, remote_id: str, fields: Mapping[str, Any]) -> RemoteRecord:
        """PATCH only the given fields (pysnow's update() would GET first, then PUT)."""
        url = self._table_url(self.table, remote_id)
        body = self._outbound(fields)

        def patch() -> dict[str, Any]:
            return self._result(self.session.patch(url, json=body))

        return self._records([self._call("update", patch)])[0]

    def add_comment(self, remote_id: str, body: str, *, channel: str) -> RemoteComment:
        """Append a journal entry by writing the journal field, then read the entry back for its id.

        A retried attempt first looks for the entry an earlier attempt may have written."""
        if channel not in JOURNAL_CHANNELS:
            raise ValueError(f"connector {self.name!r}: comment channel must be one of "
                             f"{', '.join(JOURNAL_CHANNELS)}, got {channel!r}")
        url = self._table_url(self.table, remote_id)
        query = then_order(f"{self._equals('element_id', remote_id)}^element={channel}"
                           f"^{self._equals('sys_created_by', self.username)}",
                           "ORDERBYDESCsys_created_on")

        def our_newest_entry_with_body() -> dict[str, Any] | None:
            """Our most recent entry on the channel that says ``body``. Several entries can share
            one second (sys_created_on has no finer grain), so look well past the newest one."""
            entries = self._query(JOURNAL_TABLE, query, limit=JOURNAL_LOOKBACK, fields=JOURNAL_FIELDS)
            return next((e for e in entries if same_text(e.get("value") or "", body)
                         and e.get("sys_created_by") == self.username), None)

        def append() -> dict[str, Any]:
            self._result(self.session.patch(url, json={channel: body},
                                            params={"sysparm_fields": "sys_id"}))
            entry = our_newest_entry_with_body()
            if entry is None:
                raise PermanentRemoteError(self.name, f"wrote a {channel} entry on {remote_id} but "
                                                      f"cannot find it in {JOURNAL_TABLE}")
            return entry

        return _comment(self._call("add_comment",
                                   retry_finds_earlier(append, our_newest_entry_with_body)),
                        self.username)

    def list_comments(self, remote_id: str) -> list[RemoteComment]:
        query = then_order(f"{self._equals('element_id', remote_id)}"
                           f"^element=work_notes^ORelement=comments", JOURNAL_ORDER)
        entries = self._call("list_comments", lambda: self._read_all(JOURNAL_TABLE, query,
                                                                     JOURNAL_FIELDS))
        return [_comment(entry, self.username) for entry in entries]

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """A business rule's POST: check the shared secret, return the sys_ids it names."""
        given = next((v for k, v in headers.items() if k.lower() == WEBHOOK_SECRET_HEADER.lower()),
                     None)
        if not self.webhook_secret:
            raise WebhookRejected(401, f"connector {self.name!r} has no webhook_secret configured")
        if given is None or not hmac.compare_digest(given.encode(), self.webhook_secret.encode()):
            raise WebhookRejected(401, f"missing or wrong {WEBHOOK_SECRET_HEADER} header")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise WebhookRejected(400, f"body is not JSON: {exc}") from None
        items = payload if isinstance(payload, list) else [payload]
        sys_ids: list[str] = []
        for index, item in enumerate(items):
            sys_id = item.get("sys_id") if isinstance(item, dict) else None
            if not isinstance(sys_id, str) or not sys_id:
                where = f"item {index}" if isinstance(payload, list) else "body"
                raise WebhookRejected(400, f"{where} has no sys_id string")
            sys_ids.append(sys_id)
        if not sys_ids:
            raise WebhookRejected(400, "body names no record (empty list)")
        return list(dict.fromkeys(sys_ids))

    def close(self) -> None:
        self.session.close()


def _reference_id(value: Any) -> str:
    """The sys_id in a reference value: ``{"link", "value"}``, a bare sys_id, or "" when empty."""
    if isinstance(value, dict):
        return value.get("value") or ""
    return value or ""


def _seen_key(raw: Mapping[str, Any]) -> str:
    return f"{raw['sys_id']}:{raw.get('sys_mod_count', '')}"


def _comment(entry: Mapping[str, Any], username: str) -> RemoteComment:
    author = entry.get("sys_created_by") or None
    return RemoteComment(remote_id=entry["sys_id"], channel=entry["element"], body=entry["value"],
                         author=author, created_at=parse_time(entry["sys_created_on"]),
                         own=author == username)
