"""Opening the store: the engine with each database's settings, sessions, and schema migrations.

SQLite runs in WAL mode with a busy timeout, and every transaction starts with ``BEGIN IMMEDIATE``
so that concurrent writers in one process queue up instead of failing with "database is locked" when
a reader upgrades to a writer. PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
READONLY_OPTION = "syncd_readonly"


class SchemaOutOfDate(Exception):
    """The database's schema is not the one this version of syncd needs."""


def open_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """An engine for the store URL, tuned for the database it names."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False,
                                                              "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, echo=echo, pool_size=pool_size, max_overflow=pool_size,
                         pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None   # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        # Readers need no write lock (WAL lets them run beside the writer); writers take it at
        # once, so they queue on the busy timeout instead of deadlocking on an upgrade.
        readonly = connection.get_execution_options().get(READONLY_OPTION)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session], *, readonly: bool = False) -> Iterator[Session]:
    """One unit of work: commits when the block ends, rolls back if it raises. A ``readonly``
    one must not write; on SQLite it then does not wait for, nor hold, the write lock."""
    bind = sessions.kw["bind"]
    with sessions(bind=bind.execution_options(**{READONLY_OPTION: True}) if readonly else bind
                  ) as session, session.begin():
        yield session


# -- migrations ---------------------------------------------------------------------------------

def _alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    head = script.get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(_alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(_alembic_config(engine), revision)


def ensure_schema(engine: Engine, *, auto_upgrade: bool) -> None:
    """Refuse to run on a schema other than the one this code needs, unless told to upgrade it."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    known = {script.revision for script in
             ScriptDirectory.from_config(_alembic_config(engine)).walk_revisions()}
    if current is not None and current not in known:
        raise SchemaOutOfDate(
            f"the store's schema is at {current}, which this syncd does not know (it needs {head}): "
            f"a newer syncd has migrated this database; run that version")
    if auto_upgrade:
        upgrade(engine)
        return
    shown = current or "empty (no syncd tables)"
    raise SchemaOutOfDate(
        f"the store's schema is at {shown}, this syncd needs {head}: run `syncd db upgrade` "
        f"(or set store.auto_upgrade: true)")
