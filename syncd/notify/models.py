"""The notification table: one row per message to one contact of one person (DESIGN.md).

States: ``pending`` (due at ``due_at``) → ``sending`` (claimed, with a ``deadline``) → ``sent``,
``failed`` (the channel said no, after the retries), ``unknown`` (the process died mid-send or the
channel timed out: the message may have gone, so it is never resent automatically) or
``cancelled`` (the incident was acknowledged or resolved before a later contact was due)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from syncd.store.base import Base, one_of

NOTIFICATION_STATES = ("pending", "sending", "sent", "failed", "unknown", "cancelled")
NOTIFICATION_KINDS = ("page", "status_update", "test")
SETTLED_STATES = ("sent", "failed", "unknown", "cancelled")


class Notification(Base):
    __tablename__ = "notification"
    __table_args__ = (
        CheckConstraint(one_of("state", NOTIFICATION_STATES), name="ck_notification_state"),
        CheckConstraint(one_of("kind", NOTIFICATION_KINDS), name="ck_notification_kind"),
        # What makes it the same page: one per step of one run of one escalation, person, contact.
        UniqueConstraint("escalation_id", "epoch", "loop", "rule_index", "user_id", "contact",
                         name="uq_notification_page"),
        Index("ix_notification_due", "state", "due_at"),
        Index("ix_notification_incident", "incident_id", "id"),
        Index("ix_notification_contact", "user_id", "contact", "sent_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    escalation_id: Mapped[int | None] = mapped_column(ForeignKey("escalation.id",
                                                                 ondelete="CASCADE"))
    epoch: Mapped[int | None] = mapped_column(Integer)
    loop: Mapped[int | None] = mapped_column(Integer)
    rule_index: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(String(128))
    contact: Mapped[str] = mapped_column(String(128))
    urgency: Mapped[str | None] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime]
    deadline: Mapped[datetime | None]              # while sending: past it, the outcome is unknown
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claim_token: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None]
    detail: Mapped[str | None] = mapped_column(Text)   # the channel's answer, or why not sent
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
