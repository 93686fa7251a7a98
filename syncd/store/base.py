"""The shared declarative Base every domain's tables derive from, and its column types.

Every timestamp is stored as timezone-aware UTC; SQLite, which keeps no zone, hands them back naive
and :class:`UTCDateTime` puts the zone back so the rest of the code never sees a naive datetime.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, TypeDecorator
from sqlalchemy.orm import DeclarativeBase

from syncd.clock import utc


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


def one_of(column: str, values: tuple[str, ...]) -> str:
    """A CHECK constraint's text: ``column`` holds one of ``values``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


def import_all_models() -> None:
    """Register every domain's tables on Base.metadata (migrations and schema checks need all)."""
    import syncd.alerts.models  # noqa: F401
    import syncd.engine.models  # noqa: F401
    import syncd.incidents.models  # noqa: F401
    import syncd.notify.models  # noqa: F401
    import syncd.oncall.models  # noqa: F401
    import syncd.response.models  # noqa: F401
    import syncd.store.models  # noqa: F401
