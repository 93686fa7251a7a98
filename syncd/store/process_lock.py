"""SQLite serves one process: a file lock beside the database makes a second daemon refuse to start."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from sqlalchemy.engine import make_url


class StoreInUse(Exception):
    """Another process holds the SQLite store."""


class SqliteProcessLock:
    """SQLite serves one process: a second daemon on the same file refuses to start."""

    def __init__(self, url: str):
        database = make_url(url).database
        self.path = Path(f"{database}.lock") if database and database != ":memory:" else None
        self._handle = None

    def acquire(self) -> None:
        if self.path is None:
            return
        self._handle = open(self.path, "a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "another process"
            self._handle.close()
            self._handle = None
            raise StoreInUse(
                f"another syncd ({holder}) is already running on the SQLite store "
                f"{self.path.with_suffix('')}: SQLite serves one process. Stop it, or use "
                f"PostgreSQL to run several replicas.") from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
