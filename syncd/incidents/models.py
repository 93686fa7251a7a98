"""Incident, comment and timeline tables (DESIGN.md, "Data model")."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from syncd.incidents.fields import (
    INCIDENT_STATUSES,
    PRIORITIES,
    URGENCIES,
    VISIBILITIES,
)
from syncd.store.base import Base, one_of

if TYPE_CHECKING:
    from syncd.engine.models import Link


class Incident(Base):
    __tablename__ = "incident"
    __table_args__ = (
        CheckConstraint(one_of("status", INCIDENT_STATUSES), name="ck_incident_status"),
        CheckConstraint(f"priority IS NULL OR {one_of('priority', PRIORITIES)}",
                        name="ck_incident_priority"),
        CheckConstraint(f"urgency IS NULL OR {one_of('urgency', URGENCIES)}",
                        name="ck_incident_urgency"),
        Index("ix_incident_status_updated", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="triggered")
    priority: Mapped[str | None] = mapped_column(String(2))
    urgency: Mapped[str | None] = mapped_column(String(8))
    service: Mapped[str | None] = mapped_column(String(255))
    group: Mapped[str | None] = mapped_column("assignment_group", String(255))
    assignee: Mapped[str | None] = mapped_column(String(255))
    resolution: Mapped[str | None] = mapped_column(Text)
    custom: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    # When the store last changed each canonical field (ISO UTC, syncd's clock): conflicts settled
    # by newest_wins compare one field's times on one time base, not whole records.
    field_changed_at: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)

    links: Mapped[list["Link"]] = relationship(back_populates="incident", lazy="selectin",
                                               order_by="Link.id")

    @property
    def number(self) -> str:
        """The human number people say out loud, e.g. SYN-42."""
        return f"SYN-{self.id}"


class Comment(Base):
    __tablename__ = "comment"
    __table_args__ = (
        CheckConstraint(one_of("visibility", VISIBILITIES), name="ck_comment_visibility"),
        Index("ix_comment_incident", "incident_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(255))
    visibility: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(64))     # connector name, "api", "cli" or "syncd"
    created_at: Mapped[datetime]


class TimelineEntry(Base):
    """Append-only history of an incident: what happened, when, by whom, from where. ``marked``
    flags a key event (the postmortem shows marked events first)."""

    __tablename__ = "timeline_entry"
    __table_args__ = (Index("ix_timeline_incident_at", "incident_id", "at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    marked: Mapped[bool] = mapped_column(Boolean, default=False)


# Incident.links names Link: whoever loads these tables gets the engine's too, so the mapper can
# be configured (engine.models imports this module; by now everything above is defined).
import syncd.engine.models  # noqa: E402,F401
