"""The accounts the simulators accept and how `syncd simulate` tells a user about them, at start and
in `--help`. Free of the simulators' own imports, so `syncd --help` stays quick."""

from __future__ import annotations

from typing import Iterable, Mapping

SERVICENOW_USERS: Mapping[str, str] = {"admin": "admin"}     # user name -> password
SERVICENOW_SECRET_HEADER = "X-Syncd-Webhook-Secret"

JIRA_USERS: tuple[dict[str, str], ...] = (
    {"name": "syncd", "displayName": "syncd integration", "emailAddress": "syncd@example.com",
     "password": "syncd-api-token", "token": "syncd-pat"},
    {"name": "alice", "displayName": "Alice Adams", "emailAddress": "alice@example.com",
     "password": "alice-api-token"},
    {"name": "bob", "displayName": "Bob Brown", "emailAddress": "bob@example.com"},
)
JIRA_SIGNATURE_HEADER = "X-Hub-Signature"


def servicenow_credentials(users: Mapping[str, str], webhook_secret: str | None) -> list[str]:
    """One line per accepted login, then the webhook secret if there is one."""
    lines = [f"basic auth: user {name}, password {password}" for name, password in users.items()]
    if webhook_secret:
        lines.append(f"webhook secret: {webhook_secret} (sent in {SERVICENOW_SECRET_HEADER})")
    return lines


def jira_credentials(users: Iterable[Mapping[str, str]], deployment: str,
                     webhook_secret: str | None) -> list[str]:
    """One line per accepted login (Cloud: email and API token; Server: user name and password;
    both also take the login the other way round, and personal access tokens), then the webhook
    secret if there is one."""
    lines = []
    for user in users:
        name, email = user["name"], user["emailAddress"]
        if user.get("password"):
            if deployment == "Cloud":
                lines.append(f"basic auth: user {email} (or {name}), API token {user['password']}")
            else:
                lines.append(f"basic auth: user {name} (or {email}), password {user['password']}")
        if user.get("token"):
            lines.append(f"bearer token: {user['token']} (personal access token of {name})")
    if webhook_secret:
        lines.append(f"webhook secret: {webhook_secret} (signs {JIRA_SIGNATURE_HEADER}: "
                     "sha256=<HMAC-SHA256 of the body>)")
    return lines
