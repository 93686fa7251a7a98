"""Events API v2 request bodies, validated the way PagerDuty answers them: every problem is
named (``errors``), so a monitoring tool's owner sees at once what to fix. Pure: data in, an
event or the list of problems out (docs: ../shared/reference/incident-response.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from syncd.alerts.models import SEVERITIES

ACTIONS = ("trigger", "acknowledge", "resolve")
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
MAX_BODY_BYTES = 512 * 1024
MAX_DEPTH = 32          # custom_details nested deeper than this is not an alert's detail


class InvalidEvent(Exception):
    """The body is not an event syncd can take; ``errors`` names each problem."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclass(frozen=True)
class AlertEvent:
    """A trigger, acknowledge or resolve; ``payload`` fields are set for a trigger only."""

    routing_key: str
    action: str
    dedup_key: str | None
    summary: str = ""
    source: str = ""
    severity: str = ""
    occurred_at: datetime | None = None
    component: str | None = None
    group: str | None = None
    class_: str | None = None
    custom_details: dict[str, Any] = field(default_factory=dict)
    links: list[Any] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)
    client: str | None = None
    client_url: str | None = None

    def field_value(self, name: str) -> Any:
        """The value of an ``alert_grouping.fields`` entry: ``component`` or
        ``custom_details.<key>``."""
        if name.startswith("custom_details."):
            return self.custom_details.get(name[len("custom_details."):])
        return getattr(self, "class_" if name == "class" else name)

    def payload(self) -> dict[str, Any]:
        """The payload as the source sent it (what an alert keeps as its last)."""
        return {"summary": self.summary, "source": self.source, "severity": self.severity,
                "timestamp": self.occurred_at.isoformat() if self.occurred_at else None,
                "component": self.component, "group": self.group, "class": self.class_,
                "custom_details": self.custom_details}


@dataclass(frozen=True)
class ChangeEventIn:
    routing_key: str
    summary: str
    source: str | None
    occurred_at: datetime | None
    custom_details: dict[str, Any]
    links: list[Any]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or InvalidEvent saying why not. What JSON allows but
    the store cannot keep is refused here too, naming where: NaN and Infinity, NUL characters,
    lone surrogates, and nesting deep enough to exhaust the parser."""
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidEvent([f"the body is not valid JSON: {error}"]) from None
    except RecursionError:
        raise InvalidEvent(["the body is nested too deeply"]) from None
    if not isinstance(value, dict):
        raise InvalidEvent([f"the body must be a JSON object, got {type(value).__name__}"])
    problems: list[str] = []
    _storable(value, "", problems)
    if problems:
        raise InvalidEvent(problems[:10])
    return value


def _storable(value: Any, where: str, problems: list[str], depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        problems.append(f"{where or 'the body'} is nested more than {MAX_DEPTH} levels deep")
        return
    if isinstance(value, str):
        if "\x00" in value:
            problems.append(f"{where or 'a value'} contains a NUL character")
        elif any("\ud800" <= char <= "\udfff" for char in value):
            problems.append(f"{where or 'a value'} contains a lone UTF-16 surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key, f"{where}{'.' if where else ''}{key!s:.40} (a key)", problems, depth)
            _storable(item, f"{where}{'.' if where else ''}{key!s:.40}", problems, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _storable(item, f"{where}[{index}]", problems, depth + 1)


def alert_event(body: dict[str, Any]) -> AlertEvent:
    """A ``POST /v2/enqueue`` body as an event, or InvalidEvent naming every problem."""
    errors: list[str] = []
    routing_key = _routing_key(body, errors)
    action = body.get("event_action")
    if action not in ACTIONS:
        errors.append(f"event_action must be one of {', '.join(ACTIONS)}, got {_shown(action)}")
    dedup_key = body.get("dedup_key")
    if dedup_key is not None and not isinstance(dedup_key, str):
        errors.append(f"dedup_key must be a string, got {_shown(dedup_key)}")
        dedup_key = None
    elif dedup_key is not None and len(dedup_key) > MAX_DEDUP_KEY:
        errors.append(f"dedup_key must be at most {MAX_DEDUP_KEY} characters, "
                      f"got {len(dedup_key)}")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append(f"dedup_key is required to {action}")
    if action != "trigger":
        if errors:
            raise InvalidEvent(errors)
        return AlertEvent(routing_key=routing_key, action=action, dedup_key=dedup_key)
    payload = body.get("payload")
    if not isinstance(payload, dict):
        errors.append("payload is required for a trigger, as an object with summary, source "
                      "and severity" if payload is None else
                      f"payload must be an object, got {_shown(payload)}")
        raise InvalidEvent(errors)
    summary = _required_text(payload, "summary", errors)
    if len(summary) > MAX_SUMMARY:
        errors.append(f"payload.summary must be at most {MAX_SUMMARY} characters, "
                      f"got {len(summary)}")
    source = _required_text(payload, "source", errors)
    severity = payload.get("severity")
    if severity not in SEVERITIES:
        errors.append("payload.severity is required" if severity is None else
                      f"payload.severity must be one of {', '.join(SEVERITIES)}, "
                      f"got {_shown(severity)}")
    occurred_at = _timestamp(payload.get("timestamp"), "payload.timestamp", errors)
    custom_details = _custom_details(payload.get("custom_details"))
    optional = {name: _optional_text(payload if name in ("component", "group", "class") else body,
                                     name, errors)
                for name in ("component", "group", "class", "client", "client_url")}
    links = _list(body.get("links"), "links", errors)
    images = _list(body.get("images"), "images", errors)
    if errors:
        raise InvalidEvent(errors)
    return AlertEvent(routing_key=routing_key, action="trigger", dedup_key=dedup_key,
                      summary=summary, source=source, severity=severity,
                      occurred_at=occurred_at, component=optional["component"],
                      group=optional["group"], class_=optional["class"],
                      custom_details=custom_details, links=links, images=images,
                      client=optional["client"], client_url=optional["client_url"])


def change_event(body: dict[str, Any]) -> ChangeEventIn:
    """A ``POST /v2/change/enqueue`` body, or InvalidEvent naming every problem."""
    errors: list[str] = []
    routing_key = _routing_key(body, errors)
    payload = body.get("payload")
    if not isinstance(payload, dict):
        errors.append("payload is required, as an object with a summary")
        raise InvalidEvent(errors)
    summary = _required_text(payload, "summary", errors)
    if len(summary) > MAX_SUMMARY:
        errors.append(f"payload.summary must be at most {MAX_SUMMARY} characters, "
                      f"got {len(summary)}")
    source = _optional_text(payload, "source", errors, prefix="payload.")
    occurred_at = _timestamp(payload.get("timestamp"), "payload.timestamp", errors)
    details = _custom_details(payload.get("custom_details"))
    links = _list(body.get("links"), "links", errors)
    if errors:
        raise InvalidEvent(errors)
    return ChangeEventIn(routing_key=routing_key, summary=summary, source=source,
                         occurred_at=occurred_at, custom_details=details, links=links)


def _routing_key(body: dict[str, Any], errors: list[str]) -> str:
    key = body.get("routing_key")
    if not isinstance(key, str) or not key:
        errors.append("routing_key is required" if key in (None, "") else
                      f"routing_key must be a string, got {_shown(key)}")
        return ""
    return key


def _required_text(payload: dict[str, Any], name: str, errors: list[str]) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        errors.append(f"payload.{name} is required" if value in (None, "") or
                      isinstance(value, str) else
                      f"payload.{name} must be a string, got {_shown(value)}")
        return ""
    return value


def _optional_text(where: dict[str, Any], name: str, errors: list[str],
                   prefix: str | None = None) -> str | None:
    value = where.get(name)
    if value is None or isinstance(value, str):
        return value
    where_name = prefix if prefix is not None else \
        ("payload." if name in ("component", "group", "class") else "")
    errors.append(f"{where_name}{name} must be a string, got {_shown(value)}")
    return None


def _timestamp(value: Any, name: str, errors: list[str]) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        errors.append(f"{name} must be an ISO 8601 date and time like "
                      f"2026-11-02T09:00:00Z, got {_shown(value)}")
        return None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        errors.append(f"{name} is outside the dates syncd can store, got {_shown(value)}")
        return None


def _custom_details(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return {"details": value}        # PagerDuty shows a non-object as the details' text


def _list(value: Any, name: str, errors: list[str]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(f"{name} must be a list, got {_shown(value)}")
        return []
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
