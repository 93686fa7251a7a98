"""What both simulators share: a threaded HTTP/1.1 server, routing, fault injection, a request log,
webhook delivery and saving state to a JSON file.

A simulator subclasses :class:`Simulator`, registers routes with :meth:`Simulator.route` and keeps its
records under ``self.lock``. The admin endpoints under ``/_sim/`` (faults, request log, reset) are
never faulted nor logged, so tests can always steer the simulator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import random
import re
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

import requests

from syncd.clock import Clock, SystemClock

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_sim/"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)   # named groups of the route pattern

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter; an empty value counts as unset."""
        values = self.query.get(name)
        return values[0] if values and values[0] != "" else default

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HTTPError(400, f"Malformed JSON body: {exc}") from None


@dataclass
class Response:
    status: int = 200
    body: Any = None                     # JSON-serialisable, bytes, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)


class HTTPError(Exception):
    """Raised by a handler to answer with an error; the simulator renders it in its API's shape."""

    def __init__(self, status: int, message: str, detail: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers or {}


@dataclass
class Fault:
    """One injected misbehaviour. ``times`` bounds how many requests it hits (None: until cleared);
    ``probability`` (seeded) picks among matching requests."""

    kind: str                            # "status", "reset", "hang", "latency"
    status: int = 503
    retry_after: str | None = None       # seconds or an HTTP date, sent as Retry-After
    retry_after_date: bool = False       # send retry_after (seconds) as the HTTP date that far
                                         # ahead on the simulator's clock
    seconds: float = 0.0                 # latency or hang duration
    jitter: float = 0.0                  # extra random latency, up to this many seconds
    method: str | None = None            # only requests with this method
    path: str | None = None              # only paths matching this regular expression
    times: int | None = None
    probability: float = 1.0

    KINDS = ("status", "reset", "hang", "latency")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(self.KINDS)}, got {self.kind!r}")
        if self.retry_after_date and not (self.retry_after or "").isdigit():
            raise ValueError("retry_after_date needs retry_after in whole seconds, "
                             f"got {self.retry_after!r}")

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return not self.path or re.search(self.path, path) is not None


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    status: int
    at: float              # when the request arrived, on the simulator's clock (epoch seconds)
    duration: float        # seconds spent answering


class Simulator:
    """Base of the ServiceNow and Jira simulators: state, routes, faults and the HTTP server."""

    def __init__(self, *, clock: Clock | None = None, seed: int = 0,
                 state_file: str | None = None):
        self.clock = clock or SystemClock()
        self.lock = threading.RLock()
        self._routes: list[tuple[str, re.Pattern[str], Callable[[Request], Response]]] = []
        self._faults: list[Fault] = []
        self._fault_lock = threading.Lock()
        self._random = random.Random(seed)
        self._rate_limit: float | None = None        # requests per second, None: unlimited
        self._rate_window: list[float] = []
        self._log: list[LoggedRequest] = []
        self._log_lock = threading.Lock()
        self._hang_release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.webhooks = WebhookSender()
        self.state_file = state_file
        self.base_url = ""

    # -- to be provided by a simulator -------------------------------------------------------
    def error_response(self, error: HTTPError) -> Response:
        """Render an error in the remote API's own shape."""
        return Response(error.status, {"error": error.message, "detail": error.detail},
                        dict(error.headers))

    def authenticate(self, request: Request) -> None:
        """Raise HTTPError(401) when the request's credentials are not accepted."""

    def credentials(self) -> list[str]:
        """What a client may log in with (and the webhook secret), one line each, for people."""
        return []

    def rate_limit_headers(self) -> dict[str, str]:
        """Headers a throttled answer carries besides Retry-After."""
        return {}

    def state_to_json(self) -> Any:
        return {}

    def state_from_json(self, data: Any) -> None:
        pass

    def reset_state(self) -> None:
        """Forget every record (admin `POST /_sim/reset`)."""

    # -- routes ------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Callable[[Request], Response]) -> None:
        """Register a handler; ``pattern`` is a regular expression over the whole path."""
        self._routes.append((method, re.compile(pattern + r"/?\Z"), handler))

    def dispatch(self, request: Request) -> Response:
        """Answer one API request (no faults, no logging): admin routes, auth, then the API."""
        path_known = False
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if not match:
                continue
            path_known = True
            if method != request.method:
                continue
            request.params = {k: v for k, v in match.groupdict().items() if v is not None}
            try:
                if not request.path.startswith(ADMIN_PREFIX):
                    self.authenticate(request)
                return handler(request)
            except HTTPError as error:
                return self.error_response(error)
        if path_known:
            return self.error_response(HTTPError(405, "Method not allowed"))
        return self.error_response(HTTPError(404, "Requested URI does not represent any resource"))

    # -- faults ------------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        with self._fault_lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._fault_lock:
            self._faults.clear()
            self._rate_limit = None
            self._rate_window.clear()
        self._hang_release.set()

    def limit_rate(self, requests_per_second: float | None) -> None:
        """Answer 429 once more than this many requests arrive within one second."""
        with self._fault_lock:
            self._rate_limit = requests_per_second
            self._rate_window.clear()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._fault_lock:
            if self._rate_limit is not None:
                now = self.clock.monotonic()    # a client sleeping Retry-After on the same clock gets in
                self._rate_window = [t for t in self._rate_window if now - t < 1.0]
                if len(self._rate_window) >= self._rate_limit:
                    wait = max(1, int(1.0 - (now - self._rate_window[0])) + 1)
                    return Fault("status", status=429, retry_after=str(wait))
                self._rate_window.append(now)
            for fault in list(self._faults):
                if not fault.matches(method, path):
                    continue
                if fault.probability < 1.0 and self._random.random() >= fault.probability:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                if fault.kind == "latency":
                    delay = fault.seconds + (self._random.uniform(0, fault.jitter) if fault.jitter else 0)
                    return Fault("latency", seconds=delay)
                return fault
        return None

    # -- request log -------------------------------------------------------------------------
    def request_log(self) -> list[LoggedRequest]:
        with self._log_lock:
            return list(self._log)

    def clear_request_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    def count_requests(self, method: str | None = None, path: str | None = None) -> int:
        """How many logged requests match a method and a path regular expression."""
        return sum(1 for r in self.request_log()
                   if (method is None or r.method == method)
                   and (path is None or re.search(path, r.path)))

    def retry_after_header(self, fault: Fault) -> str | None:
        """The Retry-After a status fault sends: as given, or as an HTTP date on our clock."""
        if fault.retry_after is None or not fault.retry_after_date:
            return fault.retry_after
        return http_date(self.clock.now() + timedelta(seconds=int(fault.retry_after)))

    def _record(self, entry: LoggedRequest) -> None:
        with self._log_lock:
            self._log.append(entry)

    # -- admin endpoints ---------------------------------------------------------------------
    def _add_admin_routes(self) -> None:
        def post_fault(request: Request) -> Response:
            data = request.json() or {}
            if "requests_per_second" in data:
                self.limit_rate(data["requests_per_second"])
                return Response(201, {"requests_per_second": data["requests_per_second"]})
            try:
                fault = Fault(**data)
            except (TypeError, ValueError) as exc:
                raise HTTPError(400, f"Invalid fault: {exc}") from None
            self.inject(fault)
            return Response(201, asdict(fault))

        def delete_faults(request: Request) -> Response:
            self.clear_faults()
            return Response(204)

        def get_requests(request: Request) -> Response:
            return Response(200, [asdict(r) for r in self.request_log()])

        def delete_requests(request: Request) -> Response:
            self.clear_request_log()
            return Response(204)

        def post_reset(request: Request) -> Response:
            with self.lock:
                self.reset_state()
            self.clear_faults()
            self.clear_request_log()
            return Response(204)

        def post_webhook(request: Request) -> Response:
            data = request.json() or {}
            self.webhooks.configure(data.get("url"), data.get("secret"))
            return Response(204)

        self.route("POST", r"/_sim/faults", post_fault)
        self.route("DELETE", r"/_sim/faults", delete_faults)
        self.route("GET", r"/_sim/requests", get_requests)
        self.route("DELETE", r"/_sim/requests", delete_requests)
        self.route("POST", r"/_sim/reset", post_reset)
        self.route("POST", r"/_sim/webhook", post_webhook)

    # -- persistence -------------------------------------------------------------------------
    def save(self) -> None:
        if not self.state_file:
            return
        with self.lock:
            data = json.dumps(self.state_to_json(), indent=1, sort_keys=True)
        tmp = self.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.replace(tmp, self.state_file)

    def load(self) -> None:
        if self.state_file and os.path.exists(self.state_file):
            with open(self.state_file, encoding="utf-8") as fh:
                data = json.load(fh)
            with self.lock:
                self.state_from_json(data)

    # -- server lifecycle --------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> "Simulator":
        """Serve in a background thread; ``port=0`` picks a free port. Returns self."""
        self._add_admin_routes()
        self.load()
        self._server = _Server((host, port), _make_handler(self))
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        self._hang_release.clear()
        self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        self.webhooks.start()
        return self

    def stop(self) -> None:
        self._hang_release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.webhooks.stop()
        self.save()

    @property
    def port(self) -> int:
        assert self._server is not None, "simulator not started"
        return self._server.server_address[1]

    def __enter__(self) -> "Simulator":
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def http_date(moment: datetime) -> str:
    """An HTTP date (RFC 9110 5.6.7), e.g. ``Thu, 01 Jan 2026 12:00:30 GMT``."""
    return format_datetime(moment.astimezone(timezone.utc), usegmt=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def _make_handler(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True      # headers and body go out without a delayed-ACK stall
        # Buffer each answer and send it with one write when the request is done (the server
        # flushes wfile after every request): one syscall, one GIL release instead of two, which
        # under many client threads was most of the simulator's time (bench/simulators.py).
        wbufsize = 1 << 16
        server_version = "syncd-simulator"
        sys_version = "Python"

        def log_message(self, format: str, *args: Any) -> None:   # quiet: the request log is ours
            pass

        def date_time_string(self, timestamp: float | None = None) -> str:
            """The Date header, on the simulator's clock: clients measure the remote's offset by it."""
            if timestamp is None:
                return http_date(sim.clock.now())
            return super().date_time_string(timestamp)

        def _handle(self) -> None:
            started = time.monotonic()
            arrived = sim.clock.now().timestamp()
            split = urlsplit(self.path)
            path = split.path
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            admin = path.startswith(ADMIN_PREFIX)
            fault = None if admin else sim._fault_for(self.command, path)
            if fault is not None:
                if fault.kind == "latency":
                    time.sleep(fault.seconds)
                elif fault.kind == "reset":
                    self._reset_connection()
                    sim._record(LoggedRequest(self.command, path, 0, arrived,
                                              time.monotonic() - started))
                    return
                elif fault.kind == "hang":
                    sim._hang_release.wait(fault.seconds or None)
                    self.close_connection = True
                    sim._record(LoggedRequest(self.command, path, 0, arrived,
                                              time.monotonic() - started))
                    return
            if fault is not None and fault.kind == "status":
                headers = dict(sim.rate_limit_headers()) if fault.status == 429 else {}
                retry_after = sim.retry_after_header(fault)
                if retry_after is not None:
                    headers["Retry-After"] = retry_after
                message = "Rate limit exceeded" if fault.status == 429 else "Service unavailable"
                response = sim.error_response(HTTPError(fault.status, message, headers=headers))
            else:
                request = Request(self.command, path, parse_qs(split.query, keep_blank_values=True),
                                  self.headers, body)
                try:
                    response = sim.dispatch(request)
                except Exception as exc:   # a simulator bug must show, not hang the client
                    log.exception("simulator handler failed")
                    response = sim.error_response(HTTPError(500, "Internal error", str(exc)))
            # Logged before the answer goes out, so a client that has its answer always finds
            # its request in the log.
            if not admin:
                sim._record(LoggedRequest(self.command, path, response.status, arrived,
                                          time.monotonic() - started))
            self._send(response)

        def _send(self, response: Response) -> None:
            if response.body is None:
                payload = b""
            elif isinstance(response.body, bytes):
                payload = response.body
            else:
                payload = json.dumps(response.body).encode()
            self.send_response(response.status)
            headers = {"Content-Type": "application/json;charset=UTF-8", **response.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        def _reset_connection(self) -> None:
            """Close with RST, as a crashed proxy or load balancer does."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler


class WebhookSender:
    """Posts webhook bodies to a configured URL from a background thread, in order.

    A failed delivery is logged and dropped, as a real system's best-effort hook would."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.secret: str | None = None
        self._queue: queue.Queue[tuple[bytes, dict[str, str]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._session = requests.Session()
        self.delivered = 0
        self.failed = 0

    def configure(self, url: str | None, secret: str | None = None) -> None:
        self.url = url
        self.secret = secret

    def send(self, body: Any, headers: Mapping[str, str] | None = None, *,
             signature_header: str | None = None) -> None:
        """Queue a delivery. With ``signature_header`` the body is signed
        (``sha256=<hex HMAC-SHA256 of the raw body>``, as Jira does)."""
        if not self.url:
            return
        raw = json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if signature_header and self.secret:
            digest = hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
            all_headers[signature_header] = f"sha256={digest}"
        self._queue.put((raw, all_headers))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)
            self._thread = None

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued delivery has been attempted."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                raw, headers = item
                url = self.url
                if not url:
                    continue
                try:
                    response = self._session.post(url, data=raw, headers=headers, timeout=5)
                    if response.status_code < 300:
                        self.delivered += 1
                    else:
                        self.failed += 1
                        log.warning("webhook to %s answered %s", url, response.status_code)
                except requests.RequestException as exc:
                    self.failed += 1
                    log.warning("webhook to %s failed: %s", url, exc)
            finally:
                self._queue.task_done()
