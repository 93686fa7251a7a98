"""Small helpers the process-level tests share."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
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


SYNCD = [sys.executable, "-m", "syncd.cli"]

# The environment the test configs take their secrets from.
ENV = {"SN_PASSWORD": "admin", "SYNCD_API_TOKEN": "t0ken-for-tests", "SN_SECRET": "sn-s3cret",
       "JIRA_TOKEN": "syncd-api-token", "JIRA_SECRET": "jira-s3cret"}


def syncd(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the `syncd` command as a user would, in its own process."""
    return subprocess.run([*SYNCD, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def write_config(folder: Path, store_url: str, *, sn_url: str = "http://127.0.0.1:9",
                 jira_url: str | None = None, port: int | None = None, extra: str = "",
                 filename: str = "syncd.yaml", connector_extra: str = "") -> Path:
    """A config file with a ServiceNow connector (and a Jira one when ``jira_url`` is given),
    secrets from ENV; ``extra`` adds top-level sections such as `sync:`, ``connector_extra``
    keys to every connector (indented under it)."""
    more = f"\n    {connector_extra}" if connector_extra else ""
    jira = f"""
  jira:
    type: jira
    url: "{jira_url}"
    username: syncd
    token: "${{JIRA_TOKEN}}"
    project: OPS
    poll_interval: 1s
    create_tickets: true
    webhook_secret: "${{JIRA_SECRET}}"{more}
""" if jira_url else ""
    path = folder / filename
    path.write_text(f"""
store: {{url: "{store_url}"}}
http: {{listen: "127.0.0.1:{port or free_port()}", api_tokens: ["${{SYNCD_API_TOKEN}}"]}}
{extra}
connectors:
  servicenow:
    type: servicenow
    url: "{sn_url}"
    username: admin
    password: "${{SN_PASSWORD}}"
    poll_interval: 1s
    create_incidents: true
    webhook_secret: "${{SN_SECRET}}"{more}
{jira}""")
    return path
