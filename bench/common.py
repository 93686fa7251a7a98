"""What the benchmarks share: starting a simulator in its own process, and latency summaries."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

import requests

SYNCD = [sys.executable, "-m", "syncd.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def simulator_process(system: str, *, port: int | None = None,
                      extra: Sequence[str] = ()) -> Iterator[str]:
    """``syncd simulate SYSTEM --port N`` as a child process; yields its base URL once it answers."""
    port = port or free_port()
    process = subprocess.Popen([*SYNCD, "--log-level", "WARNING", "simulate", system,
                                "--port", str(port), *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{system} simulator exited with {process.returncode}: "
                                   f"{process.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                requests.get(f"{url}/_sim/requests", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system} simulator did not answer on {url} within 30 s")
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
