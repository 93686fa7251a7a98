"""Store-wide tables: which daemon processes are alive (their claims end with them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from syncd.store.base import Base


class ProcessHeartbeat(Base):
    """One row per running daemon process, touched every few seconds. A claim whose process has
    stopped beating is taken back at once instead of waiting for its lease (after a kill -9)."""

    __tablename__ = "process_heartbeat"

    process: Mapped[str] = mapped_column(String(128), primary_key=True)   # host:pid:start
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime]
