"""Alert tables (DESIGN.md, "Data model": alert): alerts from the Events API v2, the open groups
alerts join, and change events kept for the postmortem.

The database decides the two "only one" rules, not the code: at most one open alert per
(service, dedup key) and one open group per (service, grouping key), each by a partial unique
index over the open rows, so two requests racing the same key cannot both create one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from syncd.store.base import Base, one_of

ALERT_STATUSES = ("triggered", "acknowledged", "resolved")
SEVERITIES = ("critical", "error", "warning", "info")
_OPEN_ALERT = text("status != 'resolved'")
_OPEN_GROUP = text("is_open")


class Alert(Base):
    """One alert: what a source reported under one dedup key until it resolved. The routing key
    is not kept: it is a secret of the response files, and ``service`` says where it led."""

    __tablename__ = "alert"
    __table_args__ = (
        CheckConstraint(one_of("status", ALERT_STATUSES), name="ck_alert_status"),
        CheckConstraint(one_of("severity", SEVERITIES), name="ck_alert_severity"),
        Index("ux_alert_open_dedup_key", "service", "dedup_key", unique=True,
              sqlite_where=_OPEN_ALERT, postgresql_where=_OPEN_ALERT),
        Index("ix_alert_incident", "incident_id"),
        Index("ix_alert_service_status", "service", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(128))
    dedup_key: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="triggered")
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    component: Mapped[str | None] = mapped_column(Text)
    group: Mapped[str | None] = mapped_column("alert_group", Text)
    class_: Mapped[str | None] = mapped_column("alert_class", Text)
    custom_details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    links: Mapped[list[Any]] = mapped_column(default=list)
    images: Mapped[list[Any]] = mapped_column(default=list)
    client: Mapped[str | None] = mapped_column(Text)
    client_url: Mapped[str | None] = mapped_column(Text)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incident.id", ondelete="SET NULL"))
    event_count: Mapped[int] = mapped_column(Integer, default=1)
    occurred_at: Mapped[datetime | None]      # the payload's timestamp, when the source sent one
    created_at: Mapped[datetime]
    last_event_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]


class AlertGroup(Base):
    """The incident that alerts with one grouping key join while its window lasts (until
    ``window_ends_at``) and it is not resolved; ``is_open`` goes false when either ends."""

    __tablename__ = "alert_group"
    __table_args__ = (
        Index("ux_alert_group_open_key", "service", "grouping_key", unique=True,
              sqlite_where=_OPEN_GROUP, postgresql_where=_OPEN_GROUP),
        Index("ix_alert_group_incident", "incident_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(128))
    grouping_key: Mapped[str] = mapped_column(String(64))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    is_open: Mapped[bool] = mapped_column(Boolean, default=True)
    opened_at: Mapped[datetime]
    window_ends_at: Mapped[datetime]


class ChangeEvent(Base):
    """A change event (a deploy, a config push): never pages, kept as context for the
    postmortem and put on the timeline of the service's open incidents."""

    __tablename__ = "change_event"
    __table_args__ = (Index("ix_change_event_service_received", "service", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(128))
    summary: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime | None]
    custom_details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    links: Mapped[list[Any]] = mapped_column(default=list)
    received_at: Mapped[datetime]
