"""The supervisor: loops restart after a crash, a stuck cycle is reported, singletons run where
their lock is held, a wake-up cuts a wait short, and a stop ends every loop."""

from __future__ import annotations

import logging
import threading

from syncd.clock import ManualClock
from syncd.engine.supervisor import Loop, Supervisor
from syncd.metrics import STUCK_CYCLES, WORKER_RESTARTS
from syncd.store import db
from syncd.store.locks import SingletonLock

from ..support import wait_until


def test_a_crashing_loop_restarts_with_backoff_and_says_why_until_it_works():
    supervisor = Supervisor(clock=ManualClock(), restart_initial=0.01, restart_max=0.02)
    attempts = []
    recovered = threading.Event()

    def cycle():
        attempts.append(1)
        if len(attempts) <= 3:
            raise ValueError(f"bad row {len(attempts)}")
        recovered.set()

    supervisor.add(Loop("flaky", cycle, interval=60))
    before = WORKER_RESTARTS.labels("flaky")._value.get()
    supervisor.start()
    try:
        assert recovered.wait(10)
        assert WORKER_RESTARTS.labels("flaky")._value.get() - before == 3
        wait_until("the loop to run", lambda: supervisor.states()["flaky"]["state"] == "running")
        assert supervisor.states()["flaky"] == {"state": "running", "restarts": 3}
    finally:
        supervisor.stop()
    assert supervisor.states()["flaky"]["state"] == "stopped"


def test_a_loop_that_keeps_crashing_shows_restarting_with_its_last_error():
    supervisor = Supervisor(clock=ManualClock(), restart_initial=0.01, restart_max=0.01)

    def cycle():
        raise ConnectionError("store unreachable")

    supervisor.add(Loop("doomed", cycle, interval=60))
    supervisor.start()
    try:
        wait_until("a restart", lambda: supervisor.states()["doomed"].get("restarts", 0) >= 2)
        state = supervisor.states()["doomed"]
        assert state["state"] == "restarting"
        assert state["last_error"] == "ConnectionError: store unreachable"
        assert not supervisor.healthy()
    finally:
        supervisor.stop()


def test_the_watchdog_reports_a_stuck_cycle_with_its_name_and_duration(caplog):
    clock = ManualClock()
    supervisor = Supervisor(clock=clock, watchdog_interval=3600)   # the test runs the watchdog
    inside, release = threading.Event(), threading.Event()

    def cycle():
        inside.set()
        release.wait(10)

    supervisor.add(Loop("slow-remote", cycle, interval=60, timeout=30))
    before = STUCK_CYCLES.labels("slow-remote")._value.get()
    supervisor.start()
    try:
        assert inside.wait(10)
        clock.advance(29)
        assert supervisor.check_stuck() == []
        clock.advance(2)
        with caplog.at_level(logging.ERROR, logger="syncd.engine.supervisor"):
            assert supervisor.check_stuck() == ["slow-remote"]
            assert supervisor.check_stuck() == ["slow-remote"]     # reported once per cycle
        [record] = [r for r in caplog.records if r.getMessage() == "a loop's cycle is stuck"]
        assert record.worker == "slow-remote" and record.running_seconds == 31
        assert STUCK_CYCLES.labels("slow-remote")._value.get() - before == 1
        assert supervisor.states()["slow-remote"]["state"] == "stuck"
        assert not supervisor.healthy()
        release.set()
        wait_until("the cycle to finish", lambda: supervisor.states()["slow-remote"]["state"]
                   == "running")
        assert supervisor.check_stuck() == []
    finally:
        release.set()
        supervisor.stop()


def test_more_work_runs_the_next_cycle_at_once_and_a_wake_cuts_the_wait_short():
    supervisor = Supervisor(clock=ManualClock())
    batches = [3, 2, 0]          # rows handled per cycle: a full batch means more is waiting
    cycles = []
    wake = threading.Event()

    def cycle():
        cycles.append(1)
        return batches.pop(0) if batches else 0

    supervisor.add(Loop("worker", cycle, interval=3600, wake=wake))
    supervisor.start()
    try:
        wait_until("the backlog", lambda: len(cycles) == 3)
        wake.set()
        wait_until("the woken cycle", lambda: len(cycles) == 4)
    finally:
        supervisor.stop(timeout=5)
    assert supervisor.states()["worker"]["state"] == "stopped"


def test_a_stop_ends_loops_waiting_long_intervals_at_once():
    supervisor = Supervisor(clock=ManualClock())
    for name in ("poller", "housekeeping"):
        supervisor.add(Loop(name, lambda: None, interval=3600))
    supervisor.start()
    wait_until("both loops", lambda: all(s["state"] == "running"
                                         for s in supervisor.states().values()))
    assert supervisor.stop(timeout=5)


def test_a_singleton_loop_runs_in_one_replica_and_moves_when_it_stops(postgres_store):
    """Two processes' supervisors on one PostgreSQL: only the lock holder runs the loop, the
    other stands by (ready, not failing), and takes over once the first stops."""
    other_db = db.open_engine(postgres_store.url, pool_size=2)
    ran = {"a": 0, "b": 0}
    supervisors = {}
    for name, engine in (("a", postgres_store.engine), ("b", other_db)):
        supervisors[name] = Supervisor(clock=ManualClock())
        supervisors[name].add(Loop("housekeeping", lambda n=name: ran.__setitem__(n, ran[n] + 1),
                                   interval=0.05, lock=SingletonLock(engine, "housekeeping")))
    try:
        supervisors["a"].start()
        wait_until("a to run", lambda: ran["a"] > 0)
        supervisors["b"].start()
        wait_until("b to stand by",
                   lambda: supervisors["b"].states()["housekeeping"]["state"] == "standby")
        assert ran["b"] == 0 and supervisors["b"].healthy()
        supervisors["a"].stop()
        wait_until("b to take over", lambda: ran["b"] > 0)
    finally:
        for supervisor in supervisors.values():
            supervisor.stop()
        other_db.dispose()


def test_on_sqlite_the_one_process_holds_every_singleton_lock(tmp_path):
    engine = db.open_engine(f"sqlite:///{tmp_path / 's.db'}")
    try:
        assert SingletonLock(engine, "housekeeping").holds()
        assert SingletonLock(engine, "housekeeping").holds()
    finally:
        engine.dispose()
