"""Which due messages for ONE contact go out now, bundled how, and when to look again.

Pure: data in, a plan out. GoAlert's rules are the model: a contact gets at most ``rate.messages``
messages per ``rate.per`` (1 per minute by default); several pages due for the same incident
collapse into one message (dedup: one page per incident, person and contact at a time); when the
throttle leaves fewer messages than incidents waiting, the pages of the remaining incidents share
the last message allowed (bundling), so nobody waits a minute per incident. Tests and status
updates are never bundled with pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Rate:
    """At most ``messages`` messages per ``per`` to one contact."""

    messages: int = 1
    per: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if self.messages < 1 or self.per <= timedelta(0):
            raise ValueError(f"a rate needs at least 1 message per a positive span, got "
                             f"{self.messages} per {self.per}")


DEFAULT_RATE = Rate()


@dataclass(frozen=True)
class PendingMessage:
    """A notification row waiting for one contact (what the throttle needs of it)."""

    id: int
    due_at: datetime
    incident_id: int | None = None
    kind: str = "page"


@dataclass(frozen=True)
class Plan:
    send_now: list[list[int]]        # each inner list: the row ids one message carries
    wait_until: datetime | None      # when something not sent now may go; None: nothing left


def plan(pending: list[PendingMessage], recent_sends: list[datetime], now: datetime,
         rate: Rate = DEFAULT_RATE) -> Plan:
    """``pending``: this contact's rows not yet sent; ``recent_sends``: when messages went to it
    (one instant per message; older ones are ignored)."""
    window_start = now - rate.per
    recent = sorted({sent for sent in recent_sends if window_start < sent <= now})
    free = max(rate.messages - len(recent), 0)
    due = sorted((message for message in pending if message.due_at <= now),
                 key=lambda message: (message.due_at, message.id))
    later = [message.due_at for message in pending if message.due_at > now]

    groups = _groups(due)
    send_now: list[list[int]] = []
    while groups and free:
        if free == 1 and groups[0][0] == "page":
            bundle = [ids for kind, ids in groups if kind == "page"]
            send_now.append([row for ids in bundle for row in ids])
            groups = [group for group in groups if group[0] != "page"]
        else:
            send_now.append(groups.pop(0)[1])
        free -= 1

    if groups:
        # The window's oldest messages leave it first; each one frees a slot.
        used = len(recent) + len(send_now)
        next_slot = (recent[used - rate.messages] + rate.per if used - rate.messages < len(recent)
                     else now + rate.per)
        later.append(next_slot)
    return Plan(send_now=send_now, wait_until=min(later) if later else None)


def _groups(due: list[PendingMessage]) -> list[tuple[str, list[int]]]:
    """Due rows as messages: pages by incident (dedup), every other row alone; earliest first."""
    groups: list[tuple[str, list[int]]] = []
    by_incident: dict[int | None, list[int]] = {}
    for message in due:
        if message.kind == "page":
            if message.incident_id not in by_incident:
                by_incident[message.incident_id] = []
                groups.append(("page", by_incident[message.incident_id]))
            by_incident[message.incident_id].append(message.id)
        else:
            groups.append((message.kind, [message.id]))
    return groups
