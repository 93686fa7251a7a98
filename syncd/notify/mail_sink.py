"""A real SMTP server on loopback that keeps what it receives: the mail end of `syncd demo` and of
the tests. aiosmtpd's Controller runs it in a thread; plain SMTP, no TLS, no login, which apprise's
``mailto://`` speaks when the URL names no user."""

from __future__ import annotations

import threading
from email.message import Message
from typing import Any
from urllib.parse import urlencode

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler


class _Keep(MessageHandler):
    def __init__(self, sink: MailSink):
        super().__init__()
        self._sink = sink

    def handle_message(self, message: Message) -> None:
        with self._sink._lock:
            self._sink.messages.append(message)
            self._sink._arrived.notify_all()


class _AnyPortController(Controller):
    """Controller on port 0: it learns the port the system gave before it connects to itself."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class MailSink:
    """``with MailSink() as sink: ... sink.messages``: every mail received, parsed."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._controller = _AnyPortController(_Keep(self), hostname=host, port=port)

    @property
    def host(self) -> str:
        return self._controller.hostname

    @property
    def port(self) -> int:
        return self._controller.port

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def url_for(self, address: str, sender: str = "syncd@example.com") -> str:
        """The apprise URL that delivers to ``address`` through this sink (plain SMTP: the SMTP
        host is given apart from the mail domain, and no user means no login)."""
        domain = sender.rpartition("@")[2]
        query = urlencode({"smtp": self.host, "port": self.port, "from": sender, "to": address},
                          safe="@")
        return f"mailto://{domain}?{query}"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Message]:
        """The messages once at least ``count`` have arrived (SMTP delivery runs in its own
        thread), or as many as came within ``timeout`` seconds of real time."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)
