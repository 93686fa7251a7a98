"""The action_run table: one row per Custom Incident Action run (DESIGN.md, "Data model")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from syncd.store.base import Base, one_of

ACTION_RUN_STATES = ("pending", "running", "succeeded", "failed", "unknown")


class ActionRun(Base):
    """Written with its timeline entry before the call, so a crash mid-call leaves a row that
    says so (``running`` becomes ``unknown``: the receiver may or may not have acted)."""

    __tablename__ = "action_run"
    __table_args__ = (
        CheckConstraint(one_of("state", ACTION_RUN_STATES), name="ck_action_run_state"),
        Index("ix_action_run_incident", "incident_id", "id"),
        Index("ix_action_run_state", "state", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    # method, URL (secrets redacted), header names, body size: what was asked, never a secret.
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timeout_seconds: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
