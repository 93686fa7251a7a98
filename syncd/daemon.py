"""Assembling and running the daemon from a validated configuration: the store, connectors,
mappings with hot reload, the engine's workers and the HTTP server, with a clean stop on a signal."""

from __future__ import annotations

import logging
import os
import signal
import socket
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
from syncd.engine.ownership import PollerOwnership
from syncd.engine.sync_engine import EngineSettings, SyncEngine
from syncd.mapping.reload import MappingSet, MappingWatcher
from syncd.store import db, queue
from syncd.store.process_lock import SqliteProcessLock, StoreInUse

log = logging.getLogger(__name__)

AUTH_RECHECK_SECONDS = 60.0
MAPPING_RELOAD_SECONDS = 2.0
SHUTDOWN_SECONDS = 30.0      # below systemd's and Kubernetes' stop timeouts in deploy/


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


class Daemon:
    def __init__(self, config: Any, *, clock: Clock | None = None, worker_id: str | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.store_url = secret(config.store.url)
        self.sqlite_lock = SqliteProcessLock(self.store_url) \
            if make_url(self.store_url).get_backend_name() == "sqlite" else None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.auth_status: dict[str, str] = {}
        self.http_server: uvicorn.Server | None = None
        self.engine: Engine | None = None

    # -- assembly --------------------------------------------------------------------------------
    def open(self) -> None:
        """Everything short of starting threads: store checked, mappings loaded, connectors built."""
        if self.sqlite_lock:
            try:
                self.sqlite_lock.acquire()
            except StoreInUse as error:
                raise StartupError(str(error)) from None
        # Each worker thread, poller (and its lock connection) and HTTP handler may hold a connection.
        pool = max(self.config.store.pool_size,
                   self.config.sync.outbox_workers + 3 * len(self.config.connectors) + 4)
        self.db = db.open_engine(self.store_url, pool_size=pool)
        try:
            db.ensure_schema(self.db, auto_upgrade=self.config.store.auto_upgrade)
        except db.SchemaOutOfDate as error:
            raise StartupError(str(error)) from None
        self.sessions = db.session_factory(self.db)
        from syncd.mapping import MappingError
        try:
            self.mappings = MappingSet({name: c.mapping for name, c in self.config.connectors.items()})
        except MappingError as error:
            raise StartupError(f"invalid mapping: {error}") from None
        for name, settings in self.config.connectors.items():
            system = self.mappings.get(name).system
            if system != settings.type:
                raise StartupError(f"connectors.{name}.mapping: {settings.mapping} maps {system}, "
                                   f"but connector {name!r} is {settings.type}")
        overlap = timedelta(seconds=seconds(self.config.sync.poll_overlap))
        runtimes = {}
        for name, settings in self.config.connectors.items():
            runtimes[name] = ConnectorRuntime(
                name=name,
                connector=build_connector(name, settings, clock=self.clock, overlap=overlap),
                mapping=(lambda n=name: self.mappings.get(n)),
                create_incidents=settings.create_incidents,
                create_tickets=settings.create_tickets,
                poll_interval=timedelta(seconds=seconds(settings.poll_interval)))
        sync = self.config.sync
        self.engine = SyncEngine(
            sessions=self.sessions, runtimes=runtimes, clock=self.clock, worker_id=self.worker_id,
            ownership=lambda name: PollerOwnership(self.db, name),
            settings=EngineSettings(
                outbox_workers=sync.outbox_workers,
                lease=sync.claim_lease,
                backoff=queue.Backoff(initial=seconds(sync.backoff_initial),
                                        maximum=seconds(sync.backoff_max),
                                        max_attempts=sync.max_attempts),
                reconcile_after_downtime=sync.reconcile_after_downtime,
                pause_share=sync.pause_when_share_changed))

    def start(self) -> None:
        assert self.engine is not None, "open() first"
        self._start_thread(threading.Thread(target=self._auth_loop, name="auth-check", daemon=True))
        self._start_thread(MappingWatcher(self.mappings, interval=MAPPING_RELOAD_SECONDS,
                                          stop=self._stop))
        self.engine.start()
        self._start_http()

    def _start_thread(self, thread: threading.Thread) -> None:
        self._threads.append(thread)
        thread.start()

    def _start_http(self) -> None:
        from syncd.api.app import ApiSettings, create_app
        from syncd.api.auth import ApiToken
        host, _, port = self.config.http.listen.rpartition(":")
        app = create_app(self.engine, ApiSettings(
            api_tokens=[ApiToken(t.name, secret(t.token)) for t in self.config.http.api_tokens],
            max_body_bytes=self.config.http.max_body_bytes, readiness=self.readiness))
        self.http_server = uvicorn.Server(uvicorn.Config(
            app, host=host.strip("[]") or "127.0.0.1", port=int(port), log_config=None,
            access_log=False, timeout_graceful_shutdown=5))
        thread = threading.Thread(target=self.http_server.run, name="http", daemon=True)
        self._start_thread(thread)
        deadline = time.monotonic() + 10
        while not self.http_server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.http_server.started:
            raise StartupError(f"the HTTP server could not listen on {self.config.http.listen} "
                               f"(http.listen): is the port taken?")

    def _auth_loop(self) -> None:
        assert self.engine is not None
        while True:
            for name, runtime in self.engine.runtimes.items():
                try:
                    runtime.connector.check_auth()
                    self.auth_status[name] = "ok"
                except RemoteError as error:
                    self.auth_status[name] = str(error)
                    log.error("connector check failed", extra={"connector": name, "error": str(error)})
            if self._stop.wait(AUTH_RECHECK_SECONDS):
                return

    # -- health ----------------------------------------------------------------------------------
    def readiness(self) -> dict[str, Any]:
        report: dict[str, Any] = {"ready": True, "store": "ok", "connectors": {}}
        try:
            with self.db.connect() as connection:
                connection.execute(text("SELECT 1"))
            current, head = db.current_revision(self.db), db.head_revision()
            if current != head:
                report.update(ready=False, store=f"schema at {current}, needs {head}")
        except Exception as error:
            report.update(ready=False, store=f"unreachable: {type(error).__name__}")
            return report
        with db.transaction(self.sessions, readonly=True) as session:
            for name in self.config.connectors:
                cursor = sync_service.get_cursor(session=session, connector=name)
                auth = self.auth_status.get(name, "pending")
                paused = cursor.paused_reason if cursor else None
                report["connectors"][name] = {"auth": auth, "paused": paused}
                if auth != "ok" or paused:
                    report["ready"] = False
        dead = [name for name, alive in (self.engine.alive_workers() if self.engine else {}).items()
                if not alive]
        if dead:
            report.update(ready=False, dead_workers=dead)
        return report

    # -- lifecycle -------------------------------------------------------------------------------
    def run_until_signalled(self) -> None:
        """Foreground run: SIGTERM or SIGINT stop it cleanly; SIGHUP reloads the mappings."""
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.mappings.reload())
        self.open()
        self.start()
        log.info("syncd running", extra={"listen": self.config.http.listen,
                                         "connectors": ",".join(self.config.connectors)})
        while not stop.wait(0.5):
            pass
        log.info("stopping")
        self.stop()

    def stop(self) -> None:
        """A clean stop within SHUTDOWN_SECONDS: workers finish or hand back what they hold."""
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        self._stop.set()
        if self.engine is not None:
            self.engine.stop(timeout=SHUTDOWN_SECONDS - 5)
        if self.http_server is not None:
            self.http_server.should_exit = True
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.engine is not None:
            for runtime in self.engine.runtimes.values():
                runtime.connector.close()
        if hasattr(self, "db"):
            self.db.dispose()
        if self.sqlite_lock:
            self.sqlite_lock.release()
