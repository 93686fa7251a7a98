"""Assembling and running the daemon from a validated configuration: the store, connectors,
mappings with hot reload, the engine's loops under the supervisor and the HTTP server, with a clean
stop on a signal. Assembly only: every loop runs in syncd.engine.supervisor."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from datetime import timedelta
from typing import Any

import uvicorn
from sqlalchemy import text
from sqlalchemy.engine import make_url

from syncd.clock import Clock, SystemClock
from syncd.connectors.base import RemoteError
from syncd.connectors.factory import build_connector, seconds, secret
from syncd.engine import service as sync_service
from syncd.engine.connector_runtime import ConnectorRuntime
from syncd.engine.models import OutboxItem
from syncd.engine.supervisor import Loop, Supervisor
from syncd.engine.sync_engine import EngineSettings, SyncEngine
from syncd.mapping.reload import MappingSet
from syncd.response.actions import sweep_interrupted_runs
from syncd.store import db, queue
from syncd.store.locks import SingletonLock
from syncd.store.process_lock import SqliteProcessLock, StoreInUse
from syncd.store.processes import Heartbeats, process_id

log = logging.getLogger(__name__)

AUTH_RECHECK_SECONDS = 60.0
MAPPING_RELOAD_SECONDS = 2.0
HEARTBEAT_SECONDS = 2.0
HEARTBEAT_STALE_SECONDS = 5 * HEARTBEAT_SECONDS   # a replica silent this long is taken for dead
ACTION_SWEEP_SECONDS = 60.0  # runs left running by a dead process turn unknown
ALERT_GAUGES_SECONDS = 5.0
PAGING_CYCLE_SECONDS = 0.25  # escalation and sender cycles: a due page goes out within a second
SHUTDOWN_SECONDS = 30.0      # below systemd's and Kubernetes' stop timeouts in deploy/
HTTP_STOP_SECONDS = 5.0


class StartupError(Exception):
    """The daemon cannot start (a runtime failure: the port is taken, the store is unreachable);
    the message says why and what to do."""


class ConfigurationProblem(StartupError):
    """The daemon cannot start until the configuration or what it names is fixed (a mapping, the
    store's schema, a second daemon on one SQLite file): restarting alone will not help."""


class Daemon:
    def __init__(self, config: Any, *, clock: Clock | None = None, worker_id: str | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or process_id(self.clock.now())
        self.store_url = secret(config.store.url)
        self.sqlite_lock = SqliteProcessLock(self.store_url) \
            if make_url(self.store_url).get_backend_name() == "sqlite" else None
        self.supervisor = Supervisor(clock=self.clock)
        self.auth_status: dict[str, str] = {}
        self.http_server: uvicorn.Server | None = None
        self.engine: SyncEngine | None = None
        self.heartbeats: Heartbeats | None = None
        self._coverage: tuple[Any, Any, list[str]] | None = None   # (at, response set, warnings)
        # What open() and start() acquired, released in reverse order by stop(), however far
        # they got: a failed start must not leave the SQLite lock, claims or connections held.
        self._opened = contextlib.ExitStack()

    # -- assembly --------------------------------------------------------------------------------
    def open(self, *, for_commands: bool = False) -> None:
        """Everything short of starting loops: store checked, mappings loaded, connectors built,
        this process's heartbeat written. ``for_commands``: only what a command (`syncd ack`)
        needs to change incidents as the daemon would, hooks included; it claims no work, so it
        runs beside a daemon, even on its SQLite file."""
        if self.sqlite_lock and not for_commands:
            try:
                self.sqlite_lock.acquire()
            except StoreInUse as error:
                raise ConfigurationProblem(str(error)) from None
            self._opened.callback(self.sqlite_lock.release)
        # Each worker thread, singleton lock connection and HTTP handler may hold a connection.
        pool = max(self.config.store.pool_size,
                   self.config.sync.outbox_workers + 3 * len(self.config.connectors) + 6)
        self.db = db.open_engine(self.store_url, pool_size=pool)
        self._opened.callback(self.db.dispose)
        try:
            # A command never migrates the schema under a running daemon.
            db.ensure_schema(self.db, auto_upgrade=self.config.store.auto_upgrade
                             and not for_commands)
        except db.SchemaOutOfDate as error:
            raise ConfigurationProblem(str(error)) from None
        self.schema_head = db.head_revision()   # read from the package once, not per probe
        self.sessions = db.session_factory(self.db)
        from syncd.mapping import MappingError
        from syncd.response_files import ResponseFileError, ResponseFiles
        try:
            self.mappings = MappingSet({name: c.mapping for name, c in self.config.connectors.items()})
        except MappingError as error:
            raise ConfigurationProblem(f"invalid mapping: {error}") from None
        try:
            # Read again (config loading validated them): an edit since then counts.
            self.responses = ResponseFiles(self.config.response.files)
        except ResponseFileError as error:
            raise ConfigurationProblem(f"invalid response file: {error}") from None
        for name, settings in self.config.connectors.items():
            system = self.mappings.get(name).system
            if system != settings.type:
                raise ConfigurationProblem(
                    f"connectors.{name}.mapping: {settings.mapping} maps {system}, "
                    f"but connector {name!r} is {settings.type}")
        overlap = timedelta(seconds=seconds(self.config.sync.poll_overlap))
        runtimes = {}
        for name, settings in self.config.connectors.items():
            connector = build_connector(name, settings, clock=self.clock, overlap=overlap)
            self._opened.callback(connector.close)
            runtimes[name] = ConnectorRuntime(
                name=name, connector=connector,
                mapping=(lambda n=name: self.mappings.get(n)),
                create_incidents=settings.create_incidents,
                create_tickets=settings.create_tickets,
                poll_interval=timedelta(seconds=seconds(settings.poll_interval)))
        self.heartbeats = Heartbeats(sessions=self.sessions, clock=self.clock,
                                     process=self.worker_id,
                                     stale_after=timedelta(seconds=HEARTBEAT_STALE_SECONDS),
                                     queues={"outbox": OutboxItem})
        if not for_commands:
            self.heartbeats.register(sole=self.sqlite_lock is not None)
            self._opened.callback(self.heartbeats.unregister)
        sync = self.config.sync
        self.engine = SyncEngine(
            sessions=self.sessions, runtimes=runtimes, clock=self.clock, worker_id=self.worker_id,
            locks=lambda name: SingletonLock(self.db, name),
            dead_processes=self.heartbeats.dead_processes, may_claim=self.heartbeats.may_claim,
            settings=EngineSettings(
                outbox_workers=sync.outbox_workers,
                lease=sync.claim_lease,
                backoff=queue.Backoff(initial=seconds(sync.backoff_initial),
                                        maximum=seconds(sync.backoff_max),
                                        max_attempts=sync.max_attempts),
                reconcile_after_downtime=sync.reconcile_after_downtime,
                pause_share=sync.pause_when_share_changed))
        self._open_paging()
        self._open_alerts()

    def _open_alerts(self) -> None:
        """The Events API v2 intake, and the hook that carries an incident's acknowledgement
        and resolution to its alerts. A committed event wakes the outbox workers and the
        escalation loop, so its ticket and its page go out at once."""
        from syncd.alerts import service as alert_service
        from syncd.alerts.intake import AlertIntake
        from syncd.incidents import hooks
        engine, escalations = self.engine, self.escalations
        assert engine is not None

        def wake() -> None:
            engine.wake()
            escalations.wake.set()
        self.alerts = AlertIntake(sessions=self.sessions, clock=self.clock,
                                  responses=self.responses.current, runtimes=engine.runtimes,
                                  wake=wake)
        hooks.install(self.sessions, alert_service.on_incident_change)

    def _open_paging(self) -> None:
        """Escalation (an incident-change hook and a loop), the notification sender, and the
        signed links (acknowledge links, calendar feeds) when ``http.link_secret`` is set."""
        from syncd.engine.propagation import propagate_fields
        from syncd.incidents import hooks
        from syncd.notify.links import AckLinks
        from syncd.notify.sender import NotificationSender
        from syncd.oncall.calendar import CalendarKeys
        from syncd.oncall.escalation import Escalations
        assert self.engine is not None
        http = self.config.http
        link_secret = secret(http.link_secret) if http.link_secret is not None else None
        self.ack_links = AckLinks(link_secret, http.public_url) if link_secret else None
        self.calendar_keys = CalendarKeys(link_secret) if link_secret else None
        current = self.responses.current
        self.engine.commands.email_of = lambda actor: getattr(
            current().users.get(actor or ""), "email", None)
        self.sender = NotificationSender(sessions=self.sessions, clock=self.clock,
                                         responses=current, worker_id=self.worker_id)
        self.sender_loop = Loop("notify", self.sender.cycle, interval=PAGING_CYCLE_SECONDS)
        runtimes = self.engine.runtimes
        self.escalations = Escalations(
            sessions=self.sessions, clock=self.clock, responses=current,
            ack_links=self.ack_links,
            propagate=lambda **change: propagate_fields(runtimes=runtimes, **change),
            wake_sender=self.sender_loop.wake.set)
        hooks.install(self.sessions, self.escalations.on_incident_change)

    def start(self) -> None:
        """Listen first, then start the loops: a port that is taken fails the start before any
        loop has claimed work."""
        assert self.engine is not None and self.heartbeats is not None, "open() first"
        self._start_http()
        self.engine.register(self.supervisor)
        self.supervisor.add(Loop("heartbeat", self.heartbeats.beat, interval=HEARTBEAT_SECONDS))
        self.supervisor.add(Loop("auth-check", self.check_auth, interval=AUTH_RECHECK_SECONDS))
        self.supervisor.add(Loop("reload", self.reload_files, interval=MAPPING_RELOAD_SECONDS))
        self.supervisor.add(Loop("escalation", self.escalations.cycle,
                                 interval=PAGING_CYCLE_SECONDS, wake=self.escalations.wake))
        self.supervisor.add(self.sender_loop)
        self.supervisor.add(Loop("action-runs",
                                 lambda: sweep_interrupted_runs(self.sessions, self.clock),
                                 interval=ACTION_SWEEP_SECONDS))
        self.supervisor.add(Loop("alert-gauges", self.alerts.update_gauges,
                                 interval=ALERT_GAUGES_SECONDS))
        self._opened.callback(self.supervisor.stop, SHUTDOWN_SECONDS - HTTP_STOP_SECONDS)
        self.supervisor.start()

    def _start_http(self) -> None:
        from syncd.api.app import ApiSettings, create_app
        from syncd.api.auth import ApiToken
        host, _, port = self.config.http.listen.rpartition(":")
        settings = ApiSettings(
            api_tokens=[ApiToken(t.name, secret(t.token)) for t in self.config.http.api_tokens],
            max_body_bytes=self.config.http.max_body_bytes, readiness=self.readiness)
        app = create_app(self.engine, settings, routers=self._paging_routers(settings))
        server = self.http_server = uvicorn.Server(uvicorn.Config(
            app, host=host.strip("[]") or "127.0.0.1", port=int(port), log_config=None,
            access_log=False, timeout_graceful_shutdown=HTTP_STOP_SECONDS))
        thread = threading.Thread(target=server.run, name="http", daemon=True)
        thread.start()

        def stop_http() -> None:
            server.should_exit = True
            thread.join(HTTP_STOP_SECONDS + 1)
        self._opened.callback(stop_http)
        deadline = time.monotonic() + 10
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise StartupError(f"the HTTP server could not listen on {self.config.http.listen} "
                               f"(http.listen): is the port taken?")

    def _paging_routers(self, settings) -> list:
        from syncd.api.ack_links import ack_link_router
        from syncd.api.actions import action_router
        from syncd.api.alerts import alert_router, events_router
        from syncd.api.auth import bearer_actor
        from syncd.api.oncall import oncall_router
        assert self.engine is not None
        routers = [oncall_router(sessions=self.sessions, responses=self.responses.current,
                                 clock=self.clock, actor=bearer_actor(settings.api_tokens),
                                 calendar_keys=self.calendar_keys),
                   events_router(self.alerts),
                   alert_router(self.alerts, bearer_actor(settings.api_tokens)),
                   action_router(sessions=self.sessions, responses=self.responses.current, clock=self.clock, actor=bearer_actor(settings.api_tokens))]
        if self.ack_links is not None:
            routers.append(ack_link_router(
                links=self.ack_links, commands=self.engine.commands, sessions=self.sessions,
                responses=self.responses.current, clock=self.clock, wake=self.engine.wake))
        return routers

    def reload_files(self) -> None:
        """Re-read changed mapping and response files (every few seconds and on SIGHUP); a broken
        edit keeps what was active. Returns nothing: a reload never leaves more work waiting."""
        self.mappings.reload()
        self.responses.reload()

    def check_auth(self) -> None:
        """One round of connector credential checks, for /readyz. A check that fails for another
        reason than the remote's answer is shown too, and crashes the round for the supervisor."""
        assert self.engine is not None
        for name, runtime in self.engine.runtimes.items():
            try:
                runtime.connector.check_auth()
                self.auth_status[name] = "ok"
            except RemoteError as error:
                self.auth_status[name] = str(error)
                log.error("connector check failed", extra={"connector": name, "error": str(error)})
            except Exception as error:
                self.auth_status[name] = f"the check itself failed: {type(error).__name__}: {error}"
                raise

    # -- health ----------------------------------------------------------------------------------
    def readiness(self) -> dict[str, Any]:
        """What /readyz answers: the store, each connector, each loop. A store that cannot be
        read makes it not ready with the reason, never an error of its own."""
        report: dict[str, Any] = {"ready": True, "store": "ok", "connectors": {},
                                  "loops": self.supervisor.states()}
        try:
            with self.db.connect() as connection:
                connection.execute(text("SELECT 1"))
            current = db.current_revision(self.db)
            if current != self.schema_head:
                report.update(ready=False, store=f"schema at {current or 'nothing (no syncd tables)'}"
                                                 f", needs {self.schema_head}")
                return report
            with db.transaction(self.sessions, readonly=True) as session:
                cursors = {name: sync_service.get_cursor(session=session, connector=name)
                           for name in self.config.connectors}
        except Exception as error:
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()
            report.update(ready=False, store=f"unreachable: {type(error).__name__}"
                                             + (f": {reason[0]}" if reason else ""))
            return report
        report["warnings"] = self._coverage_warnings()
        for name, cursor in cursors.items():
            auth = self.auth_status.get(name, "pending")
            paused = cursor.paused_reason if cursor else None
            report["connectors"][name] = {"auth": auth, "paused": paused}
            if auth != "ok" or paused:
                report["ready"] = False
        if not self.supervisor.healthy():
            report["ready"] = False
        return report

    def _coverage_warnings(self) -> list[str]:
        """Gaps in paged schedules over the next 14 days: a warning, not unreadiness (nobody
        on call is a staffing matter; pages then go to the next rule). Computed at most once a
        minute: the probe is polled often and the answer changes slowly."""
        from syncd.oncall.service import coverage_warnings
        now = self.clock.now()
        cached = self._coverage
        if cached is None or (now - cached[0]).total_seconds() > 60 \
                or cached[1] is not self.responses.current():
            with db.transaction(self.sessions, readonly=True) as session:
                warnings = coverage_warnings(session=session, responses=self.responses.current(),
                                             now=now)
            self._coverage = cached = (now, self.responses.current(), warnings)
        return cached[2]

    # -- lifecycle -------------------------------------------------------------------------------
    def run_until_signalled(self) -> None:
        """Foreground run: SIGTERM or SIGINT stop it cleanly; SIGHUP reloads the mappings and the
        response files. The
        handlers only set flags, installed before anything opens: a signal during the start is
        acted on once running, and can never interrupt the start half-way."""
        stop, reload = threading.Event(), threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGHUP, lambda *_: reload.set())
        try:
            self.open()
            self.start()
            log.info("syncd running", extra={"listen": self.config.http.listen,
                                             "connectors": ",".join(self.config.connectors),
                                             "process_id": self.worker_id})
            while not stop.wait(0.2):
                if reload.is_set():
                    reload.clear()
                    self.reload_files()
            log.info("stopping")
        finally:
            self.stop()

    def stop(self) -> None:
        """A clean stop within SHUTDOWN_SECONDS: loops finish or hand back what they hold, then
        the HTTP server, the heartbeat, the connectors, the store and the SQLite lock go, in the
        reverse order open() and start() took them. Safe after a failed or partial start, and
        one that fails (the store went away) is logged and does not keep the rest held."""
        try:
            self._opened.close()        # runs every callback even when one raises
        except Exception:
            log.exception("a part of the daemon did not stop cleanly")
