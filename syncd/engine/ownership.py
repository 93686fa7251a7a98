"""Which replica polls a connector. On PostgreSQL it is whoever holds the connector's advisory lock,
as in GoAlert: the lock lives on one dedicated connection, so when a replica dies its connection
closes, PostgreSQL releases the lock, and the next replica to ask becomes the poller. SQLite serves
one process (a file lock refuses a second daemon), so there the process always polls."""

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


def poller_key(schema: str, connector: str) -> int:
    """The advisory lock key of a connector's poller in the store living in ``schema``."""
    return advisory_key(f"poller:{schema}:{connector}")


class PollerOwnership:
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
        """True when this process may poll now; tries to take the lock if it has not got it.
        "Someone else has it" is a normal answer, not an error."""
        if not self.exclusive:
            return True
        with self._lock:
            if self._connection is not None:
                try:
                    self._connection.execute(text("SELECT 1"))
                    return True
                except Exception:          # the connection died, and the lock with it
                    log.warning("lost the poller lock's connection", extra={"connector": self.name})
                    self._drop()
            # Autocommit: the connection must not sit "idle in transaction" while it holds the
            # lock (servers with idle_in_transaction_session_timeout would kill it).
            connection = self.db.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                if self.key is None:
                    # Advisory locks are database-wide: two deployments whose stores are two
                    # schemas of one database must not take each other's poller locks.
                    schema = connection.execute(text("SELECT current_schema()")).scalar()
                    self.key = poller_key(schema, self.name)
                got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                         {"key": self.key}).scalar()
            except Exception:
                connection.close()
                raise
            if not got:
                connection.close()
                return False
            self._connection = connection
            log.info("took over polling", extra={"connector": self.name})
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
