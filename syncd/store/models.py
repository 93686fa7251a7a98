"""SQLAlchemy models of the incident store (DESIGN.md, "Data model").

Every timestamp is stored as timezone-aware UTC; SQLite, which keeps no zone, hands them back naive
and :class:`UTCDateTime` puts the zone back so the rest of the code never sees a naive datetime.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from syncd.clock import utc

INCIDENT_STATUSES = ("triggered", "acknowledged", "resolved")
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
URGENCIES = ("high", "low")
VISIBILITIES = ("internal", "public")
OUTBOX_STATES = ("pending", "in_flight", "done", "dead")
# Outbox operations: create/update/comment go out to a connector; "inbound" is a remote record
# that could not be applied, kept as a dead letter so an operator can see and retry it.
OUTBOX_OPERATIONS = ("create", "update", "comment", "inbound")


class UTCDateTime(TypeDecorator):
    """A DateTime that always returns aware UTC values, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else utc(value)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Incident(Base):
    __tablename__ = "incident"
    __table_args__ = (
        CheckConstraint(_one_of("status", INCIDENT_STATUSES), name="ck_incident_status"),
        CheckConstraint(f"priority IS NULL OR {_one_of('priority', PRIORITIES)}",
                        name="ck_incident_priority"),
        CheckConstraint(f"urgency IS NULL OR {_one_of('urgency', URGENCIES)}",
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
    version: Mapped[int] = mapped_column(Integer, default=1)

    links: Mapped[list["Link"]] = relationship(back_populates="incident", lazy="selectin",
                                               order_by="Link.id")

    @property
    def number(self) -> str:
        """The human number people say out loud, e.g. SYN-42."""
        return f"SYN-{self.id}"


class Link(Base):
    """One remote record mirroring an incident, with the shadow: its field values as last read from
    or written to that remote. Inbound diffs are taken against the shadow (invariant 1: no echo)."""

    __tablename__ = "link"
    __table_args__ = (
        UniqueConstraint("connector", "remote_id", name="uq_link_connector_remote"),
        UniqueConstraint("incident_id", "connector", name="uq_link_incident_connector"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    connector: Mapped[str] = mapped_column(String(64))
    remote_id: Mapped[str] = mapped_column(String(128))
    remote_key: Mapped[str] = mapped_column(String(128))
    remote_url: Mapped[str] = mapped_column(Text, default="")
    remote_version: Mapped[str | None] = mapped_column(String(64))
    shadow: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    synced_at: Mapped[datetime]

    incident: Mapped[Incident] = relationship(back_populates="links")


class Comment(Base):
    __tablename__ = "comment"
    __table_args__ = (
        CheckConstraint(_one_of("visibility", VISIBILITIES), name="ck_comment_visibility"),
        Index("ix_comment_incident", "incident_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(255))
    visibility: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(64))     # connector name, "api", "cli" or "syncd"
    created_at: Mapped[datetime]


class CommentLink(Base):
    """Which remote comment a store comment is: imported from it, or written as it."""

    __tablename__ = "comment_link"
    __table_args__ = (
        UniqueConstraint("connector", "remote_comment_id", name="uq_comment_link_remote"),
        UniqueConstraint("comment_id", "connector", name="uq_comment_link_comment_connector"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    comment_id: Mapped[int] = mapped_column(ForeignKey("comment.id", ondelete="CASCADE"))
    connector: Mapped[str] = mapped_column(String(64))
    remote_comment_id: Mapped[str] = mapped_column(String(128))


class TimelineEntry(Base):
    """Append-only history of an incident: what happened, when, by whom, from where."""

    __tablename__ = "timeline_entry"
    __table_args__ = (Index("ix_timeline_incident_at", "incident_id", "at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class OutboxItem(Base):
    """A durable unit of delivery to one connector, committed with the change that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(_one_of("state", OUTBOX_STATES), name="ck_outbox_state"),
        CheckConstraint(_one_of("operation", OUTBOX_OPERATIONS), name="ck_outbox_operation"),
        Index("ix_outbox_due", "state", "next_attempt_at"),
        Index("ix_outbox_pair", "incident_id", "connector", "state"),
        Index("ix_outbox_remote", "connector", "remote_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    connector: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(16))
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    remote_id: Mapped[str | None] = mapped_column(String(128))   # the record an inbound row is about
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SyncCursorRow(Base):
    """Per connector: where polling resumes, and whether an operator paused it."""

    __tablename__ = "sync_cursor"

    connector: Mapped[str] = mapped_column(String(64), primary_key=True)
    watermark: Mapped[datetime | None]
    seen: Mapped[list[Any]] = mapped_column(default=list)
    last_poll_at: Mapped[datetime | None]
    paused_reason: Mapped[str | None] = mapped_column(Text)
    # Set when an operator resumes a paused connector: the next poll's mass change is accepted.
    accept_mass_change: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]
