"""The engine's loop: pollers, webhook hints and outbox workers as supervised threads.

Tests drive the same steps synchronously through :meth:`Engine.run_cycle` instead of threads.
A worker that crashes is logged, counted and restarted with backoff: the process never goes on
silently with a dead worker.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from queue import Empty, Queue
from typing import Callable, Mapping

from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.connectors.base import RemoteError
from syncd.engine import service as sync_service
from syncd.engine.connector_runtime import ConnectorRuntime
from syncd.engine.outbox import OutboxDelivery
from syncd.engine.ownership import PollerOwnership
from syncd.engine.sync import InboundSync
from syncd.incidents.commands import IncidentCommands
from syncd.metrics import (
    CONNECTOR_PAUSED,
    DEAD_LETTERS,
    OUTBOX_PENDING,
    SYNC_LAG_SECONDS,
    WORKER_RESTARTS,
)
from syncd.store import queue
from syncd.store.db import transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    outbox_workers: int = 4
    outbox_batch: int = 10
    outbox_idle_wait: float = 1.0          # seconds a worker waits when nothing is due
    lease: timedelta = timedelta(minutes=2)
    backoff: queue.Backoff = queue.Backoff()
    keep_done_rows: timedelta = timedelta(hours=1)   # delivered outbox rows, for inspection
    worker_restart_initial: float = 1.0     # seconds before the first restart of a crashed worker
    worker_restart_max: float = 60.0
    reconcile_after_downtime: timedelta | None = timedelta(minutes=10)
    pause_share: float | None = 0.2
    pause_min_links: int = 20


class SyncEngine:
    """The sync engine for one process: inbound, outbound, and the incident commands that feed it."""

    def __init__(self, *, sessions: sessionmaker[Session], runtimes: Mapping[str, ConnectorRuntime],
                 clock: Clock, settings: EngineSettings = EngineSettings(), worker_id: str = "syncd",
                 ownership: Callable[[str], PollerOwnership] | None = None):
        self.sessions = sessions
        self.runtimes = dict(runtimes)
        self.clock = clock
        self.settings = settings
        self.worker_id = worker_id
        self.hints: Queue[tuple[str, str]] = Queue()
        self.inbound = InboundSync(sessions=sessions, runtimes=self.runtimes, clock=clock,
                                   pause_share=settings.pause_share,
                                   pause_min_links=settings.pause_min_links,
                                   on_stale=self.hint)
        # Who may poll each connector (replicas on PostgreSQL); None: this process always may.
        self.ownership = {name: ownership(name) for name in self.runtimes} if ownership else {}
        self.outbox = OutboxDelivery(sessions=sessions, runtimes=self.runtimes, clock=clock,
                                     backoff=settings.backoff, lease=settings.lease)
        self.commands = IncidentCommands(sessions=sessions, runtimes=self.runtimes, clock=clock)
        self._work_ready = threading.Event()
        self._poll_now = {name: threading.Event() for name in self.runtimes}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

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
        owner = self.ownership.get(connector)
        try:
            self.inbound.retry_dead_inbound(connector)
            applied = self.inbound.poll(connector,
                                        still_owner=owner.holds if owner else (lambda: True))
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
        """A webhook said a record changed; the hint worker re-reads it."""
        self.hints.put((connector, remote_id))

    def drain_hints(self, first: tuple[str, str] | None = None) -> int:
        """Apply every queued hint now (after ``first``, already taken off the queue), as one
        batch per connector; returns hints taken."""
        taken: list[tuple[str, str]] = [first] if first else []
        while True:
            try:
                taken.append(self.hints.get_nowait())
            except Empty:
                break
        by_connector: dict[str, dict[str, None]] = {}
        for connector, remote_id in taken:
            by_connector.setdefault(connector, {})[remote_id] = None   # dedupe, keep order
        for connector, remote_ids in by_connector.items():
            self._apply_hints(connector, list(remote_ids))
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

    # -- threads ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        for name, runtime in self.runtimes.items():
            self._spawn(f"poller-{name}", self._poll_loop(name, runtime))
        self._spawn("hints", self._hint_loop)
        for n in range(self.settings.outbox_workers):
            self._spawn(f"outbox-{n}", self._outbox_loop(f"{self.worker_id}/outbox-{n}"))
        self._spawn("gauges", self._gauge_loop)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming work and let in-flight deliveries finish, all within ``timeout``."""
        self._stop.set()
        self._work_ready.set()
        for event in self._poll_now.values():
            event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def alive_workers(self) -> dict[str, bool]:
        return {thread.name: thread.is_alive() for thread in self._threads}

    def _spawn(self, name: str, body: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._supervised, args=(name, body), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _supervised(self, name: str, body: Callable[[], None]) -> None:
        delay = self.settings.worker_restart_initial
        while not self._stop.is_set():
            try:
                body()
                return
            except Exception:
                WORKER_RESTARTS.labels(name).inc()
                log.exception("worker crashed; restarting", extra={"worker": name,
                                                                   "restart_in": delay})
                self._stop.wait(delay)
                delay = min(delay * 2, self.settings.worker_restart_max)

    def _poll_loop(self, name: str, runtime: ConnectorRuntime) -> Callable[[], None]:
        def loop() -> None:
            owner = self.ownership.get(name)
            checked_downtime = False
            try:
                while not self._stop.is_set():
                    if owner is None or owner.holds():
                        if not checked_downtime:
                            self.reconcile_after_downtime(name)
                            checked_downtime = True
                        self.poll(name)
                    self._poll_now[name].wait(runtime.poll_interval.total_seconds())
                    self._poll_now[name].clear()
            finally:
                if owner is not None:
                    owner.release()
        return loop

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

    def _hint_loop(self) -> None:
        """Wait for a hint, then take it with every other one queued meanwhile as one batch."""
        while not self._stop.is_set():
            try:
                first = self.hints.get(timeout=0.5)
            except Empty:
                continue
            self.drain_hints(first)

    def _outbox_loop(self, worker: str) -> Callable[[], None]:
        def loop() -> None:
            while not self._stop.is_set():
                # Clear before looking, so a wake-up that arrives while we look is not lost.
                self._work_ready.clear()
                if self.outbox.deliver_due(worker, limit=self.settings.outbox_batch,
                                           stopping=self._stop.is_set):
                    continue
                self._work_ready.wait(self.settings.outbox_idle_wait)
        return loop

    def _gauge_loop(self) -> None:
        """Housekeeping every few seconds: gauges from the store, delivered rows pruned."""
        while not self._stop.wait(5.0):
            self.update_gauges()
            self.prune_outbox()

    def prune_outbox(self) -> int:
        with transaction(self.sessions) as session:
            return sync_service.prune_done(session=session,
                                      before=self.clock.now() - self.settings.keep_done_rows)
