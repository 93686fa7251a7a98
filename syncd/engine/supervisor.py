"""The supervisor runs every loop of the process: pollers, the hint worker, outbox workers,
housekeeping, auth checks, the mapping watcher, and what later modules register the same way.

A loop is a named callable doing one cycle, plus how long to wait between cycles and an event that
cuts the wait short. As in GoAlert's engine, each loop is watched: a crash is logged, counted and
restarted with backoff (the process never goes on silently with a dead loop); a watchdog logs a
cycle that runs past its timeout (a thread cannot be killed, so the timeout is a report, and the
remote calls inside carry their own timeouts); a singleton loop runs only where its lock is held.
Each loop's state feeds ``/readyz``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from syncd.clock import Clock
from syncd.metrics import STUCK_CYCLES, WORKER_RESTARTS, WORKER_STATE

log = logging.getLogger(__name__)

HEALTHY_STATES = ("starting", "running", "standby")


class Lock(Protocol):
    """What a singleton loop needs of its lock (syncd.store.locks.SingletonLock)."""

    def holds(self) -> bool: ...

    def release(self) -> None: ...


@dataclass
class Loop:
    """One supervised loop. ``cycle`` does one round of work; a truthy result means more is
    waiting, so the next round starts at once instead of after ``interval`` seconds."""

    name: str
    cycle: Callable[[], Any]
    interval: float
    wake: threading.Event = field(default_factory=threading.Event)
    timeout: float = 120.0           # a cycle running longer than this is reported as stuck
    lock: Lock | None = None         # a singleton: runs only while this process holds the lock


@dataclass
class LoopStatus:
    state: str = "starting"          # starting, running, standby, restarting, stuck, stopped
    last_error: str | None = None
    restarts: int = 0
    cycle_started: float | None = None   # clock.monotonic() when the current cycle began
    reported_stuck: bool = False

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"state": self.state}
        if self.last_error:
            shown["last_error"] = self.last_error
        if self.restarts:
            shown["restarts"] = self.restarts
        return shown


class Supervisor:
    """Runs registered loops as threads until :meth:`stop`."""

    def __init__(self, *, clock: Clock, restart_initial: float = 1.0, restart_max: float = 60.0,
                 watchdog_interval: float = 1.0):
        self.clock = clock
        self.restart_initial = restart_initial
        self.restart_max = restart_max
        self.watchdog_interval = watchdog_interval
        self.stopping = threading.Event()
        self._loops: dict[str, Loop] = {}
        self._status: dict[str, LoopStatus] = {}
        self._threads: list[threading.Thread] = []
        self._guard = threading.Lock()

    def add(self, loop: Loop) -> None:
        if loop.name in self._loops:
            raise ValueError(f"a loop named {loop.name!r} is already registered")
        if self._threads:
            raise RuntimeError(f"loop {loop.name!r} registered after the supervisor started")
        self._loops[loop.name] = loop
        self._status[loop.name] = LoopStatus()

    def start(self) -> None:
        for loop in self._loops.values():
            self._spawn(loop.name, lambda loop=loop: self._run(loop))
        self._spawn("watchdog", self._watch)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every loop: none starts another cycle, the current ones finish within
        ``timeout`` seconds. Returns whether all of them did."""
        self.stopping.set()
        for loop in self._loops.values():
            loop.wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        still = [thread.name for thread in self._threads if thread.is_alive()]
        if still:
            log.error("loops still running at the stop deadline", extra={"workers": still})
        return not still

    def states(self) -> dict[str, dict[str, Any]]:
        """Each loop's state for /readyz: running, standby (a singleton whose lock another
        replica holds), restarting (with the last error), stuck, stopped."""
        with self._guard:
            return {name: status.as_dict() for name, status in self._status.items()}

    def healthy(self) -> bool:
        with self._guard:
            return all(status.state in HEALTHY_STATES for status in self._status.values())

    def check_stuck(self) -> list[str]:
        """The watchdog's pass: report each loop whose cycle has run past its timeout (once per
        cycle); returns the names of loops stuck now."""
        now = self.clock.monotonic()
        stuck = []
        with self._guard:
            for name, status in self._status.items():
                began = status.cycle_started
                if began is None or now - began <= self._loops[name].timeout:
                    continue
                stuck.append(name)
                if not status.reported_stuck:
                    status.reported_stuck = True
                    self._set_state(name, status, "stuck")
                    STUCK_CYCLES.labels(name).inc()
                    log.error("a loop's cycle is stuck", extra={
                        "worker": name, "running_seconds": round(now - began, 1),
                        "timeout_seconds": self._loops[name].timeout})
        return stuck

    # -- inside the threads ---------------------------------------------------------------------
    def _spawn(self, name: str, body: Callable[[], None]) -> None:
        thread = threading.Thread(target=body, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, loop: Loop) -> None:
        status = self._status[loop.name]
        delay = self.restart_initial
        try:
            while not self.stopping.is_set():
                # Cleared before the cycle looks, so a wake-up arriving meanwhile is not lost;
                # the stop sets ``stopping`` before it wakes, so look at it again after clearing.
                loop.wake.clear()
                if self.stopping.is_set():
                    break
                try:
                    more = self._cycle(loop, status)
                except Exception as error:
                    self._crashed(loop, status, error, delay)
                    self.stopping.wait(delay)
                    delay = min(delay * 2, self.restart_max)
                    continue
                delay = self.restart_initial
                if not more:
                    loop.wake.wait(loop.interval)
        finally:
            if loop.lock is not None:
                loop.lock.release()
            with self._guard:
                self._set_state(loop.name, status, "stopped")

    def _cycle(self, loop: Loop, status: LoopStatus) -> Any:
        if loop.lock is not None and not loop.lock.holds():
            with self._guard:
                self._set_state(loop.name, status, "standby")
            return False
        with self._guard:
            status.cycle_started = self.clock.monotonic()
            status.reported_stuck = False
        try:
            more = loop.cycle()
        finally:
            with self._guard:
                began, status.cycle_started = status.cycle_started, None
                if status.reported_stuck:
                    log.warning("a stuck cycle finished", extra={
                        "worker": loop.name,
                        "running_seconds": round(self.clock.monotonic() - (began or 0.0), 1)})
        with self._guard:
            status.last_error = None
            self._set_state(loop.name, status, "running")
        return more

    def _crashed(self, loop: Loop, status: LoopStatus, error: Exception, delay: float) -> None:
        WORKER_RESTARTS.labels(loop.name).inc()
        with self._guard:
            status.restarts += 1
            status.last_error = f"{type(error).__name__}: {error}"
            self._set_state(loop.name, status, "restarting")
        log.exception("worker crashed; restarting", extra={"worker": loop.name,
                                                           "restart_in": delay})

    def _watch(self) -> None:
        while not self.stopping.wait(self.watchdog_interval):
            self.check_stuck()

    @staticmethod
    def _set_state(name: str, status: LoopStatus, state: str) -> None:
        status.state = state
        WORKER_STATE.labels(name).set(1 if state in HEALTHY_STATES else 0)
