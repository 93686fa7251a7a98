"""The sync engine of one process: inbound, outbound, and the incident commands that feed it.

Its work is a few synchronous steps (:meth:`SyncEngine.run_cycle`, :meth:`poll`,
:meth:`drain_hints`, :meth:`deliver_all_due`) that tests and `syncd reconcile` drive directly;
:meth:`SyncEngine.register` hands the same steps to the supervisor as loops in a running daemon.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from queue import Empty, Full, Queue
from typing import Callable, Mapping

from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.connectors.base import RemoteError
from syncd.engine import service as sync_service
from syncd.engine.connector_runtime import ConnectorRuntime
from syncd.engine.outbox import OutboxDelivery
from syncd.engine.supervisor import Loop, Supervisor
from syncd.engine.sync import InboundSync
from syncd.incidents.commands import IncidentCommands
from syncd.metrics import (
    CONNECTOR_PAUSED,
    DEAD_LETTERS,
    HINTS_DROPPED,
    OUTBOX_PENDING,
    SYNC_LAG_SECONDS,
)
from syncd.store import queue
from syncd.store.db import transaction
from syncd.store.locks import SingletonLock

log = logging.getLogger(__name__)

HINT_BATCH = 100          # remote ids per read of drained hints: bounds the IN list of one read


@dataclass(frozen=True)
class EngineSettings:
    outbox_workers: int = 4
    outbox_batch: int = 3                  # rows per claim: a dead worker strands few of them
    outbox_idle_wait: float = 1.0          # seconds a worker waits when nothing is due
    lease: timedelta = timedelta(minutes=2)
    backoff: queue.Backoff = queue.Backoff()
    keep_done_rows: timedelta = timedelta(hours=1)   # delivered outbox rows, for inspection
    hint_queue: int = 1000                 # queued webhook hints; beyond it they are dropped
    housekeeping_interval: float = 5.0     # seconds between gauge reads and pruning
    reconcile_after_downtime: timedelta | None = timedelta(minutes=10)
    pause_share: float | None = 0.2
    pause_min_links: int = 20


class SyncEngine:
    """The sync engine for one process: inbound, outbound, and the incident commands that feed it."""

    def __init__(self, *, sessions: sessionmaker[Session], runtimes: Mapping[str, ConnectorRuntime],
                 clock: Clock, settings: EngineSettings = EngineSettings(), worker_id: str = "syncd",
                 locks: Callable[[str], SingletonLock] | None = None,
                 dead_processes: Callable[[], list[str]] = list,
                 may_claim: Callable[[], bool] = lambda: True):
        self.sessions = sessions
        self.runtimes = dict(runtimes)
        self.clock = clock
        self.settings = settings
        self.worker_id = worker_id          # this process's id: its claims carry it
        self.hints: Queue[tuple[str, str]] = Queue(maxsize=settings.hint_queue)
        self.inbound = InboundSync(sessions=sessions, runtimes=self.runtimes, clock=clock,
                                   pause_share=settings.pause_share,
                                   pause_min_links=settings.pause_min_links,
                                   on_stale=self.hint)
        # Singleton loops run where their lock is held (replicas on PostgreSQL); without locks
        # this process holds them all.
        self.locks = ({name: locks(name) for name in
                       [*(f"poller:{connector}" for connector in self.runtimes), "housekeeping"]}
                      if locks else {})
        self.outbox = OutboxDelivery(sessions=sessions, runtimes=self.runtimes, clock=clock,
                                     backoff=settings.backoff, lease=settings.lease,
                                     process=worker_id, dead_processes=dead_processes,
                                     may_claim=may_claim,
                                     inbound=self.inbound)
        self.commands = IncidentCommands(sessions=sessions, runtimes=self.runtimes, clock=clock)
        self._work_ready = threading.Event()
        self._hinted = threading.Event()
        self._poll_now = {name: threading.Event() for name in self.runtimes}
        self._stopping: Callable[[], bool] = lambda: False

    # -- synchronous steps (tests, `syncd reconcile`) -----------------------------------------
    def deliver_all_due(self, worker: str | None = None) -> int:
        """Deliver until nothing is due now; returns rows handled."""
        total = 0
        while True:
            handled = self.outbox.deliver_due(worker or self.worker_id,
                                              limit=self.settings.outbox_batch)
            total += handled
            if not handled:
                return total

    def run_cycle(self) -> None:
        """One full round: drain hints, poll every connector, deliver everything due."""
        self.drain_hints()
        for name in self.runtimes:
            self.poll(name)
        self.deliver_all_due()
        self.update_gauges()

    def poll(self, connector: str) -> int:
        """One poll of a connector, after re-reading any inbound dead letters an operator asked to
        retry; a remote failure is logged and left for the next poll."""
        lock = self.locks.get(f"poller:{connector}")
        try:
            self.inbound.retry_dead_inbound(connector)
            applied = self.inbound.poll(connector,
                                        still_owner=lock.holds if lock else (lambda: True))
        except RemoteError as error:
            log.warning("poll failed", extra={"connector": connector, "error": str(error)})
            return 0
        if applied:
            self._work_ready.set()
        return applied

    def wake(self) -> None:
        """New outbox rows were committed: let an idle worker look now rather than later."""
        self._work_ready.set()

    def hint(self, connector: str, remote_id: str) -> None:
        """A webhook said a record changed; the hint worker re-reads it. When the queue is full
        the hint is dropped and the connector polls now: a hint only accelerates, the poll finds
        the change anyway."""
        try:
            self.hints.put_nowait((connector, remote_id))
        except Full:
            HINTS_DROPPED.labels(connector).inc()
            if connector in self._poll_now:
                self._poll_now[connector].set()
            return
        self._hinted.set()

    def drain_hints(self) -> int:
        """Apply every queued hint now, in batches of at most HINT_BATCH records per connector;
        returns hints taken."""
        taken: list[tuple[str, str]] = []
        while True:
            try:
                taken.append(self.hints.get_nowait())
            except Empty:
                break
        by_connector: dict[str, dict[str, None]] = {}
        for connector, remote_id in taken:
            by_connector.setdefault(connector, {})[remote_id] = None   # dedupe, keep order
        for connector, remote_ids in by_connector.items():
            ids = list(remote_ids)
            for start in range(0, len(ids), HINT_BATCH):
                self._apply_hints(connector, ids[start:start + HINT_BATCH])
        return len(taken)

    def _apply_hints(self, connector: str, remote_ids: list[str]) -> None:
        try:
            if self.inbound.apply_hints(connector, remote_ids):
                self._poll_now[connector].set()       # new records: poll now, not in 15 s
        except RemoteError as error:
            # The poll will see the change anyway; a hint is an accelerator, not the only path.
            log.warning("webhook hints could not be read", extra={
                "connector": connector, "hints": len(remote_ids), "error": str(error)})
        self._work_ready.set()

    def update_gauges(self) -> None:
        """Gauges are read from the store, so every replica reports the same truth."""
        now = self.clock.now()
        with transaction(self.sessions, readonly=True) as session:
            counts = sync_service.outbox_counts(session=session)
            cursors = {name: sync_service.get_cursor(session=session, connector=name)
                       for name in self.runtimes}
        for name, cursor in cursors.items():
            OUTBOX_PENDING.labels(name).set(counts.get((name, "pending"), 0)
                                            + counts.get((name, "in_flight"), 0))
            DEAD_LETTERS.labels(name).set(counts.get((name, "dead"), 0))
            CONNECTOR_PAUSED.labels(name).set(1 if cursor and cursor.paused_reason else 0)
            if cursor and cursor.last_poll_at:
                SYNC_LAG_SECONDS.labels(name).set(max(0.0, (now - cursor.last_poll_at).total_seconds()))

    def prune_outbox(self) -> int:
        """Delete delivered rows kept past their inspection time; a full batch means more wait."""
        with transaction(self.sessions) as session:
            return sync_service.prune_done(session=session,
                                           before=self.clock.now() - self.settings.keep_done_rows)

    def reconcile_after_downtime(self, connector: str) -> bool:
        """After a long gap in polling (the daemon was down), a poll's window may have missed what
        changed: re-read every linked record once before polling again."""
        threshold = self.settings.reconcile_after_downtime
        if threshold is None:
            return False
        with transaction(self.sessions, readonly=True) as session:
            cursor = sync_service.get_cursor(session=session, connector=connector)
            last = cursor.last_poll_at if cursor else None
        if last is None or self.clock.now() - last <= threshold:
            return False
        log.warning("polling was down; reconciling", extra={
            "connector": connector, "down_seconds": int((self.clock.now() - last).total_seconds())})
        try:
            counts = self.inbound.reconcile(connector)
        except RemoteError as error:
            log.warning("reconcile failed; polling resumes anyway",
                        extra={"connector": connector, "error": str(error)})
            return False
        log.info("reconciled", extra={"connector": connector, **counts})
        self._work_ready.set()
        return True

    # -- loops -----------------------------------------------------------------------------------
    def register(self, supervisor: Supervisor) -> None:
        """Hand the engine's loops to the supervisor: a poller per connector and housekeeping
        (singletons, where their lock is held), the hint worker, the outbox workers, gauges."""
        self._stopping = supervisor.stopping.is_set
        for name, runtime in self.runtimes.items():
            supervisor.add(Loop(f"poller-{name}", self._poller(name),
                                interval=runtime.poll_interval.total_seconds(),
                                wake=self._poll_now[name], lock=self.locks.get(f"poller:{name}")))
        supervisor.add(Loop("hints", self.drain_hints, interval=1.0, wake=self._hinted))
        for n in range(self.settings.outbox_workers):
            supervisor.add(Loop(f"outbox-{n}", self._outbox_worker(f"{self.worker_id}/outbox-{n}"),
                                interval=self.settings.outbox_idle_wait, wake=self._work_ready,
                                timeout=self.settings.lease.total_seconds()))
        supervisor.add(Loop("gauges", self.update_gauges,
                            interval=self.settings.housekeeping_interval))
        supervisor.add(Loop("housekeeping", self.prune_outbox,
                            interval=self.settings.housekeeping_interval,
                            lock=self.locks.get("housekeeping")))

    def _poller(self, connector: str) -> Callable[[], int]:
        """One poll per cycle; the first cycle as the connector's poller checks for downtime."""
        checked_downtime = False

        def cycle() -> int:
            nonlocal checked_downtime
            if not checked_downtime:
                self.reconcile_after_downtime(connector)
                checked_downtime = True
            self.poll(connector)
            return 0
        return cycle

    def _outbox_worker(self, worker: str) -> Callable[[], int]:
        def cycle() -> int:
            return self.outbox.deliver_due(worker, limit=self.settings.outbox_batch,
                                           stopping=self._stopping)
        return cycle
