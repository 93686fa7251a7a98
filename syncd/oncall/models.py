"""On-call tables: schedule overrides (people add and remove them; the schedules themselves live in
the response files) and escalation rows (one per incident under escalation, DESIGN.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from syncd.store.base import Base, one_of

ESCALATION_STATES = ("active", "acknowledged", "done", "stopped")


class ScheduleOverride(Base):
    """``user_id`` is on call in ``schedule_id`` from ``starts_at`` until ``ends_at``, over every
    layer of the schedule."""

    __tablename__ = "schedule_override"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="ck_schedule_override_span"),
        Index("ix_schedule_override_schedule_end", "schedule_id", "ends_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]


class Escalation(Base):
    """One incident's escalation: the policy as copied when it started (an edit of the response
    files never changes a running escalation), where it stands, and when its next step is due.

    ``epoch`` counts (re)starts: an acknowledgement timeout or a re-trigger starts the policy again
    from its first rule, and the notification rows of the new run must not collide with the old
    run's. ``step_token`` grows at every step fired: the fencing token of the step."""

    __tablename__ = "escalation"
    __table_args__ = (
        CheckConstraint(one_of("state", ESCALATION_STATES), name="ck_escalation_state"),
        UniqueConstraint("incident_id", "origin", name="uq_escalation_incident_origin"),
        Index("ix_escalation_due", "state", "next_step_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    # What started it: "service" (the incident's service policy) or "play:<id>" (a play's responders).
    origin: Mapped[str] = mapped_column(String(160), default="service")
    service_id: Mapped[str | None] = mapped_column(String(128))
    policy_id: Mapped[str] = mapped_column(String(128))
    policy: Mapped[dict[str, Any]] = mapped_column()          # EscalationPolicy.model_dump(mode="json")
    urgency: Mapped[str] = mapped_column(String(8))
    ack_timeout_seconds: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="active")
    epoch: Mapped[int] = mapped_column(Integer, default=1)
    rule_index: Mapped[int] = mapped_column(Integer, default=0)
    loop: Mapped[int] = mapped_column(Integer, default=0)
    next_step_at: Mapped[datetime | None]
    step_token: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)          # why it stopped or finished
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
