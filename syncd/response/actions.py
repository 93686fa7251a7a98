"""Running Custom Incident Actions: render the body in a sandbox, call the configured URL, record
what happened (docs/actions.md).

A run is an ``action_run`` row written with its timeline entry in one transaction before the
call, then the outcome and a second entry after it. The call itself is outside any transaction:
a slow receiver holds no lock. A process that dies mid-call leaves the row ``running``;
:func:`mark_interrupted_runs` (at daemon start) turns it ``unknown``, never retried, since the
receiver may have acted.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests
from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.incidents import service as incident_service
from syncd.incidents.fields import CUSTOM_PREFIX, incident_fields
from syncd.metrics import ACTIONS
from syncd.response.models import ActionRun
from syncd.store.db import transaction
from syncd.yamlsource import redact_url

if TYPE_CHECKING:
    from syncd.incidents.models import Incident
    from syncd.response.definitions import Action
    from syncd.response_files import ResponseSet

EXCERPT_BYTES = 4096
# A run still ``running`` this long after its timeout ended belongs to a process that died.
INTERRUPTED_MARGIN = timedelta(seconds=60)
MAX_BODY_BYTES = 64 * 1024     # a rendered body beyond this is a runaway template, not a payload


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, and no operator that builds a huge value: ``"x" * 10**9``, ``"%09999999d" % 1``
    or ``9 ** 9 ** 9`` would stall or exhaust the process before any size check could run."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("an exponent above 64 is not allowed in a body template")
        if operator == "*":
            for text, times in ((left, right), (right, left)):
                if isinstance(text, (str, list)) and isinstance(times, int) \
                        and len(text) * times > MAX_BODY_BYTES:
                    raise SecurityError(f"the body template builds a value over "
                                        f"{MAX_BODY_BYTES // 1024} KB")
        if operator == "%" and isinstance(left, str) and len(left) > 0 \
                and any(char.isdigit() for char in left):
            width = max((int(part) for part in re.findall(r"\d+", left)), default=0)
            if width > MAX_BODY_BYTES:
                raise SecurityError(f"the body template formats a value over "
                                    f"{MAX_BODY_BYTES // 1024} KB")
        return super().call_binop(context, operator, left, right)


_ENVIRONMENT = _BoundedSandbox(undefined=StrictUndefined, autoescape=False)
# Loops and macros: a body fills in the incident's fields; nested loops could run for ever in
# the request thread, and no sandbox bounds the time a template takes.
_REFUSED_NODES = (nodes.For, nodes.Macro, nodes.CallBlock)


class TemplateRefused(Exception):
    """A body template that does not parse or reaches for what the sandbox forbids."""


class ActionRefused(Exception):
    """A run that may not start; ``status`` is the HTTP answer the API gives."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def check_template(source: str) -> None:
    """Parse ``source`` as the sandbox will render it; refuse private attributes (``__class__``,
    ``_x``) already here, so a definition that tries them never loads."""
    try:
        tree = _ENVIRONMENT.parse(source)
    except TemplateError as error:
        line = f" (template line {error.lineno})" if getattr(error, "lineno", None) else ""
        raise TemplateRefused(f"the body template does not parse: {error.message}{line}") from None
    for node in tree.find_all(_REFUSED_NODES):
        raise TemplateRefused(f"the body template uses {type(node).__name__.lower()}: loops and "
                              f"macros are not allowed, a body fills in the incident's fields "
                              f"(template line {node.lineno})")
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) else None)
        if isinstance(name, str) and name.startswith("_"):
            raise TemplateRefused(f"the body template reads {name!r}: only the incident's "
                                  f"fields are available (template line {node.lineno})")


def template_context(incident: Incident, actor: str) -> dict[str, Any]:
    """What a body template sees: the incident's canonical fields, its id, number and links,
    and who runs the action; plain JSON values only (nothing with methods to reach through)."""
    fields = incident_fields(incident)
    plain = {name: value for name, value in fields.items() if not name.startswith(CUSTOM_PREFIX)}
    custom = {name[len(CUSTOM_PREFIX):]: value for name, value in fields.items()
              if name.startswith(CUSTOM_PREFIX)}
    context = {"incident": {**plain, "custom": custom, "id": incident.id, "number": incident.number,
                            "links": [{"connector": link.connector, "remote_key": link.remote_key,
                                       "url": link.remote_url} for link in incident.links]},
               "actor": actor}
    return json.loads(json.dumps(context, default=str))


def render_body(action: Action, context: dict[str, Any]) -> str | None:
    """The request body: the template rendered and checked to be JSON, or (no template) the
    context itself for methods that carry a body. Raises ValueError with the reason."""
    if action.body is None:
        return None if action.method in ("GET", "DELETE") else json.dumps(context)
    try:
        text = _ENVIRONMENT.from_string(action.body).render(context)
    except Exception as error:     # SecurityError, UndefinedError, RecursionError, OverflowError...
        raise ValueError(f"the body template failed: {type(error).__name__}: "
                         f"{str(error)[:300]}") from None
    if len(text.encode()) > MAX_BODY_BYTES:
        raise ValueError(f"the rendered body is over {MAX_BODY_BYTES // 1024} KB")
    try:
        json.loads(text)
    except ValueError as error:
        raise ValueError(f"the rendered body is not JSON: {error}") from None
    return text


def available(responses: ResponseSet, service: str | None) -> list[Action]:
    return [action for action in responses.actions.values() if action.shows_for(service)]


@dataclass(frozen=True)
class _Outcome:
    state: str
    status_code: int | None = None
    excerpt: str | None = None
    error: str | None = None


def run_action(*, sessions: sessionmaker[Session], clock: Clock, responses: ResponseSet,
               action_id: str, incident_id: int, actor: str, source: str,
               confirmed: bool = False,
               call: Callable[..., requests.Response] = requests.request) -> ActionRun:
    """Run one action on one incident as ``actor`` and return its finished row. Raises NotFound
    (unknown incident) or ActionRefused (unknown action, not shown here, not confirmed)."""
    action = responses.actions.get(action_id)
    if action is None:
        raise ActionRefused(404, f"no action {action_id!r} in the response files")
    if action.confirm and not confirmed:
        raise ActionRefused(409, f"action {action_id!r} needs a confirmation: send "
                                 f'{{"confirmed": true}} (CLI: --yes)')
    with transaction(sessions) as session:
        incident = incident_service.get_incident(session=session, incident_id=incident_id)
        if not action.shows_for(incident.service):
            raise ActionRefused(400, f"action {action_id!r} is not offered for service "
                                     f"{incident.service!r} (services: {', '.join(action.services)})")
        now = clock.now()
        try:
            body, problem = render_body(action, template_context(incident, actor)), None
        except ValueError as error:
            body, problem = None, str(error)
        run = ActionRun(incident_id=incident_id, action=action.id, label=action.label, actor=actor,
                        source=source, state="pending", timeout_seconds=action.timeout.total_seconds(),
                        request=_request_summary(action, body), created_at=now)
        session.add(run)
        session.flush()
        incident_service.append_timeline(session=session, incident_id=incident_id, at=now,
                                         kind="action_run", actor=actor, source=source,
                                         data={"action": action.id, "label": action.label,
                                               "run": run.id})
        run_id = run.id
    if problem is not None:
        return _finish(sessions, clock, run_id, _Outcome("failed", error=problem), None)
    with transaction(sessions) as session:
        session.get(ActionRun, run_id).state = "running"
        session.get(ActionRun, run_id).started_at = clock.now()
    started = time.perf_counter()
    outcome = _call(action, body, call)
    return _finish(sessions, clock, run_id, outcome, round((time.perf_counter() - started) * 1000))


def _request_summary(action: Action, body: str | None) -> dict[str, Any]:
    return {"method": action.method, "url": redact_url(action.url),
            "headers": sorted(action.headers), "body_bytes": len(body.encode()) if body else 0}


def _call(action: Action, body: str | None, call: Callable[..., requests.Response]) -> _Outcome:
    """One request to the configured URL; redirects are not followed (the action reaches the
    host it names, nothing else)."""
    headers = {name: value.get_secret_value() for name, value in action.headers.items()}
    if body is not None:
        headers = {"Content-Type": "application/json", **headers}
    seconds = action.timeout.total_seconds()
    deadline = time.monotonic() + seconds
    try:
        with call(action.method, action.url, headers=headers,
                  data=body.encode() if body is not None else None, timeout=seconds,
                  allow_redirects=False, stream=True) as answer:
            excerpt = _read_excerpt(answer, deadline)
    except (requests.Timeout, _PastDeadline):
        return _Outcome("failed", error=f"timed out after {seconds:g}s")
    except requests.ConnectionError as error:
        refused = "refused" in str(error).lower()
        return _Outcome("failed", error="connection refused" if refused
                        else f"cannot connect: {_short(error)}")
    except requests.RequestException as error:
        return _Outcome("failed", error=f"request failed: {_short(error)}")
    excerpt = _without_secrets(excerpt, action)
    if 200 <= answer.status_code < 300:
        return _Outcome("succeeded", answer.status_code, excerpt)
    return _Outcome("failed", answer.status_code, excerpt,
                    f"HTTP {answer.status_code} {answer.reason or ''}".strip())


class _PastDeadline(Exception):
    """The answer is still coming when the action's timeout is spent (a receiver that drips)."""


def _read_excerpt(answer: requests.Response, deadline: float) -> str:
    """The first EXCERPT_BYTES of the answer, as text of at most that many UTF-8 bytes, read
    within the action's whole timeout (``requests`` bounds each read, not the total)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in answer.iter_content(chunk_size=1):   # byte by byte: the deadline is checked
        if time.monotonic() > deadline:
            raise _PastDeadline()
        chunks.append(chunk)
        size += len(chunk)
        if size >= EXCERPT_BYTES:
            break
    text = b"".join(chunks)[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    return text.encode()[:EXCERPT_BYTES].decode("utf-8", errors="ignore")


def _without_secrets(text: str, action: Action) -> str:
    """The answer with the action's header values blanked: a receiver may echo its request."""
    for value in action.headers.values():
        secret = value.get_secret_value()
        if len(secret) >= 4:
            text = text.replace(secret, "***")
            for part in secret.split():
                if len(part) >= 8:
                    text = text.replace(part, "***")
    return text


def _short(error: Exception) -> str:
    text = redact_url(str(error))
    return text if len(text) <= 300 else text[:297] + "..."


def _finish(sessions: sessionmaker[Session], clock: Clock, run_id: int, outcome: _Outcome,
            duration_ms: int | None) -> ActionRun:
    with transaction(sessions) as session:
        run = session.get(ActionRun, run_id, with_for_update=True)
        if run.state not in ("pending", "running"):     # the sweep called it unknown meanwhile
            session.expunge(run)
            return run
        now = clock.now()
        run.state, run.status_code, run.error = outcome.state, outcome.status_code, outcome.error
        run.response_excerpt, run.duration_ms, run.finished_at = outcome.excerpt, duration_ms, now
        incident_service.append_timeline(
            session=session, incident_id=run.incident_id, at=now, kind=f"action_{outcome.state}",
            actor=run.actor, source=run.source,
            data={"action": run.action, "label": run.label, "run": run.id,
                  "request": run.request, "status_code": outcome.status_code,
                  "duration_ms": duration_ms, "error": outcome.error,
                  "excerpt": outcome.excerpt})
        session.flush()
        session.expunge(run)
    ACTIONS.labels(action=run.action, outcome=outcome.state).inc()      # once committed
    return run


def mark_interrupted_runs(*, session: Session, now: datetime) -> int:
    """Runs left ``running`` (or ``pending``) past their timeout plus a margin: the process that
    made them died. They become ``unknown`` with a timeline entry; none is retried. Returns how
    many."""
    rows = session.scalars(select(ActionRun).where(ActionRun.state.in_(("pending", "running")))
                           .with_for_update()).all()
    marked = 0
    for run in rows:
        since = run.started_at or run.created_at
        if since + timedelta(seconds=run.timeout_seconds) + INTERRUPTED_MARGIN > now:
            continue
        run.state, run.finished_at = "unknown", now
        run.error = "the process stopped during the call: the receiver may or may not have acted"
        incident_service.append_timeline(
            session=session, incident_id=run.incident_id, at=now, kind="action_unknown",
            actor=run.actor, source=run.source,
            data={"action": run.action, "label": run.label, "run": run.id, "error": run.error})
        ACTIONS.labels(action=run.action, outcome="unknown").inc()
        marked += 1
    return marked


def runs(*, session: Session, incident_id: int) -> list[ActionRun]:
    return list(session.scalars(select(ActionRun).where(ActionRun.incident_id == incident_id)
                                .order_by(ActionRun.id)))


def run_json(run: ActionRun) -> dict[str, Any]:
    return {"id": run.id, "action": run.action, "label": run.label, "actor": run.actor,
            "source": run.source, "state": run.state, "request": run.request,
            "status_code": run.status_code, "duration_ms": run.duration_ms,
            "response_excerpt": run.response_excerpt, "error": run.error,
            "created_at": run.created_at.isoformat(),
            "finished_at": run.finished_at and run.finished_at.isoformat()}


def describe(kind: str, data: dict[str, Any], actor: str | None) -> str:
    """The timeline's words for an action entry."""
    label = data.get("label") or data.get("action")
    if kind == "action_run":
        return f"action {label} run by {actor}"
    took = f" in {data['duration_ms']} ms" if data.get("duration_ms") is not None else ""
    if kind == "action_succeeded":
        return f"action {label} succeeded: HTTP {data.get('status_code')}{took}"
    if kind == "action_unknown":
        return f"action {label} outcome unknown: {data.get('error')}"
    code = f" (HTTP {data['status_code']})" if data.get("status_code") else ""
    return f"action {label} failed{code}{took}: {data.get('error')}"


def sweep_interrupted_runs(sessions: sessionmaker[Session], clock: Clock) -> None:
    """One round of :func:`mark_interrupted_runs` in its own transaction, for the daemon's loop
    (at start, then every minute: a replica that died is noticed by the others too)."""
    with transaction(sessions) as session:
        mark_interrupted_runs(session=session, now=clock.now())
