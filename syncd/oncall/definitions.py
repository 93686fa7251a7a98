"""Users, schedules, escalation policies and services as the response files define them.

Pure pydantic models: each checks what it can alone (a time zone exists, a duration is long
enough); what names something in another definition (a rule's contact, a policy's schedule) is
checked by :func:`syncd.response_files.load_response_files`, which sees every file. The keys are
documented in docs/configuration.md ("Response files").
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, StringConstraints,
    field_validator, model_validator,
)

from syncd.config import Duration, PositiveDuration, Text, format_duration, parse_duration, shown
from syncd.mapping.model import PRIORITIES, canonical_field
from syncd.yamlsource import did_you_mean, redact_url

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"   # appears in URLs (calendar feeds) and CLIs
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER)]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ROTATIONS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1)}
MIN_ESCALATE_AFTER = timedelta(minutes=1)
MAX_GROUPING_WINDOW = timedelta(hours=24)
# What an alert carries that alert grouping may compare (custom_details.<key> too).
ALERT_FIELDS = ("summary", "source", "severity", "component", "group", "class")


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        hint = did_you_mean(value, available_timezones())
        raise ValueError(f"unknown time zone {shown(value)}: expected an IANA name like "
                         f"Europe/Berlin or America/New_York" + (f" ({hint})" if hint else ""))
    return value


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        raise ValueError(f"expected an email address like alice@example.com, got {shown(value)}")
    return value


def _notification_url(value: str) -> str:
    """An apprise URL apprise can send with (a typo in a contact is found at load, not at 3am)."""
    from syncd.notify.channels import parse_problem   # apprise loads its plugins on first use
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*://\S*", value):
        raise ValueError(f"expected an apprise URL like mailto://… or slack://…, got "
                         f"{shown(value)}")
    problem = parse_problem(value)
    if problem is not None:
        raise ValueError(f"{problem}; got {shown(value)}")
    return value


def _clock_time(value: Any) -> time:
    """``"09:00"`` (YAML reads an unquoted 09:00 as a number of minutes, so accept that too)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return time(value // 60, value % 60)      # YAML 1.1 sexagesimal: 09:00 -> 540
    if isinstance(value, str) and re.fullmatch(r"\d{2}:\d{2}", value):
        hours, minutes = map(int, value.split(":"))
        if hours < 24 and minutes < 60:
            return time(hours, minutes)
    raise ValueError(f'expected a time of day like "09:00", got {shown(value)}')


def _local_start(value: Any) -> datetime:
    """The rotation's start, a wall-clock time in the schedule's zone (no offset)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f'expected a local date and time like "2026-11-02T09:00", got '
                             f"{shown(value)}") from None
    if not isinstance(value, datetime):
        raise ValueError(f'expected a local date and time like "2026-11-02T09:00", got '
                         f"{shown(value)}")
    if value.tzinfo is not None:
        raise ValueError("write the start without an offset: it is read in the schedule's "
                         "time_zone")
    return value


def _rotation(value: Any) -> Any:
    """hourly, daily, weekly (calendar steps in the schedule's zone) or a fixed duration."""
    if value in ROTATIONS:
        return value
    try:
        duration = parse_duration(value)
    except ValueError:
        duration = None
    if duration is None or duration <= timedelta(0) or isinstance(value, (int, float)):
        raise ValueError(f"expected hourly, daily, weekly or a duration like 12h or 3d, got "
                         f"{shown(value)}")
    return duration


def _at_least_a_minute(value: timedelta) -> timedelta:
    if value < MIN_ESCALATE_AFTER:
        raise ValueError(f"must be at least 1m (a person needs time to answer), got "
                         f"{format_duration(value)}")
    return value


TimeZone = Annotated[str, AfterValidator(_time_zone)]
Email = Annotated[str, AfterValidator(_email)]
NotificationUrl = Annotated[str, AfterValidator(_notification_url)]
ClockTime = Annotated[time, BeforeValidator(_clock_time)]
LocalStart = Annotated[datetime, BeforeValidator(_local_start)]
Rotation = Annotated[Union[Literal["hourly", "daily", "weekly"], timedelta],
                     BeforeValidator(_rotation)]
EscalateAfter = Annotated[Duration, AfterValidator(_at_least_a_minute)]


class Definition(BaseModel):
    """A definition from a response file: immutable, unknown keys refused, URLs redacted in reprs."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if isinstance(value, dict):
                value = {key: redact_url(v) if isinstance(v, str) else v for key, v in value.items()}
            yield name, redact_url(value) if isinstance(value, str) else value


# -- users ---------------------------------------------------------------------------------------

class ContactRule(Definition):
    contact: Text
    after: Duration = timedelta(0)


class NotificationRules(Definition):
    """Which contacts a page reaches, and when, by the incident's urgency."""

    high: list[ContactRule] = Field(default_factory=list)
    low: list[ContactRule] = Field(default_factory=list)


class User(Definition):
    id: Identifier
    name: Text
    email: Email
    time_zone: TimeZone = "UTC"
    # contact name -> apprise URL; secrets come through ${VAR} and are redacted when shown
    contacts: dict[Annotated[str, StringConstraints(pattern=IDENTIFIER)], NotificationUrl] = Field(
        default_factory=dict)
    # Left out: every contact at once, for either urgency.
    rules: NotificationRules | None = None

    @property
    def notification_rules(self) -> NotificationRules:
        if self.rules is not None:
            return self.rules
        every = [ContactRule(contact=name) for name in self.contacts]
        return NotificationRules(high=every, low=every)


# -- schedules -----------------------------------------------------------------------------------

class Restriction(Definition):
    """On call only on these days between ``from`` and ``to`` (``to`` before ``from``: overnight)."""

    days: list[Literal[WEEKDAYS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(WEEKDAYS), min_length=1)
    from_: ClockTime = Field(alias="from")
    to: ClockTime

    @model_validator(mode="after")
    def _not_empty(self) -> Restriction:
        if self.from_ == self.to:
            raise ValueError("from and to are the same time: the window would be empty; leave "
                             "restrictions out to be on call all day")
        return self


class Layer(Definition):
    name: Text
    start: LocalStart
    rotation: Rotation
    users: list[Identifier] = Field(min_length=1)
    restrictions: list[Restriction] = Field(default_factory=list)


class Schedule(Definition):
    """Who is on call when: a later layer wins wherever it has someone on call."""

    id: Identifier
    name: Text
    time_zone: TimeZone
    layers: list[Layer] = Field(min_length=1)


# -- escalation policies -------------------------------------------------------------------------

class Target(Definition):
    """Whom an escalation rule pages: one user, or whoever is on call in one schedule."""

    user: Identifier | None = None
    schedule: Identifier | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        if (self.user is None) == (self.schedule is None):
            raise ValueError("a target names exactly one of user or schedule, e.g. "
                             "{schedule: payments-primary}")
        return self


class EscalationRule(Definition):
    targets: list[Target] = Field(min_length=1)
    escalate_after: EscalateAfter


class EscalationPolicy(Definition):
    id: Identifier
    name: Text | None = None
    repeat: int = Field(default=0, ge=0)     # how many more times the policy runs after its end
    rules: list[EscalationRule] = Field(min_length=1)


# -- services ------------------------------------------------------------------------------------

class PageOn(Definition):
    """Incidents from tickets page when created at or raised to one of these priorities."""

    priority: list[Literal[PRIORITIES]] = Field(default_factory=list)  # type: ignore[valid-type]


class AlertGrouping(Definition):
    """How alerts of a service join an open incident instead of opening one each.

    ``none``: every alert opens an incident. ``time``: alerts within ``window`` of the incident's
    first alert join it. ``content``: alerts with the same values of ``fields`` within
    ``window`` join it. The alerts issue implements it; this only validates it."""

    type: Literal["none", "time", "content"]
    window: PositiveDuration = timedelta(minutes=5)
    fields: list[Text] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _content_when_fields(cls, value: Any) -> Any:
        """Left out, the type is content when fields are given, else time."""
        if isinstance(value, dict) and value.get("type") is None:
            return {**value, "type": "content" if value.get("fields") else "time"}
        return value

    @field_validator("window")
    @classmethod
    def _at_most_a_day(cls, value: timedelta) -> timedelta:
        if value > MAX_GROUPING_WINDOW:
            raise ValueError(f"must be at most 24h, got {format_duration(value)}")
        return value

    @field_validator("fields")
    @classmethod
    def _alert_fields(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in ALERT_FIELDS and not re.fullmatch(r"custom_details\.\w+", name):
                hint = did_you_mean(name, ALERT_FIELDS)
                raise ValueError(f"unknown alert field {shown(name)}: expected "
                                 f"{', '.join(ALERT_FIELDS)} or custom_details.<key>"
                                 + (f" ({hint})" if hint else ""))
        return value

    @model_validator(mode="after")
    def _fields_for_content_only(self) -> AlertGrouping:
        if self.type == "content" and not self.fields:
            raise ValueError("type content needs fields, e.g. fields: [component]")
        if self.type != "content" and self.fields:
            raise ValueError(f"fields apply to type content, not {self.type}")
        return self


SEVERITIES = ("critical", "error", "warning", "info")     # the Events API v2's


class SeverityMapping(Definition):
    priority: Literal[PRIORITIES]  # type: ignore[valid-type]
    urgency: Literal["high", "low"]


MATCHABLE_FIELDS = ("status", "priority", "urgency", "service", "group", "assignee")


def _canonical_match(value: dict[str, list[Any]]) -> dict[str, list[Any]]:
    for name, values in value.items():
        spec = canonical_field(name)
        if spec is None or name not in MATCHABLE_FIELDS and not name.startswith("custom."):
            hint = did_you_mean(name, MATCHABLE_FIELDS)
            raise ValueError(f"cannot match on {shown(name)}: expected one of "
                             f"{', '.join(MATCHABLE_FIELDS)} or custom.<name>"
                             + (f" ({hint})" if hint else ""))
        wrong = [v for v in values if spec.choices is not None and v not in spec.choices]
        if wrong:
            raise ValueError(f"{name} has no value {shown(wrong[0])}: expected one of "
                             f"{', '.join(spec.choices)}")
    return value


class Service(Definition):
    id: Identifier
    name: Text
    escalation_policy: Identifier
    urgency: Literal["high", "low", "by_priority"] = "high"
    ack_timeout: Duration = timedelta(0)        # 0: an acknowledged incident never re-triggers
    auto_resolve: Duration = timedelta(0)       # 0: a triggered incident never resolves itself
    # Incidents from tickets whose canonical fields have one of these values belong here.
    match: Annotated[dict[str, list[Any]], AfterValidator(_canonical_match)] = Field(
        default_factory=dict)
    page_on: PageOn = PageOn()
    routing_key: SecretStr | None = None        # Events API v2 events with this key belong here
    alert_grouping: AlertGrouping = AlertGrouping(type="none")
    resolve_with_alerts: bool = True            # an alerts' incident resolves with its last alert
    events_per_minute: int = Field(default=120, ge=1)   # per routing key, then 429 (PagerDuty's)
    # An alert's severity -> its incident's priority and urgency; left out: the defaults of
    # syncd.alerts.grouping.SEVERITY (critical P1 high, error P2 high, warning P3 low, info P4 low)
    severities: dict[Literal[SEVERITIES], SeverityMapping] = Field(  # type: ignore[valid-type]
        default_factory=dict)

