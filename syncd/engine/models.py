"""The sync engine's tables: links with their shadows, comment links, the outbox, inbound dead
letters and per-connector cursors (DESIGN.md, "Data model")."""

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
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from syncd.incidents.models import Incident
from syncd.store.base import Base, one_of
from syncd.store.queue import QUEUE_STATES, ClaimableRow

OUTBOX_OPERATIONS = ("create", "update", "comment")
INBOUND_DEAD_LETTER_STATES = ("dead", "retrying", "closed")


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


class OutboxItem(ClaimableRow, Base):
    """A durable unit of delivery to one connector, committed with the change that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(one_of("state", QUEUE_STATES), name="ck_outbox_state"),
        CheckConstraint(one_of("operation", OUTBOX_OPERATIONS), name="ck_outbox_operation"),
        Index("ix_outbox_due", "state", "next_attempt_at"),
        Index("ix_outbox_pair", "incident_id", "connector", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    connector: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(16))
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)


class InboundDeadLetter(Base):
    """A remote record version that could not be applied, with the reason, for an operator.
    ``retrying``: an operator asked for another read; ``closed``: a later read applied."""

    __tablename__ = "inbound_dead_letter"
    __table_args__ = (
        CheckConstraint(one_of("state", INBOUND_DEAD_LETTER_STATES), name="ck_inbound_dead_letter_state"),
        Index("ix_inbound_dead_letter_remote", "connector", "remote_id"),
        Index("ix_inbound_dead_letter_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connector: Mapped[str] = mapped_column(String(64))
    remote_id: Mapped[str] = mapped_column(String(128))
    remote_key: Mapped[str] = mapped_column(String(128))
    version: Mapped[str | None] = mapped_column(String(64))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="dead")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
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
