"""Building a connector client from its configuration section (the daemon and the CLI share it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from syncd.clock import Clock
from syncd.connectors.base import Connector
from syncd.connectors.http import RetryPolicy


def secret(value: Any) -> Any:
    """The plain value of a pydantic SecretStr (or the value itself)."""
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def build_connector(name: str, settings: Any, *, clock: Clock, overlap: timedelta,
                    policy: RetryPolicy | None = None) -> Connector:
    """A connector client from its configuration section. Interactive commands pass a policy
    that gives up quickly; the daemon retries each call for the connector's ``retry_for``."""
    if policy is None:
        policy = RetryPolicy(max_total_seconds=settings.retry_for.total_seconds())
    if settings.type == "servicenow":
        from syncd.connectors.servicenow import ServiceNowConnector
        return ServiceNowConnector(
            name, url=settings.url, username=settings.username,
            password=secret(settings.password), table=settings.table, filter=settings.filter or "",
            page_size=settings.page_size, overlap=overlap, policy=policy, clock=clock,
            timeout=seconds(settings.timeout), verify_tls=settings.verify_tls,
            webhook_secret=secret(settings.webhook_secret))
    from syncd.connectors.jira import JiraConnector
    return JiraConnector(
        name, url=settings.url, username=settings.username, token=secret(settings.token),
        project=settings.project, issue_type=settings.issue_type, jql=settings.jql,
        deployment=settings.deployment, page_size=settings.page_size, overlap=overlap,
        policy=policy, clock=clock, timeout=seconds(settings.timeout),
        verify_tls=settings.verify_tls, webhook_secret=secret(settings.webhook_secret))
