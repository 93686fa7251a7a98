"""Which daemon processes are alive, so that the work a dead one claimed moves on at once.

Each process has an id (host:pid:start time) and a heartbeat row it touches every few seconds. A
claim made by a process whose row is missing or older than ``stale_after`` ended with that
process: workers take it back now instead of waiting for its lease (after a kill -9 the lease
alone kept rows, and every later row of their incidents, waiting two minutes in silence). On
SQLite the file lock proves no other process runs, so a starting daemon forgets every other row
and takes back all their claims at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from typing import Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.metrics import CLAIMS_ORPHANED
from syncd.store import queue
from syncd.store.db import transaction
from syncd.store.models import ProcessHeartbeat

log = logging.getLogger(__name__)


def process_id(started_at: datetime) -> str:
    """host:pid:start time; the start time tells a restarted process from its dead predecessor."""
    return f"{socket.gethostname()}:{os.getpid()}:{started_at:%Y%m%dT%H%M%S.%fZ}"


class Heartbeats:
    """This process's heartbeat, and the processes whose claims it may take back."""

    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock, process: str,
                 stale_after: timedelta, queues: Mapping[str, type[queue.ClaimableRow]],
                 forget_after: timedelta = timedelta(days=1)):
        self.sessions = sessions
        self.clock = clock
        self.process = process
        self.stale_after = stale_after
        self.forget_after = forget_after        # rows of processes gone this long are deleted
        self.queues = dict(queues)              # name -> claimable model
        self.started_at = clock.now()
        self._dead: list[str] = []
        self._guard = threading.Lock()

    def register(self, *, sole: bool) -> None:
        """Write this process's row before it claims anything. ``sole``: no other process can be
        running (SQLite's file lock), so every other row belongs to a dead one."""
        now = self.clock.now()
        with transaction(self.sessions) as session:
            if sole:
                session.execute(delete(ProcessHeartbeat).where(ProcessHeartbeat.process != self.process))
            self._touch(session, now)
        self.beat()

    def beat(self) -> None:
        """Touch the row and refresh the list of dead claimers (housekeeping, every few seconds)."""
        now = self.clock.now()
        with transaction(self.sessions) as session:
            self._touch(session, now)
            session.execute(delete(ProcessHeartbeat).where(
                ProcessHeartbeat.seen_at < now - self.forget_after))
            alive = select(ProcessHeartbeat.process).where(
                ProcessHeartbeat.seen_at >= now - self.stale_after)
            dead: dict[str, int] = {}
            for name, model in self.queues.items():
                orphans = queue.orphaned(session=session, model=model, alive=alive)
                CLAIMS_ORPHANED.labels(name).set(sum(orphans.values()))
                for process, rows in orphans.items():
                    dead[process] = dead.get(process, 0) + rows
        with self._guard:
            newly = sorted(set(dead) - set(self._dead))
            self._dead = sorted(dead)
        for process in newly:
            log.warning("a process holding claims stopped beating; taking its claims back now",
                        extra={"process_id": process, "in_flight": dead[process]})

    def dead_processes(self) -> list[str]:
        """Processes whose in-flight claims may be taken back now (as of the last beat)."""
        with self._guard:
            return list(self._dead)

    def unregister(self) -> None:
        """A clean stop: the row goes, so what this process still holds moves on at once."""
        with transaction(self.sessions) as session:
            session.execute(delete(ProcessHeartbeat).where(ProcessHeartbeat.process == self.process))

    def _touch(self, session: Session, now: datetime) -> None:
        row = session.get(ProcessHeartbeat, self.process)
        if row is None:
            session.add(ProcessHeartbeat(process=self.process, started_at=self.started_at,
                                         seen_at=now))
        else:
            row.seen_at = now
