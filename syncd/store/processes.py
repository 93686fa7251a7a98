"""Which daemon processes are alive, so that the work a dead one claimed moves on at once.

Each process has an id (host:pid:start time) and a heartbeat row it touches every few seconds. A
claim made by a process whose row is missing, or that stopped beating, ended with that process:
workers take it back now instead of waiting for its lease (after a kill -9 the lease alone kept
rows, and every later row of their incidents, waiting two minutes in silence).

Silence is measured by each observer on its own monotonic clock, never by comparing times two
hosts wrote: a row's ``seen_at`` changes at every beat and serves only as a sign of life. A
process is dead to an observer once its row is gone, or once the observer has seen the same
``seen_at`` for longer than ``stale_after`` (five beats). So a replica whose wall clock runs
behind or ahead keeps its claims however large the skew, a beat late by less than
``stale_after`` costs nothing, and a killed replica's claims still move on within
``stale_after`` plus one beat; a process of this host whose pid is gone (a restart after a kill)
is dead at the first look. (The database's clock would remove the skew too, but SQLite has
none worth the name and tests could no longer move time.) An observer that has just started gives
each row it finds a full ``stale_after`` from its first look.

The observer that finds a process dead deletes its row, only if it has not beaten meanwhile. A
process that finds its own row deleted or taken over (another process's start time in it) was
declared dead while it still ran (frozen, cut off): its in-flight claims are being taken back
(their fencing tokens stop it writing), and it claims nothing more until it has re-registered
and ``stale_after`` has passed, by which time every observer has beaten and seen it alive again;
claims made earlier could be taken back by an observer's older list of the dead.

On SQLite the file lock proves no other process runs, so a starting daemon forgets every other
row and takes back all their claims at once.
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


def gone_from_this_host(process: str) -> bool:
    """Whether ``process`` ran on this host and runs no more: its pid is gone, or is ours while
    its start time is not (a restarted container reuses pids). A pid another program reused
    looks alive: that errs towards waiting for stale_after, never towards taking live claims."""
    host, _, rest = process.partition(":")
    pid, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True          # not us (our own row is never asked about): a predecessor
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Heartbeats:
    """This process's heartbeat, and the processes whose claims it may take back."""

    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock, process: str,
                 stale_after: timedelta, queues: Mapping[str, type[queue.ClaimableRow]]):
        self.sessions = sessions
        self.clock = clock
        self.process = process
        self.stale_after = stale_after
        self.queues = dict(queues)              # name -> claimable model
        self.started_at = clock.now()
        # Other processes' last seen_at, and when (our monotonic clock) we first saw that value.
        self._seen: dict[str, tuple[datetime, float]] = {}
        self._dead: list[str] = []
        self._claim_from: float | None = None   # monotonic time claims may start; None: unregistered
        self._guard = threading.Lock()

    def register(self, *, sole: bool) -> None:
        """Write this process's row before it claims anything. ``sole``: no other process can be
        running (SQLite's file lock), so every other row belongs to a dead one."""
        with transaction(self.sessions) as session:
            if sole:
                session.execute(delete(ProcessHeartbeat).where(ProcessHeartbeat.process != self.process))
            self._write(session, session.get(ProcessHeartbeat, self.process, with_for_update=True))
        with self._guard:
            self._claim_from = self.clock.monotonic()
        self.beat()

    def beat(self) -> None:
        """Touch the row and refresh the list of dead claimers (housekeeping, every few seconds)."""
        self._touch()
        now = self.clock.monotonic()
        with transaction(self.sessions) as session:
            rows = session.execute(select(ProcessHeartbeat.process, ProcessHeartbeat.seen_at)
                                   .where(ProcessHeartbeat.process != self.process)
                                   .order_by(ProcessHeartbeat.process)).all()
            for process, seen_at in self._silent(rows, now):
                # Only if it has not beaten since we looked: its beat then wins.
                session.execute(delete(ProcessHeartbeat).where(
                    ProcessHeartbeat.process == process, ProcessHeartbeat.seen_at == seen_at))
                log.warning("a process stopped beating; it is taken for dead", extra={
                    "process_id": process, "silent_seconds": round(now - self._seen.pop(process)[1])})
            alive = select(ProcessHeartbeat.process)
            dead: dict[str, int] = {}
            for name, model in self.queues.items():
                orphans = queue.orphaned(session=session, model=model, alive=alive)
                CLAIMS_ORPHANED.labels(name).set(sum(orphans.values()))
                for process, rows_held in orphans.items():
                    dead[process] = dead.get(process, 0) + rows_held
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

    def may_claim(self) -> bool:
        """Whether this process may claim rows now: it is registered, and not in the wait after
        it found its row deleted (see the module's docstring)."""
        with self._guard:
            return self._claim_from is not None and self.clock.monotonic() >= self._claim_from

    def unregister(self) -> None:
        """A clean stop: the row goes, so what this process still holds moves on at once."""
        with self._guard:
            self._claim_from = None
        with transaction(self.sessions) as session:
            session.execute(delete(ProcessHeartbeat).where(ProcessHeartbeat.process == self.process))

    def _touch(self) -> None:
        """Touch our own row (its own transaction: it never waits holding another row's lock).
        A row deleted or taken over means others took this process for dead."""
        with self._guard:
            if self._claim_from is None:
                return
        with transaction(self.sessions) as session:
            row = session.get(ProcessHeartbeat, self.process, with_for_update=True)
            lost = row is None or row.started_at != self.started_at
            self._write(session, row)
        if lost:
            with self._guard:
                self._claim_from = self.clock.monotonic() + self.stale_after.total_seconds()
            log.error("this process's heartbeat row was deleted or taken over: other processes "
                      "took it for dead and take back its claims; it registered again and claims "
                      "nothing for a while", extra={"process_id": self.process,
                                                    "wait_seconds": self.stale_after.total_seconds()})

    def _write(self, session: Session, row: ProcessHeartbeat | None) -> None:
        if row is None:
            session.add(ProcessHeartbeat(process=self.process, started_at=self.started_at,
                                         seen_at=self.clock.now()))
        else:
            row.started_at = self.started_at
            row.seen_at = self.clock.now()

    def _silent(self, rows, now: float) -> list[tuple[str, datetime]]:
        """The rows whose seen_at has not changed for longer than stale_after on our clock, and
        at once those of a process of this host that no longer runs (a restart after a kill)."""
        present = {process for process, _ in rows}
        for gone in set(self._seen) - present:
            del self._seen[gone]
        silent = []
        for process, seen_at in rows:
            if gone_from_this_host(process):
                silent.append((process, seen_at))
                self._seen.setdefault(process, (seen_at, now))
                continue
            first = self._seen.get(process)
            if first is None or first[0] != seen_at:
                self._seen[process] = (seen_at, now)
            elif now - first[1] > self.stale_after.total_seconds():
                silent.append((process, seen_at))
        return silent
