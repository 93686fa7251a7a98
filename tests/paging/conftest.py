"""What the paging tests share: response files with alice on call around the clock, a config
that serves acknowledge links, and reading an incident through the daemon's API."""

from __future__ import annotations

from pathlib import Path

import requests

from ..support import ENV, write_config

LINK_SECRET = "paging-e2e-link-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ENV['SYNCD_API_TOKEN']}"}


def contacts_yaml(contacts: dict[str, str]) -> str:
    return "{" + ", ".join(f'{name}: "{url}"' for name, url in contacts.items()) + "}"


def write_responses(folder: Path, *, alice: dict[str, str], bob: dict[str, str] | None = None,
                    group: str = "Software", escalate_after: str = "10m",
                    second_rule: bool = False) -> Path:
    """alice on call in one layer since 2020 with no restrictions (any run date falls in it, the
    faketime one too); the service is named by incidents or matched by ``group``; pages at P1.
    ``second_rule``: the policy's next rule pages bob ``escalate_after`` later."""
    rules = "[" + ", ".join(f"{{contact: {name}, after: 0m}}" for name in alice) + "]"
    bob_user = f"""
  - id: bob
    name: Bob Brown
    email: bob@example.com
    contacts: {contacts_yaml(bob)}
""" if bob else ""
    bob_rule = f"\n      - {{targets: [{{user: bob}}], escalate_after: {escalate_after}}}" \
        if second_rule else ""
    path = folder / "oncall.yaml"
    path.write_text(f"""\
users:
  - id: alice
    name: Alice Adams
    email: alice@example.com
    contacts: {contacts_yaml(alice)}
    rules: {{high: {rules}, low: {rules}}}
{bob_user}
schedules:
  - id: primary
    name: Primary
    time_zone: UTC
    layers:
      - {{name: always, start: "2020-01-06T00:00", rotation: weekly, users: [alice]}}
escalation_policies:
  - id: software
    rules:
      - {{targets: [{{schedule: primary}}], escalate_after: {escalate_after}}}{bob_rule}
services:
  - id: checkout
    name: Checkout
    escalation_policy: software
    match: {{group: [{group}]}}
    page_on: {{priority: [P1]}}
""")
    return path


def write_paging_config(folder: Path, store_url: str, *, port: int, responses: Path,
                        sn_url: str = "http://127.0.0.1:9", jira_url: str | None = None) -> Path:
    """The tests' usual config (tests/support.py) with response files and acknowledge links
    served at the daemon's own address."""
    path = write_config(folder, store_url, sn_url=sn_url, jira_url=jira_url, port=port,
                        extra=f'response: {{files: ["{responses}"]}}')
    text = path.read_text()
    tokens = 'api_tokens: ["${SYNCD_API_TOKEN}"]}'
    assert tokens in text, "tests/support.py write_config changed its http line"
    path.write_text(text.replace(tokens, f'api_tokens: ["${{SYNCD_API_TOKEN}}"], '
                                         f'link_secret: "{LINK_SECRET}", '
                                         f'public_url: "http://127.0.0.1:{port}"}}'))
    return path


def incident(base: str, incident_id: int) -> dict:
    answer = requests.get(f"{base}/api/v1/incidents/{incident_id}", headers=AUTH, timeout=5)
    answer.raise_for_status()
    return answer.json()


def timeline_texts(base: str, incident_id: int) -> list[str]:
    return [entry["text"] for entry in incident(base, incident_id)["timeline"]]
