"""A small JSON webhook receiver for apprise's json:// channel: answers 200, 500, or hangs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class JsonReceiver:
    """``json://127.0.0.1:{port}/{path}``: /ok answers 200, /fail 500, /hang waits until
    released (``stop`` releases it). ``on_request(path, number)`` runs before each answer (the
    first request is number 1)."""

    def __init__(self, on_request: Callable[[str, int], None] | None = None):
        self.received: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.received.append((self.path, body))
                    number = len(receiver.received)
                if on_request is not None:
                    on_request(self.path, number)
                if self.path.startswith("/hang"):
                    receiver.release.wait(30)
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/{path.lstrip('/')}"

    def paths(self) -> list[str]:
        with self.lock:
            return [path for path, _ in self.received]

    def __enter__(self) -> JsonReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
