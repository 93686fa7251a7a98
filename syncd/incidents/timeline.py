"""Timeline entries in words, for the API, the console, the demo and the postmortem:
"priority P2 → P1 in servicenow by beth.anglin"."""

from __future__ import annotations

import json
from typing import Any

from syncd.incidents.models import TimelineEntry

ESCALATION_KINDS = ("paging_started", "escalated", "nobody_to_page", "paging_stopped",
                    "escalation_done")


def _value(value: Any) -> str:
    if value is None or value == "":
        return "(empty)"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _where_who(entry: TimelineEntry) -> str:
    where = f" in {entry.source}" if entry.source else ""
    who = f" by {entry.actor}" if entry.actor else ""
    return where + who


def describe(entry: TimelineEntry) -> str:
    """One sentence for one entry; every kind syncd writes has its own wording."""
    data = entry.data or {}
    kind = entry.kind
    if kind == "fields_changed":
        changes = data.get("changes", {})
        parts = [f"{name} {_value(change.get('from'))} → {_value(change.get('to'))}"
                 for name, change in changes.items()]
        return f"{', '.join(parts)}{_where_who(entry)}"
    if kind == "incident_created":
        title = (data.get("fields") or {}).get("title")
        return f"incident created{_where_who(entry)}: {_value(title)}"
    if kind == "comment_added":
        note = "work note" if data.get("visibility") == "internal" else "comment"
        return f"{note}{_where_who(entry)}: {_value(data.get('body'))}"
    if kind == "linked":
        return f"linked to {data.get('remote_key')} in {data.get('connector')}"
    if kind == "conflict":
        return (f"conflict on {data.get('field')}: syncd had {_value(data.get('store'))}, "
                f"{data.get('connector')} had {_value(data.get('remote'))}; "
                f"{'the ticket' if data.get('winner') == 'remote' else 'syncd'} won "
                f"({data.get('policy', 'policy')})")
    if kind == "drift_repaired":
        return f"drift repaired in {data.get('connector')}: {', '.join(data.get('fields', []))}"
    if kind == "remote_vanished":
        return f"{data.get('remote_key')} is gone from {data.get('connector')}"
    if kind == "sync_paused":
        return f"sync from {data.get('connector')} paused: {data.get('reason')}"
    if kind.startswith("notification_"):
        return _notification(kind, data)
    if kind in ESCALATION_KINDS:
        return _escalation(kind, data)
    if kind == "notifications_cancelled":
        count = data.get("count", 0)
        return (f"{count} pending page{'s' if count != 1 else ''} cancelled: "
                f"{data.get('reason')}")
    if kind.startswith("alert_"):
        return _alert(kind, data, data.get("from"))
    if kind.startswith("action_"):
        from syncd.response.actions import describe as describe_action
        return describe_action(kind, data, entry.actor)
    if kind == "change_event":
        return f"change from {data.get('from') or 'a source'}: {_value(data.get('summary'))}"
    words = kind.replace("_", " ")
    return f"{words}{_where_who(entry)}"


def _alert(kind: str, data: dict[str, Any], source: str | None) -> str:
    head = f"{data.get('severity')} alert {_value(data.get('summary'))}"
    where = f" from {source}" if source else ""
    if kind == "alert_triggered":
        return f"{head}{where} opened the incident"
    if kind == "alert_joined":
        return f"{head}{where} joined the incident"
    if kind == "alert_repeated":
        return f"{head}{where} fired again ({data.get('count')} events)"
    if kind == "alert_acknowledged":
        return f"{head} acknowledged{where}"
    if kind == "alert_resolved":
        return f"{head} resolved{where}"
    return f"{head}: {kind.removeprefix('alert_').replace('_', ' ')}"


def _escalation(kind: str, data: dict[str, Any]) -> str:
    if kind == "paging_started":
        return (f"paging started ({data.get('reason')}): policy {data.get('policy')}, "
                f"{data.get('urgency')} urgency")
    if kind == "escalated":
        people = ", ".join(f"{p['user']} ({p['via']})" for p in data.get("paged", []))
        where = f"rule {data.get('rule')} of {data.get('rules')}"
        if data.get("loops", 1) > 1:
            where += f", loop {data.get('loop')} of {data.get('loops')}"
        return f"escalation {where}: paged {people}"
    if kind == "nobody_to_page":
        if data.get("schedule"):
            return f"nobody paged from schedule {data['schedule']}: {data.get('why')}"
        if data.get("user"):
            return f"nobody paged from user {data['user']}: {data.get('why')}"
        return f"nobody paged at rule {data.get('rule')}: {data.get('why')}"
    if kind == "paging_stopped":
        text = f"paging stopped: {data.get('status')}"
        if data.get("retrigger_at"):
            text += f"; re-triggers at {data['retrigger_at']} unless resolved"
        return text
    if kind == "escalation_done":
        return f"escalation finished: {data.get('reason')}"
    return kind.replace("_", " ")


def _notification(kind: str, data: dict[str, Any]) -> str:
    what = "test notification" if data.get("kind") == "test" else "page"
    head = f"{what} to {data.get('user')} by {data.get('contact')}"
    detail = data.get("detail")
    if kind == "notification_sent":
        return f"{head} sent"
    if kind == "notification_failed":
        return f"{head} failed: {detail}"
    if kind == "notification_retrying":
        return (f"{head} failed (attempt {data.get('attempt')} of {data.get('max_attempts')}), "
                f"trying again at {str(data.get('retry_at', ''))[11:19]}: {detail}")
    if kind == "notification_unknown":
        return f"{head}: outcome unknown ({detail})"
    return f"{head}: {kind.removeprefix('notification_').replace('_', ' ')}"


def entry_json(entry: TimelineEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": entry.at.isoformat(), "kind": entry.kind, "actor": entry.actor,
            "source": entry.source, "marked": entry.marked, "text": describe(entry),
            "data": json.loads(json.dumps(entry.data, default=str))}
