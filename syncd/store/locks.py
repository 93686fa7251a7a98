"""Singleton locks: a loop that must run in one replica at a time (a connector's poller,
housekeeping) runs where its lock is held. On PostgreSQL the lock is an advisory lock on one
dedicated connection, as in GoAlert: when a replica dies its connection closes, PostgreSQL releases
the lock, and the next replica to ask takes over. SQLite serves one process (a file lock refuses a
second daemon), so there the process holds every lock."""

from __future__ import annotations

import hashlib
import logging
import threading

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)


def advisory_key(name: str) -> int:
    """A stable signed 64-bit lock key for a name (Python's hash() changes between processes)."""
    digest = hashlib.sha256(f"syncd:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_key(schema: str, name: str) -> int:
    """The advisory lock key of the lock ``name`` ("poller:jira", "housekeeping") in the store
    living in ``schema``. Advisory locks are database-wide: two deployments whose stores are two
    schemas of one database must not take each other's locks. The schema goes after the lock's
    kind, so pollers keep the keys earlier versions used (no two pollers in a rolling upgrade)."""
    kind, _, subject = name.partition(":")
    return advisory_key(f"{kind}:{schema}:{subject}" if subject else f"{kind}:{schema}")


def poller_key(schema: str, connector: str) -> int:
    return lock_key(schema, f"poller:{connector}")


class SingletonLock:
    """One named lock for this process; ``holds()`` takes it when it is free."""

    def __init__(self, db: Engine, name: str):
        self.db = db
        self.name = name
        self.key: int | None = None        # known once connected: it names the store's schema
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    @property
    def exclusive(self) -> bool:
        return self.db.dialect.name == "postgresql"

    def holds(self) -> bool:
        """True when this process holds the lock now; tries to take it if it has not got it.
        "Someone else has it" is a normal answer, not an error."""
        if not self.exclusive:
            return True
        with self._lock:
            if self._connection is not None:
                try:
                    self._connection.execute(text("SELECT 1"))
                    return True
                except Exception:          # the connection died, and the lock with it
                    log.warning("lost a singleton lock's connection", extra={"lock": self.name})
                    self._drop()
            # Autocommit: the connection must not sit "idle in transaction" while it holds the
            # lock (servers with idle_in_transaction_session_timeout would kill it).
            connection = self.db.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                if self.key is None:
                    schema = connection.execute(text("SELECT current_schema()")).scalar()
                    self.key = lock_key(schema, self.name)
                got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                         {"key": self.key}).scalar()
            except Exception:
                connection.close()
                raise
            if not got:
                connection.close()
                return False
            self._connection = connection
            log.info("took a singleton lock", extra={"lock": self.name})
            return True

    def release(self) -> None:
        with self._lock:
            if self._connection is not None:
                try:
                    self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                except Exception:
                    pass
                self._drop()

    def _drop(self) -> None:
        try:
            assert self._connection is not None
            self._connection.invalidate()
            self._connection.close()
        except Exception:
            pass
        self._connection = None
