"""A Jira simulator faithful enough that the real ``jira`` client cannot tell it from Jira.

It answers the REST v2 paths the ``jira`` library and syncd use (v3 and ``latest`` too), in either
deployment flavour: ``Cloud`` (``/search/jql`` with ``nextPageToken``, ``accountId`` users, the old
``/search`` answering 410) or ``Server`` (``/search`` with ``startAt``/``total``, ``name`` users).
Shapes, status codes and error texts follow /work/shared/reference/jira.md and Atlassian's docs.

People editing in the UI are simulated through :meth:`JiraSimulator.human_create` and friends (and
``/_sim/human/...``); they take the same code path as API writes, so changelog, ``updated`` and
webhooks behave the same whoever made the change.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from syncd.clock import Clock
from syncd.simulators.accounts import JIRA_SIGNATURE_HEADER, JIRA_USERS, jira_credentials
from syncd.simulators.base import HTTPError, Request, Response, Simulator

API = r"/rest/api/(?P<version>2|3|latest)"
ISSUE = API + r"/issue/(?P<issue>[^/]+)"

# Jira's three status categories, keyed by their ``key``.
STATUS_CATEGORIES = {
    "new": {"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"},
    "indeterminate": {"id": 4, "key": "indeterminate", "colorName": "yellow", "name": "In Progress"},
    "done": {"id": 3, "key": "done", "colorName": "green", "name": "Done"},
}

DEFAULT_WORKFLOW: dict[str, Any] = {
    "statuses": [
        {"id": "10000", "name": "To Do", "category": "new"},
        {"id": "3", "name": "In Progress", "category": "indeterminate"},
        {"id": "10001", "name": "Done", "category": "done"},
    ],
    "transitions": [
        {"id": "11", "name": "To Do", "from": ["In Progress"], "to": "To Do"},
        {"id": "21", "name": "In Progress", "from": ["To Do"], "to": "In Progress"},
        {"id": "31", "name": "Done", "from": ["To Do", "In Progress"], "to": "Done"},
        {"id": "41", "name": "Reopen", "from": ["Done"], "to": "To Do"},
        {"id": "51", "name": "Back to In Progress", "from": ["Done"], "to": "In Progress"},
    ],
}

PRIORITIES = (("1", "Highest", "#d04437"), ("2", "High", "#f15C75"), ("3", "Medium", "#f79232"),
              ("4", "Low", "#707070"), ("5", "Lowest", "#999999"))
RESOLUTIONS = (("10000", "Done", "Work has been completed on this issue."),
               ("10001", "Won't Do", "This issue won't be actioned."),
               ("10002", "Duplicate", "The problem is a duplicate of an existing issue."),
               ("10003", "Cannot Reproduce", "All attempts at reproducing this issue failed."))
PROJECT_ROLES = ("Administrators", "Developers", "Users")

DEFAULT_CUSTOM_FIELDS: tuple[dict[str, str], ...] = (
    {"id": "customfield_10010", "name": "Customer Impact", "type": "string",
     "custom": "com.atlassian.jira.plugin.system.customfieldtypes:textarea"},
    {"id": "customfield_10011", "name": "Incident ID", "type": "string",
     "custom": "com.atlassian.jira.plugin.system.customfieldtypes:textfield"},
)

# System fields as /rest/api/2/field lists them: id, name, clause names, schema, navigable.
SYSTEM_FIELDS: tuple[tuple[str, str, tuple[str, ...], dict[str, Any] | None], ...] = (
    ("issuekey", "Key", ("id", "issue", "issuekey", "key"), None),
    ("summary", "Summary", ("summary",), {"type": "string", "system": "summary"}),
    ("description", "Description", ("description",), {"type": "string", "system": "description"}),
    ("issuetype", "Issue Type", ("issuetype", "type"), {"type": "issuetype", "system": "issuetype"}),
    ("project", "Project", ("project",), {"type": "project", "system": "project"}),
    ("status", "Status", ("status",), {"type": "status", "system": "status"}),
    ("priority", "Priority", ("priority",), {"type": "priority", "system": "priority"}),
    ("assignee", "Assignee", ("assignee",), {"type": "user", "system": "assignee"}),
    ("reporter", "Reporter", ("reporter",), {"type": "user", "system": "reporter"}),
    ("creator", "Creator", ("creator",), {"type": "user", "system": "creator"}),
    ("labels", "Labels", ("labels",), {"type": "array", "items": "string", "system": "labels"}),
    ("resolution", "Resolution", ("resolution",), {"type": "resolution", "system": "resolution"}),
    ("resolutiondate", "Resolved", ("resolved", "resolutiondate"),
     {"type": "datetime", "system": "resolutiondate"}),
    ("created", "Created", ("created", "createdDate"), {"type": "datetime", "system": "created"}),
    ("updated", "Updated", ("updated", "updatedDate"), {"type": "datetime", "system": "updated"}),
    ("comment", "Comment", ("comment",), {"type": "comments-page", "system": "comment"}),
)
# Fields a create or edit may set directly (status and resolution move only through transitions).
EDITABLE_SYSTEM_FIELDS = ("summary", "description", "priority", "assignee", "labels")

ERROR_NOT_FOUND = "Issue does not exist or you do not have permission to see it."
SEARCH_REMOVED = ("The requested API has been removed. Please migrate to the /rest/api/3/search/jql "
                  "API. A full migration guideline is available at "
                  "https://developer.atlassian.com/changelog/#CHANGE-2046")
UNBOUNDED_JQL = "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."


def jira_time(dt: datetime) -> str:
    """Jira's timestamp format: ``2026-01-01T10:00:00.000+0000`` (milliseconds, no colon)."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+0000"


@functools.lru_cache(maxsize=1 << 16)
def parse_jira_time(text: str) -> datetime:
    """A stored ``jira_time`` value as aware UTC. Cached: every search compares every issue's
    ``updated``, and strptime was most of a search's cost."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(timezone.utc)


class JiraError(HTTPError):
    """An error answered in Jira's shape, with per-field ``errors`` besides ``errorMessages``."""

    def __init__(self, status: int, messages: Sequence[str] = (),
                 errors: Mapping[str, str] | None = None):
        super().__init__(status, "; ".join([*messages, *(errors or {}).values()]))
        self.messages = list(messages)
        self.errors = dict(errors or {})


# --------------------------------------------------------------------------------------------
# JQL: a tokenizer, a recursive-descent parser into a small tree, and an evaluator.
# --------------------------------------------------------------------------------------------

VALID_OPERATORS = ("'=', '!=', '<', '>', '<=', '>=', '~', '!~', 'IN', 'NOT IN', 'IS' and "
                   "'IS NOT'")
KEYWORDS = {"AND", "OR", "NOT", "IN", "IS", "EMPTY", "NULL", "ORDER", "BY", "ASC", "DESC"}


class JQLError(JiraError):
    def __init__(self, message: str):
        super().__init__(400, [message])


@dataclass(frozen=True)
class Token:
    kind: str        # "word", "string", "op", "(", ")", ",", "end"
    text: str
    pos: int         # 1-based character position, as Jira reports it

    @property
    def keyword(self) -> str | None:
        return self.text.upper() if self.kind == "word" and self.text.upper() in KEYWORDS else None


def tokenize_jql(jql: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(jql):
        char = jql[i]
        if char.isspace():
            i += 1
        elif char in "\"'":
            end = i + 1
            text = []
            while end < len(jql) and jql[end] != char:
                if jql[end] == "\\" and end + 1 < len(jql):
                    end += 1
                text.append(jql[end])
                end += 1
            if end >= len(jql):
                raise JQLError(f"Error in the JQL Query: The quoted string '{''.join(text)}' has "
                               f"not been completed. (line 1, character {i + 1})")
            tokens.append(Token("string", "".join(text), i + 1))
            i = end + 1
        elif char in "(),":
            tokens.append(Token(char, char, i + 1))
            i += 1
        elif char in "=!<>~":
            op = jql[i:i + 2] if jql[i:i + 2] in ("!=", "<=", ">=", "!~") else char
            if op == "!":
                raise JQLError(f"Error in the JQL Query: The character '!' is a reserved JQL "
                               f"character. (line 1, character {i + 1})")
            tokens.append(Token("op", op, i + 1))
            i += len(op)
        else:
            match = re.compile(r"[^\s()=!<>~,\"']+").match(jql, i)
            assert match is not None
            tokens.append(Token("word", match.group(), i + 1))
            i = match.end()
    tokens.append(Token("end", "", len(jql) + 1))
    return tokens


@dataclass(frozen=True)
class Clause:
    field: str
    operator: str            # "=", "!=", "<", ">", "<=", ">=", "~", "!~", "in", "not in", "is", "is not"
    values: tuple[Any, ...]  # literal strings, ("EMPTY",) for IS, or ("currentUser()",)


@dataclass(frozen=True)
class BoolNode:
    op: str                  # "and", "or", "not"
    children: tuple[Any, ...]


@dataclass(frozen=True)
class JQLQuery:
    where: Clause | BoolNode | None
    order_by: tuple[tuple[str, bool], ...]      # (field, descending)


class JQLParser:
    """query := [or] [ORDER BY field [ASC|DESC] {, field [ASC|DESC]}]."""

    def __init__(self, jql: str):
        self.tokens = tokenize_jql(jql)
        self.i = 0

    def parse(self) -> JQLQuery:
        where = None
        if self.peek.kind != "end" and self.peek.keyword != "ORDER":
            where = self.parse_or()
        order_by: list[tuple[str, bool]] = []
        if self.peek.keyword == "ORDER":
            self.next()
            if self.peek.keyword != "BY":
                raise self.expected("'by'")
            self.next()
            while True:
                token = self.next()
                if token.kind not in ("word", "string") or token.keyword:
                    raise self.expected_field(token)
                descending = False
                if self.peek.keyword in ("ASC", "DESC"):
                    descending = self.next().keyword == "DESC"
                order_by.append((token.text, descending))
                if self.peek.kind != ",":
                    break
                self.next()
        if self.peek.kind != "end":
            raise self.expected("either 'OR' or 'AND'")
        return JQLQuery(where, tuple(order_by))

    @property
    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def expected(self, what: str) -> JQLError:
        token = self.peek
        if token.kind == "end":
            return JQLError(f"Error in the JQL Query: Expecting {what} before the end of the query.")
        return JQLError(f"Error in the JQL Query: Expecting {what} but got '{token.text}'. "
                        f"(line 1, character {token.pos})")

    @staticmethod
    def expected_field(token: Token) -> JQLError:
        if token.kind == "end":
            return JQLError("Error in the JQL Query: Expecting a field name at the end of the query.")
        return JQLError(f"Error in the JQL Query: Expecting a field name but got '{token.text}'. "
                        f"(line 1, character {token.pos})")

    def parse_or(self):
        children = [self.parse_and()]
        while self.peek.keyword == "OR":
            self.next()
            children.append(self.parse_and())
        return children[0] if len(children) == 1 else BoolNode("or", tuple(children))

    def parse_and(self):
        children = [self.parse_not()]
        while self.peek.keyword == "AND":
            self.next()
            children.append(self.parse_not())
        return children[0] if len(children) == 1 else BoolNode("and", tuple(children))

    def parse_not(self):
        if self.peek.keyword == "NOT":
            self.next()
            return BoolNode("not", (self.parse_not(),))
        if self.peek.kind == "(":
            self.next()
            inner = self.parse_or()
            if self.peek.kind != ")":
                raise self.expected("')'")
            self.next()
            return inner
        return self.parse_clause()

    def parse_clause(self) -> Clause:
        token = self.next()
        if token.kind not in ("word", "string") or token.keyword:
            raise self.expected_field(token)
        field = token.text
        op_token = self.peek
        if op_token.kind == "op":
            self.next()
            return Clause(field, op_token.text, (self.parse_value(),))
        keyword = op_token.keyword
        if keyword == "IN" or keyword == "NOT":
            self.next()
            if keyword == "NOT":
                if self.peek.keyword != "IN":
                    raise self.expected(f"operator. The valid operators are {VALID_OPERATORS}")
                self.next()
            return Clause(field, "in" if keyword == "IN" else "not in", self.parse_list())
        if keyword == "IS":
            self.next()
            operator = "is"
            if self.peek.keyword == "NOT":
                self.next()
                operator = "is not"
            if self.peek.keyword not in ("EMPTY", "NULL"):
                raise self.expected("'EMPTY' or 'NULL'")
            self.next()
            return Clause(field, operator, ("EMPTY",))
        if op_token.kind == "end":
            raise JQLError(f"Error in the JQL Query: Expecting operator before the end of the "
                           f"query. The valid operators are {VALID_OPERATORS}.")
        raise JQLError(f"Error in the JQL Query: Expecting operator but got '{op_token.text}'. "
                       f"The valid operators are {VALID_OPERATORS}. (line 1, character "
                       f"{op_token.pos})")

    def parse_value(self) -> Any:
        token = self.peek
        if token.kind == "string":
            self.next()
            return token.text
        if token.kind == "word":
            if token.keyword in ("EMPTY", "NULL"):
                self.next()
                return "EMPTY"
            if token.keyword:
                raise self.expected("either a value, list or function")
            self.next()
            if self.peek.kind == "(":          # a function call: name()
                self.next()
                if self.peek.kind != ")":
                    raise self.expected("')'")
                self.next()
                return Function(token.text)
            return token.text
        raise self.expected("either a value, list or function")

    def parse_list(self) -> tuple[Any, ...]:
        if self.peek.kind != "(":
            raise self.expected("'('")
        self.next()
        values = [self.parse_value()]
        while self.peek.kind == ",":
            self.next()
            values.append(self.parse_value())
        if self.peek.kind != ")":
            raise self.expected("')'")
        self.next()
        return tuple(values)


@dataclass(frozen=True)
class Function:
    name: str


def parse_jql(jql: str) -> JQLQuery:
    return JQLParser(jql).parse()


DATE_FORMATS = (("%Y/%m/%d %H:%M", "minute"), ("%Y-%m-%d %H:%M", "minute"),
                ("%Y/%m/%d", "day"), ("%Y-%m-%d", "day"))
RELATIVE_DATE = re.compile(r"([-+]?)(\d+)([wdhm])\Z")
DATE_HELP = ("Valid formats include: 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', "
             "'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'.")


@functools.lru_cache(maxsize=1024)
def _absolute_jql_date(value: str) -> tuple[datetime, timedelta] | None:
    """An absolute JQL date literal and its precision, None when it is not one (cached: a search
    evaluates the same literal once per issue)."""
    for fmt, precision in DATE_FORMATS:
        try:
            start = datetime.strptime(value, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        return start, timedelta(minutes=1) if precision == "minute" else timedelta(days=1)
    return None


def parse_jql_date(value: str, field: str, now: datetime) -> tuple[datetime, timedelta]:
    """A JQL date literal in the searching user's zone (UTC here) and its precision."""
    absolute = _absolute_jql_date(value)
    if absolute is not None:
        return absolute
    match = RELATIVE_DATE.match(value.strip())
    if match:
        sign, amount, unit = match.groups()
        delta = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1),
                 "m": timedelta(minutes=1)}[unit] * int(amount)
        moment = now - delta if sign == "-" else now + delta
        return moment.replace(second=0, microsecond=0), timedelta(minutes=1)
    raise JQLError(f"Date value '{value}' for field '{field}' is invalid. {DATE_HELP}")


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------

class JiraSimulator(Simulator):
    """Jira Cloud or Server/Data Center over loopback HTTP, with a scripted 'person' API."""

    def __init__(self, *, deployment: str = "Cloud", users: Sequence[Mapping[str, str]] | None = None,
                 projects: Sequence[str] = ("OPS",),
                 issue_types: Sequence[str] = ("Task", "Bug", "Incident"),
                 workflow: Mapping[str, Any] | None = None,
                 custom_fields: Sequence[Mapping[str, str]] = DEFAULT_CUSTOM_FIELDS,
                 human_user: str = "alice", state_file: str | None = None,
                 webhook_url: str | None = None, webhook_secret: str | None = None,
                 clock: Clock | None = None, seed: int = 0):
        super().__init__(clock=clock, seed=seed, state_file=state_file)
        if deployment not in ("Cloud", "Server"):
            raise ValueError(f"deployment must be 'Cloud' or 'Server', got {deployment!r}")
        if not projects:
            raise ValueError("projects: at least one project key is needed")
        self.deployment = deployment
        self.users = [self._user_record(u) for u in (users or JIRA_USERS)]
        self.projects = [{"id": str(10000 + n), "key": key, "name": f"{key.title()} project"}
                         for n, key in enumerate(projects)]
        self.issue_types = [{"id": str(10001 + n), "name": name} for n, name in enumerate(issue_types)]
        self.statuses, self.transitions = self._load_workflow(workflow or DEFAULT_WORKFLOW)
        self.custom_fields = [dict(f) for f in custom_fields]
        self.human_user = human_user
        self._find_user(human_user, role="human_user")
        self._ids = random.Random(seed)
        self.webhooks.configure(webhook_url, webhook_secret)
        self.reset_state()
        self._register_routes()

    @property
    def cloud(self) -> bool:
        return self.deployment == "Cloud"

    def credentials(self) -> list[str]:
        return jira_credentials(self.users, self.deployment, self.webhooks.secret)

    # -- configuration ------------------------------------------------------------------------
    @staticmethod
    def _user_record(user: Mapping[str, str]) -> dict[str, str]:
        if not user.get("name"):
            raise ValueError(f"users: every user needs a 'name', got {dict(user)!r}")
        record = {"displayName": user["name"], "emailAddress": f"{user['name']}@example.com",
                  **user}
        record.setdefault("accountId",
                          "5b10" + hashlib.sha1(user["name"].encode()).hexdigest()[:20])
        return record

    @staticmethod
    def _load_workflow(workflow: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
        statuses = [dict(s) for s in workflow.get("statuses", ())]
        if not statuses:
            raise ValueError("workflow.statuses: at least one status is needed; the first is initial")
        names = {s["name"] for s in statuses}
        for status in statuses:
            if status.get("category") not in STATUS_CATEGORIES:
                raise ValueError(f"workflow.statuses[{status['name']}].category must be one of "
                                 f"{', '.join(STATUS_CATEGORIES)}")
        transitions = [dict(t) for t in workflow.get("transitions", ())]
        for transition in transitions:
            for name in [transition["to"], *transition.get("from", ())]:
                if name not in names:
                    raise ValueError(f"workflow.transitions[{transition['id']}] names unknown "
                                     f"status {name!r}")
        return statuses, transitions

    # -- Simulator hooks ---------------------------------------------------------------------
    def error_response(self, error: HTTPError) -> Response:
        if isinstance(error, JiraError):
            body = {"errorMessages": error.messages, "errors": error.errors}
        elif error.status == 401 and self.cloud:
            body = {"message": error.message, "status-code": 401}
        else:
            message = f"{error.message}: {error.detail}" if error.detail else error.message
            body = {"errorMessages": [message], "errors": {}}
        return Response(error.status, body, dict(error.headers))

    def authenticate(self, request: Request) -> None:
        if self._authenticated_user(request) is not None:
            return
        if self.cloud:
            raise HTTPError(401, "Client must be authenticated to access this resource.")
        raise HTTPError(401, "You are not authenticated. Authentication required to perform this "
                             "operation.", headers={"X-Seraph-LoginReason": "AUTHENTICATED_FAILED",
                                                    "WWW-Authenticate": 'BASIC realm="protected-area"'})

    def rate_limit_headers(self) -> dict[str, str]:
        reset = self.clock.now().astimezone(timezone.utc) + timedelta(minutes=1)
        if self.cloud:
            return {"X-RateLimit-Limit": "350", "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "X-RateLimit-NearLimit": "true", "RateLimit-Reason": "jira-quota-based"}
        return {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0",
                "X-RateLimit-FillRate": "10", "X-RateLimit-Interval-Seconds": "1"}

    def reset_state(self) -> None:
        with self.lock:
            self.issues: dict[str, dict[str, Any]] = {}      # by id
            self._ids_by_key: dict[str, str] = {}
            self._positions: dict[str, int] = {}             # id -> rank in self.issues
            self._added = 0
            self.next_issue_id = 10000
            self.next_number = {p["key"]: 1 for p in self.projects}
            self.next_comment_id = 10000
            self.next_history_id = 10000

    def state_to_json(self) -> Any:
        with self.lock:
            return {"issues": copy.deepcopy(self.issues), "next_issue_id": self.next_issue_id,
                    "next_number": dict(self.next_number), "next_comment_id": self.next_comment_id,
                    "next_history_id": self.next_history_id}

    STATE_KEYS = ("issues", "next_issue_id", "next_number", "next_comment_id", "next_history_id")

    def state_from_json(self, data: Any) -> None:
        missing = [k for k in self.STATE_KEYS if not isinstance(data, Mapping) or k not in data]
        if missing:
            raise ValueError(f"Jira simulator state {self.state_file or '(given data)'} lacks "
                             f"{', '.join(missing)}; delete the file to start empty")
        with self.lock:
            self.reset_state()
            for issue in copy.deepcopy(data["issues"]).values():
                self._add_issue(issue)
            self.next_issue_id = data["next_issue_id"]
            self.next_number.update(data["next_number"])
            self.next_comment_id = data["next_comment_id"]
            self.next_history_id = data["next_history_id"]

    # -- the issues and their indexes (by key, and the order a scan meets them) -------------
    def _add_issue(self, issue: dict[str, Any]) -> None:
        self._added += 1
        self._positions[issue["id"]] = self._added
        self._ids_by_key[issue["key"]] = issue["id"]
        self.issues[issue["id"]] = issue

    def _drop_issue(self, issue: dict[str, Any]) -> None:
        del self.issues[issue["id"]]
        del self._positions[issue["id"]]
        del self._ids_by_key[issue["key"]]

    def _by_key(self, key: str) -> dict[str, Any] | None:
        return self.issues.get(self._ids_by_key.get(key.upper(), ""))

    # -- lookups -----------------------------------------------------------------------------
    def _authenticated_user(self, request: Request) -> dict[str, str] | None:
        header = request.headers.get("Authorization") or ""
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                login, _, password = base64.b64decode(credentials).decode().partition(":")
            except ValueError:
                return None
            return next((u for u in self.users if password and u.get("password") == password
                         and login in (u["name"], u["emailAddress"])), None)
        if scheme.lower() == "bearer":
            return next((u for u in self.users if credentials and u.get("token") == credentials), None)
        return None

    def _actor(self, request: Request) -> dict[str, str]:
        user = self._authenticated_user(request)
        assert user is not None, "authenticate() lets only known users through"
        return user

    def _find_user(self, name: str, role: str = "user") -> dict[str, str]:
        for user in self.users:
            if name in (user["name"], user["accountId"], user["emailAddress"]):
                return user
        raise ValueError(f"{role}: no user {name!r}; known: {', '.join(u['name'] for u in self.users)}")

    def _issue(self, id_or_key: str) -> dict[str, Any]:
        issue = self.issues.get(id_or_key) or self._by_key(id_or_key)
        if issue is None:
            raise JiraError(404, [ERROR_NOT_FOUND])
        return issue

    def _project(self, ref: Any) -> dict[str, str] | None:
        if isinstance(ref, Mapping):
            ref = ref.get("id") or ref.get("key")
        return next((p for p in self.projects if str(ref) in (p["id"], p["key"])), None)

    def _issue_type(self, ref: Any) -> dict[str, str] | None:
        if isinstance(ref, Mapping):
            ref = ref.get("id") or ref.get("name")
        return next((t for t in self.issue_types if str(ref) in (t["id"], t["name"])), None)

    def _status(self, name: str) -> dict[str, Any]:
        return next(s for s in self.statuses if s["name"] == name)

    def _custom_field(self, ref: str) -> dict[str, str] | None:
        number = ref[3:-1] if ref.lower().startswith("cf[") and ref.endswith("]") else None
        for f in self.custom_fields:
            if ref in (f["id"], f["name"]) or (number and f["id"] == f"customfield_{number}"):
                return f
        return None

    # -- rendering ---------------------------------------------------------------------------
    def _url(self, version: str, path: str) -> str:
        return f"{self.base_url}/rest/api/{version}/{path}"

    def user_json(self, user: dict[str, str] | None, version: str = "2") -> dict[str, Any] | None:
        if user is None:
            return None
        avatar = {size: f"{self.base_url}/secure/useravatar?size={size}&ownerId={user['name']}"
                  for size in ("48x48", "24x24", "16x16", "32x32")}
        common = {"emailAddress": user["emailAddress"], "avatarUrls": avatar,
                  "displayName": user["displayName"], "active": True, "timeZone": "UTC"}
        if self.cloud:
            return {"self": self._url(version, f"user?accountId={user['accountId']}"),
                    "accountId": user["accountId"], **common, "accountType": "atlassian"}
        return {"self": self._url(version, f"user?username={user['name']}"), "name": user["name"],
                "key": user["name"], **common}

    def _user_by_name(self, name: str | None) -> dict[str, str] | None:
        return None if name is None else next(u for u in self.users if u["name"] == name)

    def status_json(self, name: str, version: str = "2") -> dict[str, Any]:
        status = self._status(name)
        category = STATUS_CATEGORIES[status["category"]]
        return {"self": self._url(version, f"status/{status['id']}"), "description": "",
                "iconUrl": f"{self.base_url}/images/icons/statuses/generic.png",
                "name": status["name"], "id": status["id"],
                "statusCategory": {"self": self._url(version, f"statuscategory/{category['id']}"),
                                   **category}}

    def _priority_json(self, name: str | None, version: str = "2") -> dict[str, Any] | None:
        for pid, pname, color in PRIORITIES:
            if pname == name:
                return {"self": self._url(version, f"priority/{pid}"), "statusColor": color,
                        "iconUrl": f"{self.base_url}/images/icons/priorities/{pname.lower()}.svg",
                        "name": pname, "id": pid}
        return None

    def _resolution_json(self, name: str | None, version: str = "2") -> dict[str, Any] | None:
        for rid, rname, description in RESOLUTIONS:
            if rname == name:
                return {"self": self._url(version, f"resolution/{rid}"), "id": rid,
                        "description": description, "name": rname}
        return None

    def _issue_type_json(self, issue_type: dict[str, str], version: str = "2") -> dict[str, Any]:
        return {"self": self._url(version, f"issuetype/{issue_type['id']}"), "id": issue_type["id"],
                "description": "", "name": issue_type["name"], "subtask": False,
                "iconUrl": f"{self.base_url}/images/icons/issuetypes/{issue_type['name'].lower()}.svg",
                "hierarchyLevel": 0}

    def _project_json(self, project: dict[str, str], version: str = "2",
                      full: bool = False) -> dict[str, Any]:
        short = {"self": self._url(version, f"project/{project['id']}"), "id": project["id"],
                 "key": project["key"], "name": project["name"], "projectTypeKey": "software",
                 "simplified": False}
        if not full:
            return short
        return {"expand": "description,lead,issueTypes,url,projectKeys,permissions,insight",
                **short, "description": "", "lead": self.user_json(self.users[0], version),
                "issueTypes": [self._issue_type_json(t, version) for t in self.issue_types],
                "style": "classic", "isPrivate": False}

    def _text_out(self, text: str | None, version: str) -> Any:
        """Rich text: a plain string on v2, an Atlassian Document Format document on v3."""
        if text is None or version != "3":
            return text
        return {"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": line}] if line else []}
            for line in text.split("\n")]}

    @staticmethod
    def _text_in(value: Any, field: str) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, Mapping) and value.get("type") == "doc":
            def text_of(node: Mapping[str, Any]) -> str:
                if node.get("type") == "text":
                    return node.get("text", "")
                if node.get("type") == "hardBreak":
                    return "\n"
                return "".join(text_of(child) for child in node.get("content", ()))
            return "\n".join(text_of(block) for block in value.get("content", ()))
        raise JiraError(400, errors={field: "Operation value must be a string"})

    def comment_json(self, issue: dict[str, Any], comment: dict[str, Any],
                     version: str = "2") -> dict[str, Any]:
        data = {"self": self._url(version, f"issue/{issue['id']}/comment/{comment['id']}"),
                "id": comment["id"],
                "author": self.user_json(self._user_by_name(comment["author"]), version),
                "body": self._text_out(comment["body"], version),
                "updateAuthor": self.user_json(self._user_by_name(comment["updateAuthor"]), version),
                "created": comment["created"], "updated": comment["updated"]}
        if comment.get("visibility"):
            data["visibility"] = dict(comment["visibility"])
        if self.cloud:
            data["jsdPublic"] = True
        return data

    def _history_json(self, history: dict[str, Any], version: str) -> dict[str, Any]:
        return {"id": history["id"],
                "author": self.user_json(self._user_by_name(history["author"]), version),
                "created": history["created"], "items": copy.deepcopy(history["items"])}

    def _all_fields(self, issue: dict[str, Any], version: str) -> dict[str, Any]:
        stored = issue["fields"]
        project = self._project(issue["project"])
        assert project is not None
        fields: dict[str, Any] = {
            "summary": stored["summary"],
            "description": self._text_out(stored.get("description"), version),
            "issuetype": self._issue_type_json(self._issue_type(stored["issuetype"]), version),
            "project": self._project_json(project, version),
            "status": self.status_json(stored["status"], version),
            "priority": self._priority_json(stored.get("priority"), version),
            "assignee": self.user_json(self._user_by_name(stored.get("assignee")), version),
            "reporter": self.user_json(self._user_by_name(stored.get("reporter")), version),
            "creator": self.user_json(self._user_by_name(stored.get("reporter")), version),
            "labels": list(stored.get("labels", [])),
            "resolution": self._resolution_json(stored.get("resolution"), version),
            "resolutiondate": stored.get("resolutiondate"),
            "created": issue["created"],
            "updated": issue["updated"],
            "statuscategorychangedate": issue["statuscategorychangedate"],
        }
        for custom in self.custom_fields:
            fields[custom["id"]] = stored.get(custom["id"])
        comments = [self.comment_json(issue, c, version) for c in issue["comments"]]
        fields["comment"] = {"comments": comments, "self": self._url(version, f"issue/{issue['id']}/comment"),
                             "maxResults": len(comments), "total": len(comments), "startAt": 0}
        return fields

    def issue_json(self, issue: dict[str, Any], version: str = "2", fields: Sequence[str] | None = None,
                   expand: Iterable[str] = (), properties: Sequence[str] = ()) -> dict[str, Any]:
        """An issue as GET /issue answers it; ``fields`` as the query parameter (default all)."""
        data: dict[str, Any] = {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": issue["id"], "self": self._url(version, f"issue/{issue['id']}"), "key": issue["key"]}
        selected = self._select_fields(self._all_fields(issue, version), fields)
        if selected is not None:
            data["fields"] = selected
        if "changelog" in expand:
            histories = [self._history_json(h, version) for h in issue["changelog"]]
            data["changelog"] = {"startAt": 0, "maxResults": len(histories),
                                 "total": len(histories), "histories": histories}
        if properties:
            wanted = issue["properties"] if "*all" in properties else {
                k: v for k, v in issue["properties"].items() if k in properties}
            data["properties"] = copy.deepcopy(wanted)
        return data

    @staticmethod
    def _select_fields(all_fields: dict[str, Any], fields: Sequence[str] | None) -> dict[str, Any] | None:
        """Apply a ``fields`` parameter: ``*all``, ``*navigable``, ids, and ``-id`` exclusions."""
        if fields is None:
            return all_fields
        wanted: set[str] = set()
        excluded: set[str] = set()
        for name in fields:
            if name in ("*all", "*navigable"):
                wanted.update(all_fields)
                if name == "*navigable":
                    wanted.discard("comment")
            elif name.startswith("-"):
                excluded.add(name[1:])
            elif name in all_fields:
                wanted.add(name)
        chosen = wanted - excluded
        if not chosen and fields == ["id"]:
            return None
        return {k: v for k, v in all_fields.items() if k in chosen}

    # -- writes (one path for API calls and simulated people) ----------------------------------
    def _now(self) -> str:
        return jira_time(self.clock.now())

    def _resolve_assignee(self, value: Any) -> str | None:
        """An assignee value in the deployment's own style: Cloud ``accountId``, Server ``name``."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise JiraError(400, errors={"assignee": "expected Object"})
        key = "accountId" if self.cloud else "name"
        if key not in value:
            other = "name" if self.cloud else "accountId"
            if other in value:
                raise JiraError(400, errors={"assignee": f"'{other}' is not supported on Jira "
                                                         f"{self.deployment}; identify the user by "
                                                         f"'{key}'."})
            raise JiraError(400, errors={"assignee": f"Specify the user by '{key}'."})
        ident = value[key]
        if ident in (None, "-1"):
            return None
        user = next((u for u in self.users if u[key] == ident), None)
        if user is None:
            message = ("Specified user does not exist or you do not have required permissions"
                       if self.cloud else f"User '{ident}' does not exist.")
            raise JiraError(400, errors={"assignee": message})
        return user["name"]

    def _coerce_field(self, field: str, value: Any) -> Any:
        """Turn an API field value into its stored form, raising Jira's error for bad values."""
        if field == "summary":
            if not isinstance(value, str) or not value.strip():
                raise JiraError(400, errors={"summary": "You must specify a summary of the issue."})
            if "\n" in value:
                raise JiraError(400, errors={"summary": "The summary is invalid because it contains "
                                                        "newline characters."})
            return value
        if field == "description":
            return self._text_in(value, field)
        if field == "priority":
            if value is None:
                return None
            ref = value.get("id") or value.get("name") if isinstance(value, Mapping) else None
            for pid, pname, _ in PRIORITIES:
                if ref in (pid, pname):
                    return pname
            raise JiraError(400, errors={"priority": f"Specify a valid priority: {ref!r} is unknown"})
        if field == "assignee":
            return self._resolve_assignee(value)
        if field == "labels":
            if value is None:
                return []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise JiraError(400, errors={"labels": "Labels must be a list of strings."})
            for label in value:
                if not label or any(ch.isspace() for ch in label):
                    raise JiraError(400, errors={"labels": "The label '{}' contains spaces which is "
                                                           "invalid.".format(label)})
            return list(dict.fromkeys(value))
        if field == "resolution":
            if value is None:
                return None
            ref = value.get("id") or value.get("name") if isinstance(value, Mapping) else None
            for rid, rname, _ in RESOLUTIONS:
                if ref in (rid, rname):
                    return rname
            raise JiraError(400, errors={"resolution": "Could not find valid 'id' or 'name' in "
                                                       "resolution object."})
        custom = self._custom_field(field)
        if custom is not None:
            if value is None:
                return None
            if custom["type"] == "number" and not isinstance(value, (int, float)):
                raise JiraError(400, errors={field: "Operation value must be a number"})
            if custom["type"] == "string":
                return self._text_in(value, field)
            return value
        raise JiraError(400, errors={field: f"Field '{field}' cannot be set. It is not on the "
                                            f"appropriate screen, or unknown."})

    def _apply_update_ops(self, changes: dict[str, Any], stored: Mapping[str, Any],
                          update: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Fold ``update`` operations (set/add/remove) into ``changes``; returns comments to add."""
        comments: list[dict[str, Any]] = []
        for field, operations in (update or {}).items():
            if not isinstance(operations, list):
                raise JiraError(400, errors={field: "Operations must be a list"})
            for operation in operations:
                if not isinstance(operation, Mapping) or len(operation) != 1:
                    raise JiraError(400, errors={field: "Each operation must have one verb"})
                (verb, value), = operation.items()
                if field == "comment":
                    if verb != "add":
                        raise JiraError(400, errors={"comment": f"Operation '{verb}' is not "
                                                                f"supported for comments"})
                    comments.append(value)
                elif field == "labels" and verb in ("add", "remove"):
                    current = list(changes.get("labels", stored.get("labels", [])))
                    if verb == "add" and value not in current:
                        self._coerce_field("labels", [value])
                        current.append(value)
                    elif verb == "remove" and value in current:
                        current.remove(value)
                    changes["labels"] = current
                elif verb == "set":
                    changes[field] = self._coerce_field(field, value)
                else:
                    raise JiraError(400, errors={field: f"Field '{field}' does not support "
                                                        f"operation '{verb}'"})
        return comments

    def _change_item(self, field: str, old: Any, new: Any) -> dict[str, Any]:
        """One changelog item, as Jira writes it for this field."""
        def names(value: Any) -> str | None:
            return None if value in (None, []) else (" ".join(value) if isinstance(value, list)
                                                      else str(value))
        item = {"field": field, "fieldtype": "jira", "fieldId": field, "from": None,
                "fromString": names(old), "to": None, "toString": names(new)}
        if field == "priority":
            item.update({"from": self._priority_json(old)["id"] if old else None,
                         "to": self._priority_json(new)["id"] if new else None})
        elif field == "status":
            item.update({"from": self._status(old)["id"], "to": self._status(new)["id"]})
        elif field == "resolution":
            item.update({"from": self._resolution_json(old)["id"] if old else None,
                         "to": self._resolution_json(new)["id"] if new else None})
        elif field == "assignee":
            key = "accountId" if self.cloud else "name"
            old_user, new_user = self._user_by_name(old), self._user_by_name(new)
            item.update({"from": old_user[key] if old_user else None,
                         "fromString": old_user["displayName"] if old_user else None,
                         "to": new_user[key] if new_user else None,
                         "toString": new_user["displayName"] if new_user else None})
            if self.cloud:
                item.update({"tmpFromAccountId": item["from"], "tmpToAccountId": item["to"]})
        elif self._custom_field(field):
            item.update({"field": self._custom_field(field)["name"], "fieldtype": "custom"})
        return item

    def _commit_changes(self, issue: dict[str, Any], changes: Mapping[str, Any],
                        actor: dict[str, str]) -> list[dict[str, Any]]:
        """Store changed fields, append one changelog entry and move ``updated``; returns items."""
        stored = issue["fields"]
        items = [self._change_item(field, stored.get(field), value)
                 for field, value in changes.items()
                 if (stored.get(field) or None) != (value or None)]
        if not items:
            return []
        now = self._now()
        for field, value in changes.items():
            stored[field] = value
        issue["changelog"].append({"id": str(self.next_history_id), "author": actor["name"],
                                   "created": now, "items": items})
        self.next_history_id += 1
        issue["updated"] = now
        return items

    def create_issue(self, fields: Mapping[str, Any], actor: dict[str, str],
                     update: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Create an issue from API-style ``fields``; the caller holds ``self.lock``."""
        errors: dict[str, str] = {}
        project = self._project(fields.get("project")) if fields.get("project") else None
        if project is None:
            errors["project"] = "project is required" if not fields.get("project") else \
                "Specify a valid project ID or key"
        issue_type = self._issue_type(fields.get("issuetype")) if fields.get("issuetype") else None
        if issue_type is None:
            errors["issuetype"] = "Specify an issue type" if not fields.get("issuetype") else \
                "Specify a valid issue type"
        if not fields.get("summary"):
            errors["summary"] = "You must specify a summary of the issue."
        for field in fields:
            if field in ("status", "resolution", "reporter"):
                errors[field] = (f"Field '{field}' cannot be set. It is not on the appropriate "
                                 f"screen, or unknown.")
        if errors:
            raise JiraError(400, errors=errors)
        stored: dict[str, Any] = {"issuetype": issue_type["name"], "status": self.statuses[0]["name"],
                                  "priority": "Medium", "assignee": None, "reporter": actor["name"],
                                  "labels": [], "resolution": None, "resolutiondate": None,
                                  "description": None}
        for field, value in fields.items():
            if field not in ("project", "issuetype"):
                stored[field] = self._coerce_field(field, value)
        new_comments = self._apply_update_ops(stored, stored, update or {})
        now = self._now()
        issue_id = str(self.next_issue_id)
        self.next_issue_id += 1
        number = self.next_number[project["key"]]
        self.next_number[project["key"]] = number + 1
        issue = {"id": issue_id, "key": f"{project['key']}-{number}", "project": project["key"],
                 "fields": stored, "created": now, "updated": now, "statuscategorychangedate": now,
                 "changelog": [], "comments": [], "properties": {}}
        self._add_issue(issue)
        self._send_issue_event("jira:issue_created", "issue_created", issue, actor)
        for comment in new_comments:
            self.add_comment(issue, comment, actor)
        return issue

    def edit_issue(self, issue: dict[str, Any], fields: Mapping[str, Any] | None,
                   update: Mapping[str, Any] | None, actor: dict[str, str]) -> None:
        changes: dict[str, Any] = {}
        for field, value in (fields or {}).items():
            if field in (update or {}):
                raise JiraError(400, errors={field: f"Field '{field}' cannot be set in both "
                                                    f"'fields' and 'update'"})
            if field in ("status", "resolution", "project", "issuetype", "reporter"):
                raise JiraError(400, errors={field: f"Field '{field}' cannot be set. It is not on "
                                                    f"the appropriate screen, or unknown."})
            changes[field] = self._coerce_field(field, value)
        new_comments = self._apply_update_ops(changes, issue["fields"], update or {})
        items = self._commit_changes(issue, changes, actor)
        if items:
            event = "issue_assigned" if [i["field"] for i in items] == ["assignee"] else "issue_updated"
            self._send_issue_event("jira:issue_updated", event, issue, actor, items)
        for comment in new_comments:
            self.add_comment(issue, comment, actor)

    def available_transitions(self, issue: dict[str, Any]) -> list[dict[str, Any]]:
        """Transitions out of the current status; one without ``from`` is global (from anywhere)."""
        status = issue["fields"]["status"]
        return [t for t in self.transitions
                if t["to"] != status and (not t.get("from") or status in t["from"])]

    def transition_issue(self, issue: dict[str, Any], transition_id: Any,
                         fields: Mapping[str, Any] | None, update: Mapping[str, Any] | None,
                         actor: dict[str, str]) -> None:
        transition = next((t for t in self.available_transitions(issue)
                           if t["id"] == str(transition_id)), None)
        if transition is None:
            raise JiraError(400, [f"Transition id '{transition_id}' is not valid for this issue."])
        target = self._status(transition["to"])
        changes: dict[str, Any] = {}
        for field, value in (fields or {}).items():
            if field == "status":
                raise JiraError(400, errors={field: "Field 'status' cannot be set. It is not on the "
                                                    "appropriate screen, or unknown."})
            changes[field] = self._coerce_field(field, value)
        if target["category"] == "done":
            changes.setdefault("resolution", "Done")
        elif "resolution" not in changes:
            changes["resolution"] = None
        new_comments = self._apply_update_ops(changes, issue["fields"], update or {})
        old_status = issue["fields"]["status"]
        changes = {"status": target["name"], **changes}
        resolved_before = issue["fields"].get("resolution") is not None
        items = self._commit_changes(issue, changes, actor)
        if issue["fields"].get("resolution") is not None and not resolved_before:
            issue["fields"]["resolutiondate"] = issue["updated"]
        elif issue["fields"].get("resolution") is None:
            issue["fields"]["resolutiondate"] = None
        if self._status(old_status)["category"] != target["category"]:
            issue["statuscategorychangedate"] = issue["updated"]
        if items:
            event = ("issue_resolved" if target["category"] == "done" else
                     "issue_reopened" if self._status(old_status)["category"] == "done" else
                     "issue_generic")
            self._send_issue_event("jira:issue_updated", event, issue, actor, items)
        for comment in new_comments:
            self.add_comment(issue, comment, actor)

    def add_comment(self, issue: dict[str, Any], data: Any, actor: dict[str, str]) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise JiraError(400, ["Comment body can not be empty!"])
        body = self._text_in(data.get("body"), "comment")
        if not body or not body.strip():
            raise JiraError(400, errors={"comment": "Comment body can not be empty!"})
        visibility = data.get("visibility")
        if visibility is not None:
            if not isinstance(visibility, Mapping) or visibility.get("type") not in ("role", "group"):
                raise JiraError(400, errors={"commentLevel": "Visibility type must be 'role' or "
                                                             "'group'."})
            if visibility["type"] == "role" and visibility.get("value") not in PROJECT_ROLES:
                raise JiraError(400, errors={"commentLevel": "You are currently not a member of the "
                                                             f"project role: {visibility.get('value')}."})
            visibility = {"type": visibility["type"], "value": visibility.get("value")}
            if self.cloud:
                visibility["identifier"] = visibility["value"]
        now = self._now()
        comment = {"id": str(self.next_comment_id), "author": actor["name"], "body": body,
                   "updateAuthor": actor["name"], "created": now, "updated": now,
                   "visibility": visibility}
        self.next_comment_id += 1
        issue["comments"].append(comment)
        issue["updated"] = now
        comment_json = self.comment_json(issue, comment)
        self._send(self._webhook_body("comment_created", "issue_commented", issue, actor,
                                      comment=comment_json))
        self._send_issue_event("jira:issue_updated", "issue_commented", issue, actor,
                               comment=comment_json)
        return comment

    def update_comment(self, issue: dict[str, Any], comment: dict[str, Any], data: Any,
                       actor: dict[str, str]) -> None:
        body = self._text_in((data or {}).get("body"), "comment")
        if not body or not body.strip():
            raise JiraError(400, errors={"comment": "Comment body can not be empty!"})
        comment.update({"body": body, "updateAuthor": actor["name"], "updated": self._now()})
        self._send(self._webhook_body("comment_updated", "issue_comment_edited", issue, actor,
                                      comment=self.comment_json(issue, comment)))

    def delete_issue(self, issue: dict[str, Any], actor: dict[str, str]) -> None:
        self._drop_issue(issue)
        self._send_issue_event("jira:issue_deleted", "issue_deleted", issue, actor)

    # -- webhooks ----------------------------------------------------------------------------
    def _webhook_body(self, event: str, type_name: str, issue: dict[str, Any], actor: dict[str, str],
                      items: list[dict[str, Any]] | None = None,
                      comment: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "timestamp": int(self.clock.now().timestamp() * 1000), "webhookEvent": event,
            "issue_event_type_name": type_name, "user": self.user_json(actor),
            "issue": {"id": issue["id"], "self": self._url("2", f"issue/{issue['id']}"),
                      "key": issue["key"], "fields": self._all_fields(issue, "2")}}
        if items:
            body["changelog"] = {"id": issue["changelog"][-1]["id"], "items": copy.deepcopy(items)}
        if comment is not None:
            body["comment"] = comment
        return body

    def _send_issue_event(self, event: str, type_name: str, issue: dict[str, Any],
                          actor: dict[str, str], items: list[dict[str, Any]] | None = None,
                          comment: dict[str, Any] | None = None) -> None:
        self._send(self._webhook_body(event, type_name, issue, actor, items, comment))

    def _send(self, body: dict[str, Any]) -> None:
        identifier = f"{self._ids.getrandbits(64):016x}"
        self.webhooks.send(body, headers={"X-Atlassian-Webhook-Identifier": identifier},
                           signature_header=JIRA_SIGNATURE_HEADER)

    # -- search ------------------------------------------------------------------------------
    def search(self, jql: str, *, user: str | None = None) -> list[str]:
        """Keys of the issues matching a JQL query, in its order, searching as ``user`` (default:
        the first configured user); raises JQLError for a bad query."""
        with self.lock:
            return [i["key"] for i in self._run_query(parse_jql(jql),
                                                      self._find_user(user or self.users[0]["name"]))]

    def _run_query(self, query: JQLQuery, actor: dict[str, str]) -> list[dict[str, Any]]:
        if query.where is not None:
            self._validate(query.where)
        sorters = [(self._sort_key(field), descending) for field, descending in query.order_by]
        matches = None if query.where is None else self._indexed_candidates(query.where)
        if matches is None:
            matches = list(self.issues.values())
        if query.where is not None:
            matches = list(filter(self._predicate(query.where, actor), matches))
        if not sorters:
            sorters = [(self._sort_key("key"), True)]
        for key, descending in reversed(sorters):
            keyed = [(key(i), i) for i in matches]          # each issue's key computed once
            present = [pair for pair in keyed if pair[0] is not None]
            present.sort(key=lambda pair: pair[0], reverse=descending)
            matches = [i for _, i in present] + [i for k, i in keyed if k is None]
        return matches

    def _indexed_candidates(self, where: Clause | BoolNode) -> list[dict[str, Any]] | None:
        """The issues an ``id``/``key`` ``=`` or ``in`` clause (alone or ANDed) narrows a validated
        query to, in the order a scan meets them (the whole query is still tested on them);
        None when no such clause bounds it."""
        clauses = (where.children if isinstance(where, BoolNode) and where.op == "and"
                   else (where,))
        for clause in clauses:
            if (not isinstance(clause, Clause) or clause.operator not in ("=", "in")
                    or any(not isinstance(v, str) or v == "EMPTY" for v in clause.values)):
                continue
            kind = self._field_kind(clause.field)[1]
            if kind == "id":
                found = [self.issues.get(str(int(v))) for v in clause.values]
            elif kind == "key":
                found = [self._by_key(v) for v in clause.values]
            else:
                continue
            unique = {issue["id"]: issue for issue in found if issue is not None}
            return sorted(unique.values(), key=lambda issue: self._positions[issue["id"]])
        return None

    JQL_FIELDS = {"project": "project", "updated": "updated", "updateddate": "updated",
                  "created": "created", "createddate": "created", "labels": "labels",
                  "key": "key", "issuekey": "key", "issue": "key", "id": "id",
                  "issuetype": "issuetype", "type": "issuetype", "status": "status",
                  "priority": "priority", "assignee": "assignee", "reporter": "reporter",
                  "resolution": "resolution", "summary": "summary", "description": "description",
                  "text": "text", "resolved": "resolutiondate", "resolutiondate": "resolutiondate",
                  "statuscategory": "statusCategory"}
    OPERATORS = {
        "date": {"=", "!=", "<", ">", "<=", ">=", "in", "not in", "is", "is not"},
        "key": {"=", "!=", "<", ">", "<=", ">=", "in", "not in"},
        "id": {"=", "!=", "<", ">", "<=", ">=", "in", "not in"},
        "text": {"~", "!~", "is", "is not"},
        "option": {"=", "!=", "in", "not in", "is", "is not"},
    }

    def _field_kind(self, name: str) -> tuple[str, str]:
        canonical = self.JQL_FIELDS.get(name.lower())
        if canonical is None:
            custom = self._custom_field(name)
            if custom is None:
                raise JQLError(f"Field '{name}' does not exist or you do not have permission to "
                               f"view it.")
            return custom["id"], "custom"
        kind = {"updated": "date", "created": "date", "resolutiondate": "date", "key": "key",
                "id": "id", "summary": "text", "description": "text", "text": "text"}.get(canonical,
                                                                                         "option")
        return canonical, kind

    def _validate(self, node: Clause | BoolNode) -> None:
        if isinstance(node, BoolNode):
            for child in node.children:
                self._validate(child)
            return
        field, kind = self._field_kind(node.field)
        allowed = {"=", "!=", "~", "!~", "in", "not in", "is", "is not"} if kind == "custom" \
            else self.OPERATORS[kind]
        if node.operator not in allowed:
            shown = node.operator.upper() if node.operator[0].isalpha() else node.operator
            raise JQLError(f"The operator '{shown}' is not supported by the '{node.field}' field.")
        for value in node.values:
            if isinstance(value, Function):
                if value.name.lower() != "currentuser" or field not in ("assignee", "reporter"):
                    raise JQLError(f"Unable to find JQL function '{value.name}()'.")
            elif value == "EMPTY":
                continue
            elif kind == "date":
                parse_jql_date(value, node.field, self.clock.now())
            elif kind == "key":
                if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*-\d+", value):
                    raise JQLError(f"The issue key '{value}' for field '{node.field}' is invalid.")
                if self._by_key(value) is None:
                    raise JQLError(f"An issue with key '{value.upper()}' does not exist for field "
                                   f"'{node.field}'.")
            elif kind == "id":
                if not value.isdigit():
                    raise JQLError(f"The issue key '{value}' for field '{node.field}' is invalid.")
            elif field in ("project", "issuetype", "status", "priority", "resolution", "assignee",
                           "reporter", "statusCategory"):
                if not self._option_values(field, value):
                    raise JQLError(f"The value '{value}' does not exist for the field "
                                   f"'{node.field}'.")

    def _option_values(self, field: str, value: str) -> set[str]:
        """The stored names a JQL value (name, id, key, email, ...) of an option field stands for."""
        v = value.lower()
        if field == "project":
            return {p["key"] for p in self.projects if v in (p["id"], p["key"].lower(), p["name"].lower())}
        if field == "issuetype":
            return {t["name"] for t in self.issue_types if v in (t["id"], t["name"].lower())}
        if field == "status":
            return {s["name"] for s in self.statuses if v in (s["id"], s["name"].lower())}
        if field == "statusCategory":
            return {s["name"] for s in self.statuses
                    if v in (str(STATUS_CATEGORIES[s["category"]]["id"]), s["category"],
                             STATUS_CATEGORIES[s["category"]]["name"].lower())}
        if field == "priority":
            return {p for pid, p, _ in PRIORITIES if v in (pid, p.lower())}
        if field == "resolution":
            return {r for rid, r, _ in RESOLUTIONS if v in (rid, r.lower())}
        if field in ("assignee", "reporter"):
            return {u["name"] for u in self.users
                    if v in (u["name"].lower(), u["accountId"].lower(), u["emailAddress"].lower(),
                             u["displayName"].lower())}
        return set()

    def _field_value(self, issue: dict[str, Any], field: str) -> Any:
        if field in ("updated", "created"):
            return parse_jira_time(issue[field])
        if field == "resolutiondate":
            value = issue["fields"].get("resolutiondate")
            return parse_jira_time(value) if value else None
        if field == "key":
            return issue["key"]
        if field == "id":
            return int(issue["id"])
        if field == "project":
            return issue["project"]
        if field == "statusCategory":
            return issue["fields"]["status"]
        if field == "text":
            return " ".join(filter(None, [issue["fields"].get("summary"),
                                          issue["fields"].get("description")]))
        return issue["fields"].get(field)

    def _predicate(self, node: Clause | BoolNode, actor: dict[str, str]
                   ) -> Callable[[dict[str, Any]], bool]:
        """Whether an issue matches ``node``. What does not depend on the issue (the field's kind,
        date ranges, option names) is worked out once here, not once per issue searched."""
        if isinstance(node, BoolNode):
            children = [self._predicate(child, actor) for child in node.children]
            if node.op == "not":
                return lambda issue: not children[0](issue)
            wanted_result = node.op == "or"       # "or" stops at the first match, "and" at a miss

            def combined(issue: dict[str, Any]) -> bool:
                for child in children:
                    if child(issue) == wanted_result:
                        return wanted_result
                return not wanted_result
            return combined
        field, kind = self._field_kind(node.field)
        op = node.operator
        values = node.values

        def value_of(issue: dict[str, Any]) -> tuple[Any, bool]:
            actual = self._field_value(issue, field)
            return actual, actual in (None, [], "")

        if op in ("is", "is not") or (values == ("EMPTY",) and op in ("=", "!=")):
            want_empty = op in ("is", "=")
            return lambda issue: value_of(issue)[1] == want_empty
        test: Callable[[Any], bool]
        if op in ("~", "!~"):
            needle = str(values[0]).lower().strip("*")
            contains = op == "~"

            def test(actual: Any) -> bool:
                return (needle in str(actual).lower()) == contains
        elif kind == "date":
            ranges = [parse_jql_date(v, node.field, self.clock.now()) for v in values]
            if op in ("in", "not in", "=", "!="):
                inside = op in ("in", "=")

                def test(actual: Any) -> bool:
                    return any(start <= actual < start + width for start, width in ranges) == inside
            else:
                start, width = ranges[0]
                test = {"<": lambda actual: actual < start,
                        "<=": lambda actual: actual < start + width,
                        ">": lambda actual: actual >= start + width,
                        ">=": lambda actual: actual >= start}[op]
        elif kind in ("key", "id"):
            def order(v: Any) -> tuple[str, int]:
                if kind == "id":
                    return ("", int(v))
                project, _, number = str(v).upper().rpartition("-")
                return (project, int(number))
            others = [order(v) for v in values]
            if op in ("=", "in", "!=", "not in"):
                inside = op in ("=", "in")

                def test(actual: Any) -> bool:
                    return (order(actual) in others) == inside
            else:
                other = others[0]
                compare = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
                           ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}[op]

                def test(actual: Any) -> bool:
                    mine = order(actual)
                    if kind == "key" and mine[0] != other[0]:
                        return False
                    return compare(mine, other)
        else:
            wanted: set[str] = set()
            for value in values:
                if isinstance(value, Function):
                    wanted.add(actor["name"])
                elif kind == "custom" or field == "labels":
                    wanted.add(str(value).lower())
                else:
                    wanted |= self._option_values(field, value)
            inside = op in ("=", "in")

            def test(actual: Any) -> bool:
                have = ({str(v).lower() for v in actual} if isinstance(actual, list)
                        else {str(actual).lower() if kind == "custom" else actual})
                return bool(have & wanted) == inside

        def matches(issue: dict[str, Any]) -> bool:
            actual, empty = value_of(issue)
            return False if empty else test(actual)   # Jira: comparisons never match an empty value
        return matches

    def _sort_key(self, name: str) -> Callable[[dict[str, Any]], Any]:
        field, kind = self._field_kind(name)
        if kind == "key":
            return lambda i: (i["project"], int(i["key"].rpartition("-")[2]))
        if field == "priority":
            order = {p: len(PRIORITIES) - n for n, (_, p, _) in enumerate(PRIORITIES)}  # Highest greatest
            return lambda i: order.get(i["fields"].get("priority"), None)
        return lambda i: self._field_value(i, field)

    # -- HTTP handlers -----------------------------------------------------------------------
    def _register_routes(self) -> None:
        routes = [
            ("GET", API + r"/serverInfo", self._get_server_info),
            ("GET", API + r"/myself", self._get_myself),
            ("GET", API + r"/field", self._get_fields),
            ("GET", API + r"/priority", self._get_priorities),
            ("GET", API + r"/resolution", self._get_resolutions),
            ("GET", API + r"/status", self._get_statuses),
            ("GET", API + r"/issuetype", self._get_issue_types),
            ("GET", API + r"/project", self._get_projects),
            ("GET", API + r"/project/(?P<project>[^/]+)", self._get_project),
            ("GET", API + r"/user/search", self._get_user_search),
            ("GET", API + r"/user", self._get_user),
            ("POST", API + r"/issue", self._post_issue),
            ("GET", ISSUE, self._get_issue),
            ("PUT", ISSUE, self._put_issue),
            ("DELETE", ISSUE, self._delete_issue),
            ("PUT", ISSUE + r"/assignee", self._put_assignee),
            ("GET", ISSUE + r"/transitions", self._get_transitions),
            ("POST", ISSUE + r"/transitions", self._post_transition),
            ("GET", ISSUE + r"/comment", self._get_comments),
            ("POST", ISSUE + r"/comment", self._post_comment),
            ("GET", ISSUE + r"/comment/(?P<comment>\d+)", self._get_comment),
            ("PUT", ISSUE + r"/comment/(?P<comment>\d+)", self._put_comment),
            ("GET", ISSUE + r"/changelog", self._get_changelog),
            ("GET", ISSUE + r"/properties", self._get_property_keys),
            ("GET", ISSUE + r"/properties/(?P<property>[^/]+)", self._get_property),
            ("PUT", ISSUE + r"/properties/(?P<property>[^/]+)", self._put_property),
            ("DELETE", ISSUE + r"/properties/(?P<property>[^/]+)", self._delete_property),
            ("GET", API + r"/search", self._search_offset),
            ("POST", API + r"/search", self._search_offset),
            ("GET", API + r"/search/jql", self._search_token),
            ("POST", API + r"/search/jql", self._search_token),
        ]
        for method, pattern, handler in routes:
            self.route(method, pattern, self._api(handler))
        self.route("POST", r"/_sim/human/issue", self._human_create_endpoint)
        self.route("POST", r"/_sim/human/issue/(?P<issue>[^/]+)", self._human_update_endpoint)
        self.route("POST", r"/_sim/human/issue/(?P<issue>[^/]+)/transition",
                   self._human_transition_endpoint)
        self.route("POST", r"/_sim/human/issue/(?P<issue>[^/]+)/comment",
                   self._human_comment_endpoint)

    def _api(self, handler: Callable[[Request, str], Response]) -> Callable[[Request], Response]:
        """Wrap a handler: v3 exists only on Cloud; state is read and written under the lock."""
        def wrapped(request: Request) -> Response:
            version = request.params["version"]
            if version == "3" and not self.cloud:
                raise HTTPError(404, "null for uri: " + request.path)
            with self.lock:
                return handler(request, "2" if version == "latest" else version)
        return wrapped

    @staticmethod
    def _list_arg(request: Request, name: str, body: Mapping[str, Any] | None = None) -> list[str] | None:
        """A list parameter, given repeated or comma-separated, in the query or a JSON body."""
        raw: Any = body.get(name) if body is not None else request.query.get(name)
        if raw is None:
            return None
        values = [raw] if isinstance(raw, str) else list(raw)
        return [part.strip() for value in values for part in str(value).split(",") if part.strip()]

    @staticmethod
    def _int_arg(value: Any, name: str, default: int) -> int:
        if value in (None, ""):
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise JiraError(400, [f"The value '{value}' is not valid for the parameter '{name}'."]) from None

    def _get_server_info(self, request: Request, version: str) -> Response:
        now = self._now()
        if self.cloud:
            return Response(200, {"baseUrl": self.base_url, "displayUrl": self.base_url,
                                  "version": "1001.0.0-SNAPSHOT", "versionNumbers": [1001, 0, 0],
                                  "deploymentType": "Cloud", "buildNumber": 100295,
                                  "buildDate": "2026-01-01T00:00:00.000+0000", "serverTime": now,
                                  "scmInfo": "0000000000000000000000000000000000000000",
                                  "serverTitle": "Jira", "defaultLocale": {"locale": "en_US"},
                                  "serverTimeZone": "Etc/UTC"})
        return Response(200, {"baseUrl": self.base_url, "version": "9.12.12",
                              "versionNumbers": [9, 12, 12], "deploymentType": "Server",
                              "buildNumber": 9120012, "buildDate": "2024-07-01T00:00:00.000+0000",
                              "serverTime": now, "scmInfo": "0000000000000000000000000000000000000000",
                              "serverTitle": "Jira"})

    def _get_myself(self, request: Request, version: str) -> Response:
        user = self._actor(request)
        return Response(200, {**self.user_json(user, version), "locale": "en_US",
                              "groups": {"size": 1, "items": []},
                              "applicationRoles": {"size": 1, "items": []}})

    def field_definitions(self) -> list[dict[str, Any]]:
        fields = []
        for fid, name, clauses, schema in SYSTEM_FIELDS:
            entry = {"id": fid, "key": fid, "name": name, "custom": False, "orderable": schema is not None,
                     "navigable": fid != "comment", "searchable": True, "clauseNames": list(clauses)}
            if schema is not None:
                entry["schema"] = schema
            fields.append(entry)
        for custom in self.custom_fields:
            number = custom["id"].rpartition("_")[2]
            fields.append({"id": custom["id"], "key": custom["id"], "name": custom["name"],
                           "untranslatedName": custom["name"], "custom": True, "orderable": True,
                           "navigable": True, "searchable": True,
                           "clauseNames": [f"cf[{number}]", custom["name"]],
                           "schema": {"type": custom["type"], "custom": custom.get("custom", ""),
                                      "customId": int(number)}})
        return fields

    def _get_fields(self, request: Request, version: str) -> Response:
        return Response(200, self.field_definitions())

    def _get_priorities(self, request: Request, version: str) -> Response:
        return Response(200, [self._priority_json(name, version) for _, name, _ in PRIORITIES])

    def _get_resolutions(self, request: Request, version: str) -> Response:
        return Response(200, [self._resolution_json(name, version) for _, name, _ in RESOLUTIONS])

    def _get_statuses(self, request: Request, version: str) -> Response:
        return Response(200, [self.status_json(s["name"], version) for s in self.statuses])

    def _get_issue_types(self, request: Request, version: str) -> Response:
        return Response(200, [self._issue_type_json(t, version) for t in self.issue_types])

    def _get_projects(self, request: Request, version: str) -> Response:
        full = "issueTypes" in (request.arg("expand") or "")
        return Response(200, [self._project_json(p, version, full=full) for p in self.projects])

    def _get_project(self, request: Request, version: str) -> Response:
        project = self._project(request.params["project"])
        if project is None:
            raise JiraError(404, [f"No project could be found with key '{request.params['project']}'."])
        return Response(200, self._project_json(project, version, full=True))

    def _get_user_search(self, request: Request, version: str) -> Response:
        term = (request.arg("query") or request.arg("username") or "").lower()
        if not term:
            raise JiraError(400, ["The username query parameter was not provided"])
        start = self._int_arg(request.arg("startAt"), "startAt", 0)
        limit = self._int_arg(request.arg("maxResults"), "maxResults", 50)
        found = [u for u in self.users if any(str(u[k]).lower().startswith(term) for k in
                                              ("name", "emailAddress", "displayName", "accountId"))]
        return Response(200, [self.user_json(u, version) for u in found[start:start + limit]])

    def _get_user(self, request: Request, version: str) -> Response:
        ident = request.arg("accountId") if self.cloud else request.arg("username") or request.arg("key")
        user = next((u for u in self.users if ident in (u["accountId"], u["name"])), None)
        if user is None:
            raise JiraError(404, [f"The user with the key '{ident}' does not exist"])
        return Response(200, self.user_json(user, version))

    def _body(self, request: Request) -> dict[str, Any]:
        data = request.json()
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise JiraError(400, ["Can not deserialize the request body: expected a JSON object."])
        return data

    def _post_issue(self, request: Request, version: str) -> Response:
        body = self._body(request)
        properties = self._entity_properties(body.get("properties"))
        issue = self.create_issue(body.get("fields") or {}, self._actor(request), body.get("update"))
        issue["properties"].update(properties)
        return Response(201, {"id": issue["id"], "key": issue["key"],
                              "self": self._url(version, f"issue/{issue['id']}")})

    def _get_issue(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        return Response(200, self.issue_json(
            issue, version, fields=self._list_arg(request, "fields"),
            expand=self._list_arg(request, "expand") or (),
            properties=self._list_arg(request, "properties") or ()))

    def _put_issue(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        body = self._body(request)
        self.edit_issue(issue, body.get("fields"), body.get("update"), self._actor(request))
        return Response(204)

    def _delete_issue(self, request: Request, version: str) -> Response:
        self.delete_issue(self._issue(request.params["issue"]), self._actor(request))
        return Response(204)

    def _put_assignee(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        self.edit_issue(issue, {"assignee": self._body(request)}, None, self._actor(request))
        return Response(204)

    def _transition_json(self, transition: dict[str, Any], version: str) -> dict[str, Any]:
        return {"id": transition["id"], "name": transition["name"],
                "to": self.status_json(transition["to"], version), "hasScreen": False,
                "isGlobal": not transition.get("from"), "isInitial": False,
                "isAvailable": True, "isConditional": False, "isLooped": False}

    def _get_transitions(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        available = self.available_transitions(issue)
        wanted = request.arg("transitionId")
        if wanted is not None:
            available = [t for t in available if t["id"] == wanted]
        return Response(200, {"expand": "transitions",
                              "transitions": [self._transition_json(t, version) for t in available]})

    def _post_transition(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        body = self._body(request)
        transition = body.get("transition")
        if not isinstance(transition, Mapping) or "id" not in transition:
            raise JiraError(400, ["Missing 'transition' identifier"])
        try:
            transition_id = int(transition["id"])
        except (TypeError, ValueError):
            raise JiraError(400, ["'transition' identifier must be an integer"]) from None
        self.transition_issue(issue, transition_id, body.get("fields"), body.get("update"),
                              self._actor(request))
        return Response(204)

    def _get_comments(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        comments = list(issue["comments"])
        if request.arg("orderBy") == "-created":
            comments.reverse()
        start = self._int_arg(request.arg("startAt"), "startAt", 0)
        limit = self._int_arg(request.arg("maxResults"), "maxResults", 5000)
        page = comments[start:start + limit]
        return Response(200, {"startAt": start, "maxResults": limit, "total": len(comments),
                              "comments": [self.comment_json(issue, c, version) for c in page]})

    def _post_comment(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        comment = self.add_comment(issue, self._body(request), self._actor(request))
        return Response(201, self.comment_json(issue, comment, version))

    def _comment(self, issue: dict[str, Any], comment_id: str) -> dict[str, Any]:
        comment = next((c for c in issue["comments"] if c["id"] == comment_id), None)
        if comment is None:
            raise JiraError(404, [f"Can not find a comment for the id: {comment_id}."])
        return comment

    def _get_comment(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        return Response(200, self.comment_json(issue, self._comment(issue, request.params["comment"]),
                                               version))

    def _put_comment(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        comment = self._comment(issue, request.params["comment"])
        self.update_comment(issue, comment, self._body(request), self._actor(request))
        return Response(200, self.comment_json(issue, comment, version))

    def _get_changelog(self, request: Request, version: str) -> Response:
        if not self.cloud:      # Server/Data Center only offers ?expand=changelog
            raise HTTPError(404, "null for uri: " + request.path)
        issue = self._issue(request.params["issue"])
        start = self._int_arg(request.arg("startAt"), "startAt", 0)
        limit = min(self._int_arg(request.arg("maxResults"), "maxResults", 100), 100)
        histories = issue["changelog"]
        page = histories[start:start + limit]
        return Response(200, {"self": self._url(version, f"issue/{issue['key']}/changelog?"
                                                         f"maxResults={limit}&startAt={start}"),
                              "maxResults": limit, "startAt": start, "total": len(histories),
                              "isLast": start + len(page) >= len(histories),
                              "values": [self._history_json(h, version) for h in page]})

    def _get_property_keys(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        return Response(200, {"keys": [
            {"self": self._url(version, f"issue/{issue['id']}/properties/{key}"), "key": key}
            for key in issue["properties"]]})

    def _get_property(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        key = request.params["property"]
        if key not in issue["properties"]:
            raise JiraError(404, [f"The property with key '{key}' does not exist."])
        return Response(200, {"key": key, "value": copy.deepcopy(issue["properties"][key])})

    def _put_property(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        key = request.params["property"]
        if len(key) > 255:
            raise JiraError(400, ["The property key cannot be longer than 255 characters."])
        if not request.body:
            raise JiraError(400, ["The property value cannot be empty."])
        value = request.json()
        existed = key in issue["properties"]
        issue["properties"][key] = value
        return Response(200 if existed else 201)

    @staticmethod
    def _entity_properties(given: Any) -> dict[str, Any]:
        """A create body's ``properties`` ([{"key", "value"}], IssueUpdateDetails) by key,
        checked before the issue is made so a bad list creates nothing."""
        if given is None:
            return {}
        if not isinstance(given, list) or not all(isinstance(p, Mapping) for p in given):
            raise JiraError(400, ["'properties' must be a list of {key, value} objects."])
        found: dict[str, Any] = {}
        for prop in given:
            key = prop.get("key")
            if not isinstance(key, str) or not key or len(key) > 255:
                raise JiraError(400, ["The property key must be 1 to 255 characters."])
            if prop.get("value") is None:
                raise JiraError(400, ["The property value cannot be empty."])
            found[key] = copy.deepcopy(prop["value"])
        return found

    def _delete_property(self, request: Request, version: str) -> Response:
        issue = self._issue(request.params["issue"])
        key = request.params["property"]
        if issue["properties"].pop(key, None) is None:
            raise JiraError(404, [f"The property with key '{key}' does not exist."])
        return Response(204)

    def _search_params(self, request: Request) -> dict[str, Any]:
        """Search parameters from the query string (GET) or the JSON body (POST)."""
        if request.method == "POST":
            body = self._body(request)
            return {"jql": body.get("jql") or "", "fields": self._list_arg(request, "fields", body),
                    "expand": self._list_arg(request, "expand", body) or [],
                    "properties": self._list_arg(request, "properties", body) or [],
                    "startAt": body.get("startAt"), "maxResults": body.get("maxResults"),
                    "nextPageToken": body.get("nextPageToken")}
        return {"jql": request.arg("jql", ""), "fields": self._list_arg(request, "fields"),
                "expand": self._list_arg(request, "expand") or [],
                "properties": self._list_arg(request, "properties") or [],
                "startAt": request.arg("startAt"), "maxResults": request.arg("maxResults"),
                "nextPageToken": request.arg("nextPageToken")}

    def _search_offset(self, request: Request, version: str) -> Response:
        """The old ``/search``: kept on Server/Data Center, removed (410) on Cloud."""
        if self.cloud:
            raise JiraError(410, [SEARCH_REMOVED])
        params = self._search_params(request)
        start = self._int_arg(params["startAt"], "startAt", 0)
        limit = min(self._int_arg(params["maxResults"], "maxResults", 50), 1000)
        issues = self._run_query(parse_jql(params["jql"]), self._actor(request))
        fields = params["fields"] or ["*navigable"]
        page = issues[start:start + limit]
        return Response(200, {"expand": "schema,names", "startAt": start, "maxResults": limit,
                              "total": len(issues),
                              "issues": [self.issue_json(i, version, fields, params["expand"],
                                                         params["properties"]) for i in page]})

    def _search_token(self, request: Request, version: str) -> Response:
        """The enhanced ``/search/jql`` of Jira Cloud: token paging, no total, ``id`` by default."""
        if not self.cloud:
            raise HTTPError(404, "null for uri: " + request.path)
        params = self._search_params(request)
        query = parse_jql(params["jql"])
        if query.where is None:
            raise JiraError(400, [UNBOUNDED_JQL])
        fields = params["fields"] or ["id"]
        cap = 5000 if fields == ["id"] else 100
        limit = max(1, min(self._int_arg(params["maxResults"], "maxResults", 50), cap))
        start = self._decode_page_token(params["nextPageToken"], params["jql"])
        issues = self._run_query(query, self._actor(request))
        page = issues[start:start + limit]
        body: dict[str, Any] = {"issues": [
            {"id": i["id"]} if fields == ["id"] and not params["expand"] and not params["properties"]
            else self.issue_json(i, version, fields, params["expand"], params["properties"])
            for i in page]}
        if start + limit < len(issues):
            body["nextPageToken"] = self._encode_page_token(start + limit, params["jql"])
            body["isLast"] = False
        else:
            body["isLast"] = True
        return Response(200, body)

    @staticmethod
    def _encode_page_token(offset: int, jql: str) -> str:
        raw = json.dumps({"offset": offset, "jql": hashlib.sha1(jql.encode()).hexdigest()[:12]})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def _decode_page_token(token: str | None, jql: str) -> int:
        if not token:
            return 0
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if data["jql"] == hashlib.sha1(jql.encode()).hexdigest()[:12]:
                return int(data["offset"])
        except (ValueError, KeyError, TypeError):
            pass
        raise JiraError(400, ["The provided next page token is invalid or expired."])

    # -- people in the UI --------------------------------------------------------------------
    def _person(self, user: str | None) -> dict[str, str]:
        return self._find_user(user or self.human_user)

    def human_create(self, fields: Mapping[str, Any], *, user: str | None = None) -> dict[str, Any]:
        """Create an issue as a person would; project and issue type default to the first project
        and "Incident" (else the first type). Returns the issue as GET /issue answers it."""
        fields = dict(fields)
        fields.setdefault("project", {"key": self.projects[0]["key"]})
        fields.setdefault("issuetype", {"name": "Incident" if self._issue_type("Incident")
                                        else self.issue_types[0]["name"]})
        with self.lock:
            return self.issue_json(self.create_issue(fields, self._person(user)))

    def human_update(self, key: str, fields: Mapping[str, Any], *, user: str | None = None,
                     update: Mapping[str, Any] | None = None) -> dict[str, Any]:
        with self.lock:
            issue = self._issue(key)
            self.edit_issue(issue, fields, update, self._person(user))
            return self.issue_json(issue)

    def human_transition(self, key: str, status_name: str, *, user: str | None = None,
                         fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Move an issue to a status through whichever available transition leads there."""
        with self.lock:
            issue = self._issue(key)
            transition = next((t for t in self.available_transitions(issue)
                               if t["to"].lower() == status_name.lower()), None)
            if transition is None:
                reachable = ", ".join(t["to"] for t in self.available_transitions(issue))
                raise JiraError(400, [f"No transition leads from '{issue['fields']['status']}' to "
                                      f"'{status_name}' on {issue['key']}; reachable: {reachable}"])
            self.transition_issue(issue, transition["id"], fields, None, self._person(user))
            return self.issue_json(issue)

    def human_comment(self, key: str, body: str, *, user: str | None = None,
                      visibility: Mapping[str, str] | None = None) -> dict[str, Any]:
        with self.lock:
            issue = self._issue(key)
            data: dict[str, Any] = {"body": body}
            if visibility is not None:
                data["visibility"] = dict(visibility)
            return self.comment_json(issue, self.add_comment(issue, data, self._person(user)))

    def get_issue(self, key_or_id: str) -> dict[str, Any]:
        """The issue as GET /rest/api/2/issue/{key}?expand=changelog answers it (for tests)."""
        with self.lock:
            return self.issue_json(self._issue(key_or_id), expand=("changelog",),
                                   properties=("*all",))

    def comments(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            issue = self._issue(key)
            return [self.comment_json(issue, c) for c in issue["comments"]]

    def _human_body(self, request: Request) -> dict[str, Any]:
        body = self._body(request)
        try:
            self._person(body.get("user"))
        except ValueError as exc:
            raise JiraError(400, [str(exc)]) from None
        return body

    def _human_create_endpoint(self, request: Request) -> Response:
        body = self._human_body(request)
        return Response(201, self.human_create(body.get("fields") or {}, user=body.get("user")))

    def _human_update_endpoint(self, request: Request) -> Response:
        body = self._human_body(request)
        return Response(200, self.human_update(request.params["issue"], body.get("fields") or {},
                                               user=body.get("user"), update=body.get("update")))

    def _human_transition_endpoint(self, request: Request) -> Response:
        body = self._human_body(request)
        if not body.get("status"):
            raise JiraError(400, ["Give the target status name as 'status'."])
        return Response(200, self.human_transition(request.params["issue"], body["status"],
                                                   user=body.get("user"), fields=body.get("fields")))

    def _human_comment_endpoint(self, request: Request) -> Response:
        body = self._human_body(request)
        return Response(201, self.human_comment(request.params["issue"], body.get("body") or "",
                                                user=body.get("user"),
                                                visibility=body.get("visibility")))
