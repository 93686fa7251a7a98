"""A ServiceNow instance, faithful enough that pysnow 0.7.17 cannot tell it from a real one for
everything syncd uses: the Table API on ``incident``, ``sys_user``, ``sys_user_group`` and
``sys_journal_field``, encoded queries, display values, the incident business rules (computed
priority, ``active``, resolution data policy, journal fields), Basic auth, errors in ServiceNow's
shape, rate-limit answers and a business-rule style webhook.

Behaviour follows shared/reference/servicenow.md; where that is silent, the real instance's:

* Every stored value is a string. References hold a sys_id; a write may also give a display value
  (``name``) or, for users, a ``user_name`` that names exactly one record. Anything else is stored
  as given, as the real instance stores a broken reference (it reads back with an empty display
  value).
* Fields the table does not have are silently ignored, in writes, ``sysparm_fields`` and queries.
  System and computed fields (``sys_*``, ``number``, ``priority``, ``active``, ``incident_state``,
  ``opened_*``, ``resolved_*``, ``closed_*``) cannot be written; ``sys_id`` may be given on insert.
* An update that changes nothing (same values, no journal text) is not saved, like
  ``GlideRecord.update()``: ``sys_mod_count`` and ``sys_updated_on`` stay and no webhook fires.
* Resolving or closing (state 6 or 7) without ``close_code`` and ``close_notes`` after the write is
  refused as the standard "Make close info mandatory" data policy is: **403**
  ``{"error": {"message": "Operation Failed", "detail": "Data Policy Exception: The following
  fields are mandatory: Resolution code, Resolution notes"}, "status": "failure"}``, nothing saved.
* ``sys_journal_field`` is read-only through the API (403, as its ACLs answer); journal entries are
  made by writing ``work_notes`` / ``comments`` on the incident.
* Dates in queries take the internal UTC form or ``javascript:gs.dateGenerate('2026-01-01',
  '12:00:00')`` (also pysnow's one-argument form), read in the API user's ``time_zone``; other
  ``javascript:`` functions are not evaluated and match nothing. Dot-walks (``assigned_to.user_name``)
  work in queries and ``sysparm_fields``.
* Values that are not scalars (other than a ``{"value": ...}`` object) are refused with 400 rather
  than stored as garbage, so a connector bug shows at once.

Webhooks: after every incident insert or update (API or human) the simulator POSTs
``{"sys_id", "number", "sys_updated_on", "sys_mod_count", "operation": "insert"|"update",
"table": "incident"}`` with ``User-Agent: ServiceNow/1.0`` and, when a secret is configured, the
shared-secret header ``X-Syncd-Webhook-Secret: <secret>`` (the daemon checks it).

Admin endpoints besides the shared ``/_sim/`` ones: ``POST /_sim/human/incident`` (create) and
``POST /_sim/human/incident/{sys_id}`` (update), body ``{"user": "beth.anglin", "fields": {...}}``:
a person editing in the UI, through the same code as API writes. In Python: ``human_create``,
``human_update``, ``human_add_journal``, and for assertions ``get_incident``, ``journal``,
``user_sys_id``, ``group_sys_id``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, NamedTuple, Sequence
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd.clock import Clock
from syncd.simulators.accounts import SERVICENOW_SECRET_HEADER as WEBHOOK_SECRET_HEADER
from syncd.simulators.accounts import SERVICENOW_USERS, servicenow_credentials
from syncd.simulators.base import HTTPError, Request, Response, Simulator

WEBHOOK_USER_AGENT = "ServiceNow/1.0"
DEFAULT_HUMAN = "beth.anglin"
RATE_LIMIT_RULE_SYS_ID = "2fd2b5c5db1b2010a3a1e6b0ca96190c"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
NOT_FOUND_DETAIL = "Record doesn't exist or ACL restricts the record retrieval"
TABLE_PATH = r"/api/now(?:/v[12])?/table/(?P<table>[^/]+)"
# Fields whose "=" and "IN" conditions are answered from an index instead of a scan of every record
# (sys_id is the key records are kept by). A poll's hint re-reads and journal reads stay O(1) at
# 100k incidents.
INDEXED_FIELDS: Mapping[str, tuple[str, ...]] = {"incident": ("number",),
                                                 "sys_journal_field": ("element_id",)}


class Field(NamedTuple):
    kind: str                                  # string, integer, datetime, boolean, reference, journal
    reference: str | None = None               # the referenced table, for references
    choices: Mapping[str, str] | None = None   # value -> display label
    label: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    fields: dict[str, Field]
    display_field: str
    computed: frozenset[str]                   # fields a write cannot set


STATE_LABELS = {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed",
                "8": "Canceled"}
LEVEL_LABELS = {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"}
PRIORITY_LABELS = {"1": "1 - Critical", "2": "2 - High", "3": "3 - Moderate", "4": "4 - Low",
                   "5": "5 - Planning"}
INACTIVE_STATES = {"6", "7", "8"}
RESOLVED_STATES = {"6", "7"}


def priority_for(impact: str, urgency: str) -> str | None:
    """The standard priority lookup: impact 1..3 × urgency 1..3 -> 1..5 (None off the table)."""
    if impact in LEVEL_LABELS and urgency in LEVEL_LABELS:
        return str(int(impact) + int(urgency) - 1)
    return None


_SYS_FIELDS = {
    "sys_id": Field("string"),
    "sys_created_on": Field("datetime"),
    "sys_created_by": Field("string"),
    "sys_updated_on": Field("datetime"),
    "sys_updated_by": Field("string"),
    "sys_mod_count": Field("integer"),
}
_SYS_COMPUTED = frozenset(_SYS_FIELDS)


def _incident_table(custom_fields: Iterable[str]) -> Table:
    fields = {
        "number": Field("string"),
        "short_description": Field("string"),
        "description": Field("string"),
        "state": Field("integer", choices=STATE_LABELS),
        "incident_state": Field("integer", choices=STATE_LABELS),
        "impact": Field("integer", choices=LEVEL_LABELS),
        "urgency": Field("integer", choices=LEVEL_LABELS),
        "priority": Field("integer", choices=PRIORITY_LABELS),
        "active": Field("boolean"),
        "category": Field("string"),
        "subcategory": Field("string"),
        "caller_id": Field("reference", "sys_user"),
        "assignment_group": Field("reference", "sys_user_group"),
        "assigned_to": Field("reference", "sys_user"),
        "opened_at": Field("datetime"),
        "opened_by": Field("reference", "sys_user"),
        "resolved_at": Field("datetime"),
        "resolved_by": Field("reference", "sys_user"),
        "closed_at": Field("datetime"),
        "closed_by": Field("reference", "sys_user"),
        "close_code": Field("string", label="Resolution code"),
        "close_notes": Field("string", label="Resolution notes"),
        "correlation_id": Field("string"),
        "correlation_display": Field("string"),
        "work_notes": Field("journal", label="Work notes"),
        "comments": Field("journal", label="Additional comments"),
        "sys_class_name": Field("string"),
        **_SYS_FIELDS,
    }
    for name in custom_fields:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in fields:
            raise ValueError(f"custom incident field {name!r} must be a new lowercase field name")
        fields[name] = Field("string")
    computed = _SYS_COMPUTED | {"number", "priority", "incident_state", "active", "opened_at",
                                "opened_by", "resolved_at", "resolved_by", "closed_at",
                                "closed_by", "sys_class_name"}
    return Table("incident", fields, "number", frozenset(computed))


_USER_TABLE = Table("sys_user", {
    "user_name": Field("string"), "name": Field("string"), "first_name": Field("string"),
    "last_name": Field("string"), "email": Field("string"), "active": Field("boolean"),
    "time_zone": Field("string"), **_SYS_FIELDS}, "name", _SYS_COMPUTED)
_GROUP_TABLE = Table("sys_user_group", {
    "name": Field("string"), "description": Field("string"), "email": Field("string"),
    "active": Field("boolean"), "manager": Field("reference", "sys_user"), **_SYS_FIELDS},
    "name", _SYS_COMPUTED)
_JOURNAL_TABLE = Table("sys_journal_field", {
    "element": Field("string"), "element_id": Field("string"), "name": Field("string"),
    "value": Field("string"), "sys_created_on": Field("datetime"),
    "sys_created_by": Field("string"), "sys_id": Field("string")}, "value", _SYS_COMPUTED)

DEFAULT_PEOPLE = (
    {"user_name": "beth.anglin", "name": "Beth Anglin", "email": "beth.anglin@example.com"},
    {"user_name": "david.loo", "name": "David Loo", "email": "david.loo@example.com"},
    {"user_name": "fred.luddy", "name": "Fred Luddy", "email": "fred.luddy@example.com"},
    {"user_name": "abel.tuter", "name": "Abel Tuter", "email": "abel.tuter@example.com"},
)
DEFAULT_GROUPS = (
    {"name": "Service Desk", "email": "servicedesk@example.com"},
    {"name": "Network", "email": "network@example.com"},
    {"name": "Database", "email": "database@example.com"},
    {"name": "Software", "email": "software@example.com"},
)


def stable_sys_id(table: str, key: str) -> str:
    """The sys_id a seeded record always gets, so tests and demos can name it."""
    return hashlib.md5(f"{table}:{key}".encode()).hexdigest()


def _as_bool(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _to_string(name: str, value: Any) -> str:
    """Coerce a written value to the string the instance stores."""
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise HTTPError(400, "Invalid value",
                    f"Field '{name}' takes a string, number or boolean, got {type(value).__name__}")


# -- encoded queries ----------------------------------------------------------------------------
_OPERATORS = ("ISNOTEMPTY", "ISEMPTY", "NOT LIKE", "NOT IN", "STARTSWITH", "ENDSWITH", "LIKE",
              "IN", "BETWEEN", "!=", ">=", "<=", "=", ">", "<")
_CONDITION = re.compile(r"(?P<field>[a-z][a-z0-9_.]*?)(?P<op>"
                        + "|".join(re.escape(op) for op in _OPERATORS) + r")(?P<value>.*)\Z",
                        re.DOTALL)
_DATE_GENERATE = re.compile(r"javascript:gs\.dateGenerate\(\s*(['\"])(?P<date>\d{4}-\d{2}-\d{2})"
                            r"(?:[ T](?P<time1>\d{2}:\d{2}:\d{2}))?\1"
                            r"(?:\s*,\s*(['\"])(?P<time2>\d{2}:\d{2}:\d{2})\4)?\s*\)\Z")
_ESCAPED_CARET = "\x00"


class Condition(NamedTuple):
    path: tuple[str, ...]
    kind: str
    op: str
    value: str


@dataclass
class Query:
    groups: list[list[list[Condition]]]       # OR of groups; a group is an AND of OR-clauses
    order: list[tuple[tuple[str, ...], str, bool]]    # (path, kind, descending)


def _compare(kind: str, left: str, right: str) -> int | None:
    """-1/0/1 ordering of two stored strings of a field kind; None when they cannot be ordered."""
    if kind == "integer":
        try:
            a, b = int(left), int(right)
        except ValueError:
            return None
        return (a > b) - (a < b)
    if left == "" or right == "":
        return None
    return (left > right) - (left < right)


def _matches(condition: Condition, actual: str) -> bool:
    op, expected = condition.op, condition.value
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    if op == "LIKE":
        return expected in actual
    if op == "NOT LIKE":
        return expected not in actual
    if op == "STARTSWITH":
        return actual.startswith(expected)
    if op == "ENDSWITH":
        return actual.endswith(expected)
    if op == "IN":
        return actual in expected.split(",")
    if op == "NOT IN":
        return actual not in expected.split(",")
    if op == "ISEMPTY":
        return actual == ""
    if op == "ISNOTEMPTY":
        return actual != ""
    if op == "BETWEEN":
        low, _, high = expected.partition("@")
        above, below = _compare(condition.kind, actual, low), _compare(condition.kind, actual, high)
        return above is not None and below is not None and above >= 0 and below <= 0
    order = _compare(condition.kind, actual, expected)
    if order is None:
        return False
    return {">": order > 0, ">=": order >= 0, "<": order < 0, "<=": order <= 0}[op]


class ServiceNowSimulator(Simulator):
    """An in-memory ServiceNow instance behind the real Table API."""

    def __init__(self, *, users: Mapping[str, str] | None = None,
                 people: Sequence[Mapping[str, str]] | None = None,
                 groups: Sequence[Mapping[str, str]] | None = None,
                 custom_fields: Iterable[str] = (),
                 webhook_url: str | None = None, webhook_secret: str | None = None,
                 rate_limit_per_hour: int = 100,
                 clock: Clock | None = None, seed: int = 0, state_file: str | None = None):
        """``users``: API accounts, user name -> password (default ``admin``/``admin``); each also
        gets a sys_user row. ``people`` / ``groups``: seeded sys_user / sys_user_group rows (dicts of
        field values; default a few ITSM people and groups); their sys_ids are
        :func:`stable_sys_id` of ``user_name`` / ``name``. ``custom_fields``: extra incident string
        fields (``u_...``)."""
        super().__init__(clock=clock, seed=seed, state_file=state_file)
        self.users = dict(users if users is not None else SERVICENOW_USERS)
        self.people = [dict(p) for p in (people if people is not None else DEFAULT_PEOPLE)]
        self.group_seeds = [dict(g) for g in (groups if groups is not None else DEFAULT_GROUPS)]
        self.rate_limit_per_hour = rate_limit_per_hour
        self.tables = {t.name: t for t in (_incident_table(custom_fields), _USER_TABLE,
                                           _GROUP_TABLE, _JOURNAL_TABLE)}
        self._ids = random.Random(f"servicenow:{seed}")
        self._records: dict[str, dict[str, dict[str, str]]] = {}
        self._positions: dict[str, dict[str, int]] = {}           # table -> sys_id -> insert rank
        self._indexes: dict[str, dict[str, dict[str, dict[str, None]]]] = {}  # table, field, value
        self._inserted = 0
        self._next_number = 10001
        self.webhooks.configure(webhook_url, webhook_secret)
        with self.lock:
            self.reset_state()
        self._add_routes()

    # -- Simulator hooks ---------------------------------------------------------------------
    def error_response(self, error: HTTPError) -> Response:
        detail = error.detail
        if error.status == 429 and detail is None:
            detail = f"Rate limit of {self.rate_limit_per_hour} requests per hour for Table API exceeded"
        return Response(error.status, {"error": {"message": error.message, "detail": detail},
                                       "status": "failure"}, dict(error.headers))

    def authenticate(self, request: Request) -> None:
        self._api_user(request)

    def credentials(self) -> list[str]:
        return servicenow_credentials(self.users, self.webhooks.secret)

    def rate_limit_headers(self) -> dict[str, str]:
        now = int(self.clock.now().timestamp())
        return {"X-RateLimit-Limit": str(self.rate_limit_per_hour),
                "X-RateLimit-Reset": str(now - now % 3600 + 3600),
                "X-RateLimit-Rule": RATE_LIMIT_RULE_SYS_ID}

    def state_to_json(self) -> Any:
        return {"version": 1, "next_number": self._next_number,
                "tables": {name: list(rows.values()) for name, rows in self._records.items()}}

    def state_from_json(self, data: Any) -> None:
        if (not isinstance(data, dict) or data.get("version") != 1
                or not isinstance(data.get("tables"), dict)):
            raise ValueError("ServiceNow simulator state must be an object with version 1 and 'tables'")
        records: dict[str, dict[str, dict[str, str]]] = {name: {} for name in self.tables}
        for name, rows in data["tables"].items():
            if name not in self.tables:
                raise ValueError(f"ServiceNow simulator state: unknown table {name!r}")
            for index, row in enumerate(rows):
                if not isinstance(row, dict) or not isinstance(row.get("sys_id"), str):
                    raise ValueError(f"ServiceNow simulator state: {name}[{index}] has no sys_id")
                records[name][row["sys_id"]] = {k: str(v) for k, v in row.items()}
        self._clear_records()
        for name, rows_by_id in records.items():
            for row in rows_by_id.values():
                self._store(name, row)
        self._next_number = int(data.get("next_number", 10001))

    def reset_state(self) -> None:
        """Forget every record, then seed the people, groups and API accounts again."""
        self._clear_records()
        self._next_number = 10001
        now = self._now()
        seeded = [dict(p) for p in self.people]
        known = {p.get("user_name") for p in seeded}
        seeded += [{"user_name": name, "name": name} for name in self.users if name not in known]
        for person in seeded:
            self._seed("sys_user", person, person["user_name"], now)
        for group in self.group_seeds:
            self._seed("sys_user_group", group, group["name"], now)

    def _seed(self, table: str, values: Mapping[str, str], key: str, now: str) -> None:
        row = self._blank(table)
        row.update({k: str(v) for k, v in values.items() if k in self.tables[table].fields})
        row.update(sys_id=values.get("sys_id") or stable_sys_id(table, key),
                   sys_created_on=now, sys_updated_on=now, sys_created_by="system",
                   sys_updated_by="system", sys_mod_count="0")
        if table == "sys_user":
            row["time_zone"] = row["time_zone"] or "UTC"
        self._store(table, row)

    # -- storage: the records and their indexes, kept in step --------------------------------
    def _clear_records(self) -> None:
        self._records = {name: {} for name in self.tables}
        self._positions = {name: {} for name in self.tables}
        self._indexes = {name: {field: {} for field in INDEXED_FIELDS.get(name, ())}
                         for name in self.tables}

    def _store(self, table: str, row: dict[str, str]) -> None:
        """Insert or replace a record (by its sys_id) and keep the indexes in step."""
        sys_id = row["sys_id"]
        previous = self._records[table].get(sys_id)
        if previous is None:
            self._inserted += 1
            self._positions[table][sys_id] = self._inserted
        for field, index in self._indexes[table].items():
            value = row.get(field, "")
            if previous is not None:
                old = previous.get(field, "")
                if old == value:
                    continue
                self._unindex(index, old, sys_id)
            index.setdefault(value, {})[sys_id] = None
        self._records[table][sys_id] = row

    def _remove(self, table: str, sys_id: str) -> None:
        row = self._records[table].pop(sys_id)
        del self._positions[table][sys_id]
        for field, index in self._indexes[table].items():
            self._unindex(index, row.get(field, ""), sys_id)

    @staticmethod
    def _unindex(index: dict[str, dict[str, None]], value: str, sys_id: str) -> None:
        holders = index[value]
        del holders[sys_id]
        if not holders:
            del index[value]

    def _in_table_order(self, table: str, sys_ids: Iterable[str]) -> list[dict[str, str]]:
        """The records with these sys_ids in the order a scan of the table meets them."""
        rows, positions = self._records[table], self._positions[table]
        return [rows[sys_id] for sys_id in sorted(set(sys_ids), key=positions.__getitem__)]

    def _rows_where(self, table: str, field: str, value: str) -> list[dict[str, str]]:
        """The records whose indexed ``field`` equals ``value``, in table order."""
        return self._in_table_order(table, self._indexes[table][field].get(value, ()))

    # -- Python API for tests and the demo ---------------------------------------------------
    def human_create(self, fields: Mapping[str, Any], user: str = DEFAULT_HUMAN) -> dict[str, str]:
        """Create an incident as a person in the UI; returns the stored record."""
        with self.lock:
            return dict(self._write("incident", None, fields, user))

    def human_update(self, sys_id: str, fields: Mapping[str, Any],
                     user: str = DEFAULT_HUMAN) -> dict[str, str]:
        """Change an incident as a person in the UI (journal fields append); returns the record.
        Raises HTTPError (404 unknown incident, 403 data policy) as the API would answer."""
        with self.lock:
            return dict(self._write("incident", self._existing("incident", sys_id), fields, user))

    def human_add_journal(self, sys_id: str, element: str, text: str,
                          user: str = DEFAULT_HUMAN) -> dict[str, str]:
        """Add a work note or comment as a person; returns the new sys_journal_field entry."""
        if element not in ("work_notes", "comments"):
            raise ValueError(f"journal element must be work_notes or comments, got {element!r}")
        if not text.strip():
            raise ValueError("a journal entry needs some text")
        with self.lock:
            self.human_update(sys_id, {element: text}, user)
            return dict(self.journal(sys_id)[-1])

    def get_incident(self, sys_id_or_number: str) -> dict[str, str] | None:
        """The stored incident (references as sys_ids, journal fields ""), or None."""
        with self.lock:
            row = self._records["incident"].get(sys_id_or_number) or next(
                iter(self._rows_where("incident", "number", sys_id_or_number)), None)
            return dict(row) if row else None

    def journal(self, sys_id: str) -> list[dict[str, str]]:
        """The incident's journal entries, oldest first."""
        with self.lock:
            return [dict(r) for r in self._rows_where("sys_journal_field", "element_id", sys_id)]

    def user_sys_id(self, user_name: str) -> str:
        return self._sys_id_by("sys_user", "user_name", user_name)

    def group_sys_id(self, name: str) -> str:
        return self._sys_id_by("sys_user_group", "name", name)

    def _sys_id_by(self, table: str, field: str, value: str) -> str:
        with self.lock:
            for row in self._records[table].values():
                if row[field] == value:
                    return row["sys_id"]
        raise KeyError(f"no {table} record with {field}={value!r}")

    # -- writes: the one path for API and human changes --------------------------------------
    def _write(self, table_name: str, existing: dict[str, str] | None,
               payload: Mapping[str, Any], user: str) -> dict[str, str]:
        """Apply a write as ``user``, run the table's rules, save, journal and announce it."""
        table = self.tables[table_name]
        row = dict(existing) if existing else self._blank(table_name)
        notes: list[tuple[str, str]] = []
        for name, raw in payload.items():
            field = table.fields.get(name)
            if field is None or name in table.computed:
                continue
            value = _to_string(name, raw)
            if field.kind == "journal":
                if value.strip():
                    notes.append((name, value))
            elif field.kind == "reference":
                row[name] = self._resolve_reference(field.reference or "", value)
            else:
                row[name] = value
        insert = existing is None
        if insert:
            wanted = payload.get("sys_id")
            row["sys_id"] = (wanted if isinstance(wanted, str) and re.fullmatch(r"[0-9a-f]{32}", wanted)
                             and wanted not in self._records[table_name] else self._new_sys_id())
        now = self._now()
        if table_name == "incident":
            self._incident_rules(row, existing, user, now)
        if not insert and row == existing and not notes:
            return existing
        row["sys_updated_on"] = now
        row["sys_updated_by"] = user
        if insert:
            row.update(sys_created_on=now, sys_created_by=user, sys_mod_count="0")
        else:
            row["sys_mod_count"] = str(int(row["sys_mod_count"] or 0) + 1)
        self._store(table_name, row)
        for element, text in notes:
            entry_id = self._new_sys_id()
            self._store("sys_journal_field", {
                "sys_id": entry_id, "element": element, "element_id": row["sys_id"],
                "name": table_name, "value": text, "sys_created_on": now, "sys_created_by": user})
        if table_name == "incident":
            self._announce(row, "insert" if insert else "update")
        return row

    def _incident_rules(self, row: dict[str, str], before: dict[str, str] | None,
                        user: str, now: str) -> None:
        """The business rules and data policy of a standard incident table."""
        if before is None:
            row["number"] = f"INC{self._next_number:07d}"
            row.update(sys_class_name="incident", opened_at=now,
                       opened_by=self._user_reference(user))
        row["state"] = row["state"] or "1"
        row["impact"] = row["impact"] or "3"
        row["urgency"] = row["urgency"] or "3"
        row["priority"] = priority_for(row["impact"], row["urgency"]) or row["priority"] or "5"
        row["incident_state"] = row["state"]
        row["active"] = "false" if row["state"] in INACTIVE_STATES else "true"
        if row["state"] in RESOLVED_STATES:
            missing = [self.tables["incident"].fields[f].label for f in ("close_code", "close_notes")
                       if not row[f].strip()]
            if missing:
                raise HTTPError(403, "Operation Failed", "Data Policy Exception: The following "
                                f"fields are mandatory: {', '.join(missing)}")
            if not row["resolved_at"]:
                row.update(resolved_at=now, resolved_by=self._user_reference(user))
            if row["state"] == "7" and not row["closed_at"]:
                row.update(closed_at=now, closed_by=self._user_reference(user))
        else:
            row.update(resolved_at="", resolved_by="", closed_at="", closed_by="")
        if before is None:
            self._next_number += 1

    def _announce(self, row: dict[str, str], operation: str) -> None:
        headers = {"User-Agent": WEBHOOK_USER_AGENT}
        if self.webhooks.secret:
            headers[WEBHOOK_SECRET_HEADER] = self.webhooks.secret
        self.webhooks.send({"sys_id": row["sys_id"], "number": row["number"],
                            "sys_updated_on": row["sys_updated_on"],
                            "sys_mod_count": row["sys_mod_count"], "operation": operation,
                            "table": "incident"}, headers)

    def _resolve_reference(self, table: str, value: str) -> str:
        """A sys_id stays; a display value (or a user's user_name) naming exactly one record
        becomes its sys_id; anything else is stored as given, a broken reference."""
        rows = self._records[table]
        if value == "" or value in rows:
            return value
        keys = [self.tables[table].display_field] + (["user_name"] if table == "sys_user" else [])
        for key in keys:
            found = [r["sys_id"] for r in rows.values() if r.get(key) == value]
            if len(found) == 1:
                return found[0]
        return value

    def _user_reference(self, user_name: str) -> str:
        found = [r["sys_id"] for r in self._records["sys_user"].values() if r["user_name"] == user_name]
        return found[0] if found else ""

    def _blank(self, table: str) -> dict[str, str]:
        row = dict.fromkeys(self.tables[table].fields, "")
        if "active" in row and table != "incident":
            row["active"] = "true"
        return row

    def _new_sys_id(self) -> str:
        while True:
            candidate = f"{self._ids.getrandbits(128):032x}"
            if not any(candidate in rows for rows in self._records.values()):
                return candidate

    def _now(self) -> str:
        return self.clock.now().astimezone(timezone.utc).strftime(TIME_FORMAT)

    def _existing(self, table: str, sys_id: str) -> dict[str, str]:
        row = self._records[table].get(sys_id)
        if row is None:
            raise HTTPError(404, "No Record found", NOT_FOUND_DETAIL)
        return row

    # -- HTTP --------------------------------------------------------------------------------
    def _add_routes(self) -> None:
        self.route("GET", TABLE_PATH, self._list)
        self.route("POST", TABLE_PATH, self._create)
        one = TABLE_PATH + r"/(?P<sys_id>[^/]+)"
        self.route("GET", one, self._get_one)
        self.route("PUT", one, self._update)
        self.route("PATCH", one, self._update)
        self.route("DELETE", one, self._delete)
        self.route("POST", r"/_sim/human/incident", self._human_create_endpoint)
        self.route("POST", r"/_sim/human/incident/(?P<sys_id>[^/]+)", self._human_update_endpoint)

    def _api_user(self, request: Request) -> str:
        header = request.headers.get("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode()
                name, _, password = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                name, password = "", ""
            expected = self.users.get(name)
            if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
                return name
        raise HTTPError(401, "User Not Authenticated", "Required to provide Auth information",
                        headers={"WWW-Authenticate": 'Basic realm="Service-now"'})

    def _table(self, request: Request) -> Table:
        table = self.tables.get(request.params["table"])
        if table is None:
            raise HTTPError(400, f"Invalid table {request.params['table']}")
        return table

    def _payload(self, request: Request) -> dict[str, Any]:
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            raise HTTPError(400, "Exception while reading request",
                            "The payload is not valid JSON.") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "Exception while reading request", "The payload must be a JSON object.")
        return data

    def _list(self, request: Request) -> Response:
        table = self._table(request)
        limit = self._int_arg(request, "sysparm_limit", 10000, minimum=1)
        offset = self._int_arg(request, "sysparm_offset", 0, minimum=0)
        user = self._api_user(request)
        with self.lock:
            query = self._parse_query(table, request.arg("sysparm_query", ""), self._user_zone(user))
            rows = self._select(table, query)
            page = self._render_all(table, rows[offset:offset + limit], request)
        headers = {}
        if not _as_bool(request.arg("sysparm_no_count")):
            headers["X-Total-Count"] = str(len(rows))
        if not _as_bool(request.arg("sysparm_suppress_pagination_header")):
            headers["Link"] = self._link_header(request, len(rows), limit, offset)
        return Response(200, {"result": page}, headers)

    def _get_one(self, request: Request) -> Response:
        table = self._table(request)
        with self.lock:
            row = self._existing(table.name, request.params["sys_id"])
            return Response(200, {"result": self._render(table, row, request)})

    def _create(self, request: Request) -> Response:
        table = self._table(request)
        self._refuse_journal_write(table)
        payload = self._payload(request)
        user = self._api_user(request)
        with self.lock:
            row = self._write(table.name, None, payload, user)
            return Response(201, {"result": self._render(table, row, request)},
                            {"Location": self._record_url(request, table.name, row["sys_id"])})

    def _update(self, request: Request) -> Response:
        table = self._table(request)
        self._refuse_journal_write(table)
        payload = self._payload(request)
        user = self._api_user(request)
        with self.lock:
            row = self._write(table.name, self._existing(table.name, request.params["sys_id"]),
                              payload, user)
            return Response(200, {"result": self._render(table, row, request)})

    def _delete(self, request: Request) -> Response:
        table = self._table(request)
        self._refuse_journal_write(table)
        with self.lock:
            self._existing(table.name, request.params["sys_id"])
            self._remove(table.name, request.params["sys_id"])
        return Response(204)

    @staticmethod
    def _refuse_journal_write(table: Table) -> None:
        if table.name == "sys_journal_field":
            raise HTTPError(403, "Operation Failed", "ACL Exception Insert Failed due to security "
                            "constraints; write work_notes or comments on the record instead")

    def _human_create_endpoint(self, request: Request) -> Response:
        user, fields = self._human_body(request)
        with self.lock:
            row = self._write("incident", None, fields, user)
            return Response(201, {"result": self._render(self.tables["incident"], row, request)})

    def _human_update_endpoint(self, request: Request) -> Response:
        user, fields = self._human_body(request)
        with self.lock:
            row = self._write("incident", self._existing("incident", request.params["sys_id"]),
                              fields, user)
            return Response(200, {"result": self._render(self.tables["incident"], row, request)})

    def _human_body(self, request: Request) -> tuple[str, dict[str, Any]]:
        body = self._payload(request)
        user, fields = body.get("user", DEFAULT_HUMAN), body.get("fields")
        if not isinstance(user, str) or not user or not isinstance(fields, dict):
            raise HTTPError(400, "Invalid human edit",
                            'expected {"user": "<user_name>", "fields": {"<field>": "<value>", ...}}')
        return user, fields

    @staticmethod
    def _int_arg(request: Request, name: str, default: int, minimum: int) -> int:
        raw = request.arg(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(400, f"Invalid {name}", f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise HTTPError(400, f"Invalid {name}", f"{name} must be at least {minimum}, got {value}")
        return value

    def _user_zone(self, user: str) -> ZoneInfo:
        """The API user's time zone, in which javascript:gs.dateGenerate values are read."""
        name = next((r["time_zone"] for r in self._records["sys_user"].values()
                     if r["user_name"] == user and r["time_zone"]), "UTC")
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo("UTC")

    @staticmethod
    def _origin(request: Request) -> str:
        return f"http://{request.headers.get('Host') or '127.0.0.1'}"

    def _record_url(self, request: Request, table: str, sys_id: str) -> str:
        return f"{self._origin(request)}/api/now/table/{table}/{sys_id}"

    def _link_header(self, request: Request, total: int, limit: int, offset: int) -> str:
        base = {name: values[0] for name, values in request.query.items()}
        last = max(0, (total - 1) // limit * limit)
        links = [("first", 0)]
        if offset > 0:
            links.append(("prev", max(0, offset - limit)))
        if offset + limit < total:
            links.append(("next", offset + limit))
        links.append(("last", last))
        parts = []
        for rel, at in links:
            params = urlencode({**base, "sysparm_limit": str(limit), "sysparm_offset": str(at)})
            parts.append(f'<{self._origin(request)}{request.path}?{params}>;rel="{rel}"')
        return ",".join(parts)

    # -- reading -----------------------------------------------------------------------------
    def _resolve_path(self, table: Table, dotted: str) -> tuple[tuple[str, ...], Field] | None:
        """The field a (possibly dot-walked) name denotes, or None when the table lacks it."""
        names = tuple(dotted.split("."))
        current = table
        for index, name in enumerate(names):
            field = current.fields.get(name)
            if field is None:
                return None
            if index < len(names) - 1:
                if field.kind != "reference":
                    return None
                current = self.tables[field.reference or ""]
        return names, field

    def _walk(self, table: Table, row: dict[str, str], path: tuple[str, ...]) -> str:
        for name in path[:-1]:
            field = table.fields[name]
            table = self.tables[field.reference or ""]
            row = self._records[table.name].get(row.get(name, ""), {})
        return row.get(path[-1], "")

    def _parse_query(self, table: Table, text: str, zone: ZoneInfo) -> Query:
        """Parse an encoded query; conditions on fields the table lacks are dropped."""
        query = Query(groups=[], order=[])
        for group_text in text.replace("^^", _ESCAPED_CARET).split("^NQ"):
            clauses: list[list[Condition]] = []
            for token in group_text.split("^"):
                token = token.replace(_ESCAPED_CARET, "^")
                if token.startswith("ORDERBYDESC") or token.startswith("ORDERBY"):
                    descending = token.startswith("ORDERBYDESC")
                    resolved = self._resolve_path(table, token[11 if descending else 7:])
                    if resolved:
                        query.order.append((resolved[0], resolved[1].kind, descending))
                    continue
                is_or = token.startswith("OR")
                condition = self._parse_condition(table, token[2:] if is_or else token, zone)
                if condition is None:
                    continue
                if is_or and clauses:
                    clauses[-1].append(condition)
                else:
                    clauses.append([condition])
            if clauses:
                query.groups.append(clauses)
        return query

    def _parse_condition(self, table: Table, token: str, zone: ZoneInfo) -> Condition | None:
        match = _CONDITION.match(token)
        if not match:
            return None
        resolved = self._resolve_path(table, match["field"])
        if resolved is None:
            return None
        path, field = resolved
        value = match["value"]
        if field.kind == "datetime":
            value = "@".join(self._normalise_date(part, zone) for part in value.split("@"))
        return Condition(path, field.kind, match["op"], value)

    @staticmethod
    def _normalise_date(value: str, zone: ZoneInfo) -> str:
        """``javascript:gs.dateGenerate('2026-01-01','12:00:00')`` (user's zone) -> UTC internal."""
        match = _DATE_GENERATE.match(value.strip())
        if not match:
            return value
        clock_time = match["time1"] or match["time2"] or "00:00:00"
        local = datetime.strptime(f"{match['date']} {clock_time}", TIME_FORMAT).replace(tzinfo=zone)
        return local.astimezone(timezone.utc).strftime(TIME_FORMAT)

    def _getter(self, table: Table, path: tuple[str, ...]) -> Any:
        """A function reading a (possibly dot-walked) field of a row; a plain field is one dict
        lookup, which matters when a query scans every record."""
        if len(path) == 1:
            name = path[0]
            return lambda row: row.get(name, "")
        return lambda row: self._walk(table, row, path)

    def _select(self, table: Table, query: Query) -> list[dict[str, str]]:
        groups = [[[(self._getter(table, c.path), c) for c in clause] for clause in group]
                  for group in query.groups]

        def selected(row: dict[str, str]) -> bool:
            """Any group whose every clause has a matching condition (plain loops: this runs
            once per record and condition, and generators cost more than the test)."""
            for group in groups:
                for clause in group:
                    for get, condition in clause:
                        if _matches(condition, get(row)):
                            break
                    else:
                        break                   # no condition of this clause matched
                else:
                    return True
            return False

        candidates = self._indexed_candidates(table.name, query)
        rows = candidates if candidates is not None else list(self._records[table.name].values())
        if groups:
            rows = list(filter(selected, rows))
        for path, kind, descending in reversed(query.order):
            get = self._getter(table, path)

            def key(row: dict[str, str], get=get, kind=kind) -> tuple:
                value = get(row)
                if kind == "integer":
                    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)
                return (0, 0, value)
            rows.sort(key=key, reverse=descending)
        return rows

    def _indexed_candidates(self, table: str, query: Query) -> list[dict[str, str]] | None:
        """The records an index narrows the query to, in table order (the full conditions are still
        tested on them); None when some OR-group has no indexed "=" or "IN" condition of its own."""
        if not query.groups:
            return None
        found: list[str] = []
        for group in query.groups:
            ids = self._indexed_ids(table, group)
            if ids is None:
                return None
            found += ids
        return self._in_table_order(table, found)

    def _indexed_ids(self, table: str, group: list[list[Condition]]) -> list[str] | None:
        for clause in group:
            if len(clause) != 1:
                continue                        # an OR of conditions: no single index answers it
            condition = clause[0]
            if len(condition.path) != 1 or condition.op not in ("=", "IN"):
                continue
            values = condition.value.split(",") if condition.op == "IN" else [condition.value]
            name = condition.path[0]
            if name == "sys_id":
                rows = self._records[table]
                return [value for value in values if value in rows]
            index = self._indexes[table].get(name)
            if index is not None:
                return [sys_id for value in values for sys_id in index.get(value, ())]
        return None

    def _render(self, table: Table, row: dict[str, str], request: Request) -> dict[str, Any]:
        """A record as the Table API shows it under the request's sysparm_* options."""
        return self._render_all(table, [row], request)[0]

    def _render_all(self, table: Table, rows: Sequence[dict[str, str]], request: Request
                    ) -> list[dict[str, Any]]:
        """Records as the Table API shows them; the options and fields are read once per answer."""
        mode = (request.arg("sysparm_display_value") or "false").lower()
        mode = mode if mode in ("true", "all") else "false"
        links = not _as_bool(request.arg("sysparm_exclude_reference_link"))
        wanted = request.arg("sysparm_fields")
        names = (list(dict.fromkeys(n.strip() for n in wanted.split(",") if n.strip()))
                 if wanted else list(table.fields))
        columns = [(name, resolved) for name in names
                   if (resolved := self._resolve_path(table, name)) is not None]
        rendered = []
        for row in rows:
            result: dict[str, Any] = {}
            for name, (path, field) in columns:
                value = row.get(name, "") if len(path) == 1 else self._walk(table, row, path)
                result[name] = self._render_value(field, value, row, path, mode, links, request)
            rendered.append(result)
        return rendered

    def _render_value(self, field: Field, value: str, row: dict[str, str], path: tuple[str, ...],
                      mode: str, links: bool, request: Request) -> Any:
        if field.kind == "journal":
            if mode == "false":
                return ""
            display = self._journal_text(row["sys_id"], path[-1])
            return display if mode == "true" else {"display_value": display, "value": ""}
        if field.kind == "reference":
            if value == "":
                return {"display_value": "", "value": ""} if mode == "all" else ""
            target = self.tables[field.reference or ""]
            display = self._records[target.name].get(value, {}).get(target.display_field, "")
            link = self._record_url(request, target.name, value)
            if mode == "false":
                return {"link": link, "value": value} if links else value
            if mode == "true":
                return {"display_value": display, "link": link} if links else display
            shown = {"display_value": display, "value": value}
            return {**shown, "link": link} if links else shown
        display = (field.choices or {}).get(value, value)
        return {"false": value, "true": display, "all": {"display_value": display, "value": value}}[mode]

    def _journal_text(self, sys_id: str, element: str) -> str:
        """A journal field's display value: its entries, newest first, as the form shows them."""
        label = self.tables["incident"].fields[element].label
        names = {r["user_name"]: r["name"] for r in self._records["sys_user"].values()}
        entries = [r for r in self._rows_where("sys_journal_field", "element_id", sys_id)
                   if r["element"] == element]
        return "".join(f"{e['sys_created_on']} - {names.get(e['sys_created_by'], e['sys_created_by'])}"
                       f" ({label})\n{e['value']}\n\n" for e in reversed(entries))
