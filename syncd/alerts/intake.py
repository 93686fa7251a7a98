"""The Events API v2 intake: which service a routing key names, the per-key rate limit, and one
transaction per event, committed before the answer goes out. It never calls a remote system:
tickets and pages leave through the outbox and the escalation rows the transaction writes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from sqlalchemy.orm import Session, sessionmaker

from syncd.alerts import service as alert_service
from syncd.alerts.events import AlertEvent, ChangeEventIn
from syncd.clock import Clock
from syncd.engine.connector_runtime import ConnectorRuntime
from syncd.metrics import ALERTS_OPEN
from syncd.oncall.definitions import Service
from syncd.response_files import ResponseSet
from syncd.store.db import transaction



# Outcomes that may page or change a ticket's status now: the escalation loop and the outbox
# workers are woken at once. Joins and repeats only rewrite the description, which the outbox
# workers pick up within their idle wait (a second).
WAKING_OUTCOMES = ("created", "acknowledged", "resolved")


class RateLimiter:
    """A token bucket per routing key on the injected clock: each service's
    ``events_per_minute`` events a minute, bursts up to the same number. Keys are routing keys
    of services (unknown ones are refused before), so the table stays as small as the response
    files."""

    def __init__(self, *, clock: Clock):
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}   # key -> (tokens, at)
        self._lock = threading.Lock()

    def allow(self, key: str, per_minute: int) -> bool:
        with self._lock:
            now = self.clock.monotonic()
            tokens, at = self._buckets.get(key, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - at) * per_minute / 60.0)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            return allowed

    @staticmethod
    def retry_after(per_minute: int) -> int:
        """Seconds until a refused key has a token again (at most)."""
        return max(1, round(60 / per_minute))


class AlertIntake:
    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock,
                 responses: Callable[[], ResponseSet],
                 runtimes: Mapping[str, ConnectorRuntime] | None = None,
                 wake: Callable[[], None] = lambda: None):
        """``wake``: called after a commit that may have queued ticket writes or pages (the
        engine's outbox workers and the escalation loop), so they start at once."""
        self.sessions = sessions
        self.clock = clock
        self.responses = responses
        self.runtimes = runtimes or {}
        self.rate_limit = RateLimiter(clock=clock)
        self.wake = wake
        self._by_key: tuple[ResponseSet | None, dict[str, Service]] = (None, {})

    def service_for(self, routing_key: str) -> Service | None:
        """The service whose routing_key this is (indexed once per response set)."""
        responses = self.responses()
        known, by_key = self._by_key
        if known is not responses:
            by_key = {service.routing_key.get_secret_value(): service
                      for service in responses.services.values() if service.routing_key}
            self._by_key = (responses, by_key)
        return by_key.get(routing_key)

    def enqueue(self, event: AlertEvent, service: Service) -> alert_service.Applied:
        with transaction(self.sessions) as session:
            applied = alert_service.apply_event(session=session, event=event, service=service,
                                                now=self.clock.now(), runtimes=self.runtimes)
        if applied.outcome in WAKING_OUTCOMES:
            self.wake()
        return applied

    def change(self, event: ChangeEventIn, service: Service) -> int:
        with transaction(self.sessions) as session:
            return alert_service.record_change_event(session=session, event=event,
                                                     service=service, now=self.clock.now()).id

    def update_gauges(self) -> None:
        """``syncd_alerts_open`` per service, store-wide (a supervised loop every few seconds);
        a service whose last alert resolved reads 0, not its last count."""
        with transaction(self.sessions, readonly=True) as session:
            counts = alert_service.open_counts(session=session)
        for service in {*self.responses().services, *counts}:
            ALERTS_OPEN.labels(service).set(counts.get(service, 0))

