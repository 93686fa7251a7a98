"""The one retry policy and the request instrumentation every connector shares.

Connectors make HTTP calls through :func:`instrumented_session` (every request counted and timed in
``syncd.metrics``, checked by the active :func:`request_guard`, and its ``Date`` header sampled
into the remote clock's offset) and wrap each remote operation in :func:`call_remote`, which turns
library exceptions into :class:`~syncd.connectors.base.RemoteError` and retries the transient ones
within :attr:`RetryPolicy.budget_seconds`. The client libraries' own retries stay off (adapters
mounted with ``max_retries=0``), so a request is never retried twice over and the policy lives
here only.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import deque
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import requests
import tenacity
from jira.exceptions import JIRAError
from pysnow.exceptions import PysnowException
from requests.adapters import HTTPAdapter

from syncd.clock import Clock, SystemClock
from syncd.connectors.base import (AuthError, PermanentRemoteError, RemoteError,
                                   TransientRemoteError)
from syncd.metrics import REMOTE_REQUEST_SECONDS, REMOTE_REQUESTS

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_OPERATION = "other"

# 500 is retried: ServiceNow and Jira answer 500 for passing trouble (a node restarting, a cancelled
# transaction, an exhausted semaphore) as often as for bugs; the attempt and time bounds cap the
# cost, and one that persists still ends as a RemoteError the outbox dead-letters.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})

# What a remote call may raise that call_remote classifies; anything else is a bug and propagates.
REMOTE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.RequestException, JIRAError, PysnowException)

_MAX_BODY_IN_MESSAGE = 300
# The shortest time an attempt is given: call_remote starts no retry with less of its budget left,
# and caps every request's timeout by what is left (never below this), so that one operation,
# waits and attempts together, ends within RetryPolicy.budget_seconds.
MIN_ATTEMPT_SECONDS = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    """How long a remote operation keeps trying before it gives up and reports the last error."""

    max_attempts: int = 5
    max_total_seconds: float = 60.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("max_total_seconds", "backoff_initial", "backoff_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must not be negative, got {getattr(self, name)}")

    @property
    def budget_seconds(self) -> float:
        """The longest one remote operation (every attempt, every request and every wait of one
        :func:`call_remote`) can take: requests' timeouts are capped by the time left. A claim
        renewed by a :func:`request_guard` (called before every request and every wait) outlives
        the operation when its lease is longer than this. A connector method runs one to four
        operations (a Jira create into a later status: create, transition). Requests' read timeout
        bounds each wait for bytes, so a server trickling an answer can overrun it."""
        return max(self.max_total_seconds, MIN_ATTEMPT_SECONDS)


# -- fencing ---------------------------------------------------------------------------------------

_guards: ContextVar[tuple[Callable[[], None], ...]] = ContextVar("syncd_request_guards", default=())
_refusal: ContextVar[BaseException | None] = ContextVar("syncd_request_refusal", default=None)


@contextmanager
def request_guard(check: Callable[[], None]) -> Iterator[None]:
    """Call ``check`` before every request a connector sends in this thread (or context) inside
    the block, and before every wait between retries: it renews a claim or raises when the claim
    is lost. Its exception stops the operation unchanged, neither wrapped nor retried, and the
    request is not sent. Nested guards all run, the outermost first."""
    token = _guards.set((*_guards.get(), check))
    try:
        yield
    finally:
        _guards.reset(token)


def _check_guards() -> None:
    """Run the active guards; remember what one raised, so call_remote lets it through as it is."""
    for check in _guards.get():
        try:
            check()
        except BaseException as refusal:
            _refusal.set(refusal)
            raise


def _refused(exc: BaseException) -> bool:
    return exc is _refusal.get()


# -- the remote clock ------------------------------------------------------------------------------

class ClockOffset:
    """The remote clock minus the local one, from the ``Date`` headers of the remote's answers.

    ``Date`` has a resolution of one second and is truncated (the server writes its current
    second), so a sample takes the middle of that second; the estimate is the median of the last
    SAMPLES samples, so one slow answer (its Date stamped long before we read it) cannot swing it.
    What remains is about half a second either way plus the network latency."""

    SAMPLES = 15

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=self.SAMPLES)
        self._lock = threading.Lock()

    def observe(self, date_header: str | None, local: datetime) -> None:
        """Add one sample: an answer's Date header and the local time it arrived at."""
        if not date_header:
            return
        try:
            remote = parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError):
            return
        if remote.tzinfo is None:
            remote = remote.replace(tzinfo=timezone.utc)
        sample = (remote - local).total_seconds() + 0.5
        with self._lock:
            self._samples.append(sample)

    @property
    def offset(self) -> timedelta:
        """0 until the first sample."""
        with self._lock:
            samples = list(self._samples)
        return timedelta(seconds=statistics.median(samples)) if samples else timedelta(0)


# -- instrumentation -------------------------------------------------------------------------------

_operation = threading.local()


@contextmanager
def remote_operation(name: str) -> Iterator[None]:
    """Label the metrics of the requests this thread makes inside the block with ``name``."""
    previous = getattr(_operation, "name", None)
    _operation.name = name
    try:
        yield
    finally:
        _operation.name = previous


def current_operation() -> str:
    return getattr(_operation, "name", None) or DEFAULT_OPERATION


_deadline: ContextVar[tuple[Clock, float] | None] = ContextVar("syncd_call_deadline", default=None)


def _within_deadline(timeout: Any) -> Any:
    """A request's timeout (seconds, or a (connect, read) pair) capped by what is left of the
    running call_remote's budget, never below MIN_ATTEMPT_SECONDS."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    clock, at = deadline
    left = max(at - clock.monotonic(), MIN_ATTEMPT_SECONDS)
    if isinstance(timeout, tuple):
        return tuple(left if part is None else min(part, left) for part in timeout)
    return left if timeout is None else min(timeout, left)


class _InstrumentedSession(requests.Session):
    """A Session that checks the request guards, counts and times every request, applies a
    default timeout, and samples the remote clock from each answer's Date header."""

    def __init__(self, connector: str, timeout: float, clock: Clock):
        super().__init__()
        self.connector = connector
        self.default_timeout = timeout
        self.clock = clock
        self.remote_clock = ClockOffset()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
                ) -> requests.Response:
        _check_guards()
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        kwargs["timeout"] = _within_deadline(kwargs["timeout"])
        operation = current_operation()
        started = time.perf_counter()   # a real duration for the histogram, not scheduling time
        status = "error"
        try:
            response = super().request(method, url, *args, **kwargs)
            self.remote_clock.observe(response.headers.get("Date"), self.clock.now())
            status = str(response.status_code)
            return response
        finally:
            REMOTE_REQUEST_SECONDS.labels(self.connector, operation).observe(
                time.perf_counter() - started)
            REMOTE_REQUESTS.labels(self.connector, operation, status).inc()


def instrumented_session(connector: str, *, timeout: float = 30.0, verify: bool = True,
                         clock: Clock | None = None) -> _InstrumentedSession:
    """A Session for one connector: guards and metrics per request, a default timeout, the remote
    clock's offset against ``clock`` (``session.remote_clock``), no hidden retries."""
    session = _InstrumentedSession(connector, timeout, clock or SystemClock())
    session.verify = verify
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(max_retries=0))
    return session


# -- classification --------------------------------------------------------------------------------

def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3).

    None when absent or unreadable; a date in the past means "now" (0)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)      # RFC says an integer; some servers send fractions
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:          # an obsolete date form without zone: HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


def remote_message(response: requests.Response | None) -> str:
    """The remote's own explanation from an error body: ServiceNow ``error.message``/``detail``,
    Jira ``errorMessages``/``errors``; else the start of the body."""
    if response is None:
        return ""
    try:
        body = response.json()
    except ValueError:
        body = None
    parts: list[str] = []
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            parts += [str(error[k]) for k in ("message", "detail") if error.get(k)]
        elif isinstance(error, str) and error:
            parts.append(error)
            if body.get("detail"):
                parts.append(str(body["detail"]))
        messages = body.get("errorMessages")
        if isinstance(messages, list):
            parts += [str(m) for m in messages if m]
        errors = body.get("errors")
        if isinstance(errors, dict):
            parts += [f"{field}: {message}" for field, message in errors.items()]
        if parts:
            return "; ".join(parts)
    text = (response.text or "").strip()
    if not text:
        return response.reason or ""
    return text[:_MAX_BODY_IN_MESSAGE] + ("..." if len(text) > _MAX_BODY_IN_MESSAGE else "")


def _where(response: requests.Response | None, url: str | None = None) -> str:
    request = getattr(response, "request", None)
    method = getattr(request, "method", None)
    target = getattr(request, "url", None) or url or getattr(response, "url", None)
    path = urlsplit(target).path if target else ""
    return " ".join(p for p in (method, path) if p)


def classify_status(connector: str, status: int, response: requests.Response | None, *,
                    now: datetime, url: str | None = None, fallback_message: str = "") -> RemoteError:
    """The RemoteError an HTTP status means (see the module's TRANSIENT/AUTH sets)."""
    detail = remote_message(response) or fallback_message
    where = _where(response, url)
    summary = f"HTTP {status}" + (f" on {where}" if where else "") + (f": {detail}" if detail else "")
    if status in AUTH_STATUSES:
        return AuthError(connector, f"credentials refused ({summary}); check the credentials "
                                    f"configured for connector {connector!r}", status=status)
    if status in TRANSIENT_STATUSES:
        header = response.headers.get("Retry-After") if response is not None else None
        return TransientRemoteError(connector, summary, status=status,
                                    retry_after=parse_retry_after(header, now=now))
    return PermanentRemoteError(connector, summary, status=status)


def classify_error(connector: str, exc: BaseException, *, now: datetime | None = None
                   ) -> RemoteError:
    """Turn what a client library raised into a RemoteError that says whether retrying can help.

    ``now`` (default: the system time) anchors a Retry-After given as an HTTP date."""
    now = now or datetime.now(timezone.utc)
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, JIRAError):
        if exc.status_code is not None:
            return classify_status(connector, int(exc.status_code), exc.response, now=now,
                                   url=exc.url, fallback_message=exc.text or "")
        return PermanentRemoteError(connector, f"Jira client error: {exc.text or 'no detail'}")
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return classify_status(connector, exc.response.status_code, exc.response, now=now)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout,
                        requests.exceptions.ChunkedEncodingError)):
        return TransientRemoteError(connector, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return PermanentRemoteError(connector, f"unreadable answer (not JSON): {exc}")
    return PermanentRemoteError(connector, f"{type(exc).__name__}: {exc}")


# -- retries ---------------------------------------------------------------------------------------

class _wait_retry_after_or_backoff(tenacity.wait.wait_base):
    """The server's Retry-After when it gave one, else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy):
        self._backoff = tenacity.wait_exponential_jitter(
            multiplier=policy.backoff_initial, max=policy.backoff_max, jitter=policy.backoff_initial)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        assert retry_state.outcome is not None
        exc = retry_state.outcome.exception()
        if isinstance(exc, RemoteError) and exc.retry_after is not None:
            return exc.retry_after
        return self._backoff(retry_state)


class _stop_past_deadline(tenacity.stop.stop_base):
    """Stop when the next wait would leave the next attempt less than MIN_ATTEMPT_SECONDS
    before the deadline (on the injected clock)."""

    def __init__(self, clock: Clock, deadline: float):
        self._clock = clock
        self._deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return (self._clock.monotonic() + retry_state.upcoming_sleep + MIN_ATTEMPT_SECONDS
                > self._deadline)


def call_remote(connector: str, operation: str, fn: Callable[[], T], *, policy: RetryPolicy,
                clock: Clock) -> T:
    """Run one remote operation under the retry policy; raise the last RemoteError when it gives up.

    Transient errors are retried, waiting (on ``clock``) as long as Retry-After says or with
    exponential backoff, within ``max_attempts`` and ``budget_seconds``; permanent errors are
    raised at once. The active request guards run before every request and every wait; what
    they raise passes through unchanged."""

    def attempt() -> T:
        with remote_operation(operation):
            try:
                return fn()
            except REMOTE_EXCEPTIONS as exc:
                if _refused(exc):
                    raise
                raise classify_error(connector, exc, now=clock.now()) from exc

    def before_wait(retry_state: tenacity.RetryCallState) -> None:
        assert retry_state.outcome is not None
        log.warning("%s %s failed (%s); retry %d of %d in %.1fs", connector, operation,
                    retry_state.outcome.exception(), retry_state.attempt_number,
                    policy.max_attempts - 1, retry_state.upcoming_sleep,
                    extra={"connector": connector, "operation": operation})
        _check_guards()

    deadline = clock.monotonic() + policy.budget_seconds
    enclosing = _deadline.get()
    if enclosing is not None:          # nested (Jira's server info inside a search): within its budget
        deadline = min(deadline, enclosing[1])
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(
            lambda exc: isinstance(exc, TransientRemoteError) and not _refused(exc)),
        wait=_wait_retry_after_or_backoff(policy),
        stop=(tenacity.stop_after_attempt(policy.max_attempts)
              | _stop_past_deadline(clock, deadline)),
        sleep=clock.sleep,
        before_sleep=before_wait,
        reraise=True,
    )
    # Not reset afterwards: a refusal inside a nested operation (Jira's server info read
    # inside a search) must still be recognised by the enclosing one.
    _refusal.set(None)
    within = _deadline.set((clock, deadline))
    try:
        return retrying(attempt)
    finally:
        _deadline.reset(within)


def retry_finds_earlier(write: Callable[[], T], find_earlier: Callable[[], T | None]
                        ) -> Callable[[], T]:
    """Make a write that is not idempotent (a create, a comment) safe under call_remote's
    retries: an attempt after the first looks for what an earlier one may have written before
    its answer was lost (a timeout, a reset, a 500 after the remote stored it), and writes only
    if it finds nothing."""
    attempts = 0

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            earlier = find_earlier()
            if earlier is not None:
                return earlier
        return write()

    return attempt
