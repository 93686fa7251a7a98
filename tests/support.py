"""Small helpers the process-level tests share."""

from __future__ import annotations

import socket
import time
from typing import Callable

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(what: str, condition: Callable[[], object], timeout: float = 60.0) -> None:
    """Wait for a condition another process makes true (a server answering, a record arriving);
    a refused connection counts as "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
