"""Delivery through apprise: one URL per call, a bounded wait, and an outcome syncd can act on.

apprise's status maps to what the sender may do next: SUCCESS → ``sent``; FAILURE and NOMATCH →
``failed`` (the channel said no: a retry is safe); TIMEOUT → ``unknown`` (apprise stopped
waiting, but its worker may still be sending: never resend it). A socket read timeout inside a
plugin would also be an unanswered send, yet apprise reports it as FAILURE; so the plugin's read
timeout is raised above the call's timeout, and a slow channel always ends as TIMEOUT.

Nothing here shows a contact URL or apprise's words about it without taking the secrets out.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Literal
from urllib.parse import urlsplit

import apprise
from apprise import AppriseResultStatus, NotifyFormat
from apprise.manager_plugins import NotificationManager
from apprise.plugins import url_to_dict
from apprise.plugins.base import NotifyBase

from syncd.yamlsource import REDACTED, redact_url

log = logging.getLogger(__name__)

Outcome = Literal["sent", "failed", "unknown"]
# Channels whose messages are this short get the short form (SMS, pagers, voice).
SHORT_BODY_MAX = 200
SMS_CHANNELS = frozenset({"twilio", "sns"})    # when a malformed URL leaves apprise no length
READ_TIMEOUT_MARGIN = 1.0


class UnusableUrl(ValueError):
    """apprise cannot send with this URL; the message says why, without the URL's secrets."""


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    detail: str
    elapsed: float


def _scrub(text: str, url: str) -> str:
    """``text`` with every part of ``url`` that redact_url hides replaced by ***."""
    shown = set(re.split(r"[^A-Za-z0-9_.+-]+", redact_url(url)))
    secrets = {part for part in re.split(r"[^A-Za-z0-9_.+-]+", url)
               if len(part) >= 3 and part not in shown}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class _QuietForThisThread(logging.Filter):
    """Drops apprise's log records in a thread that is only checking a URL: its plugins log the
    values they refuse, secrets included."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "quiet", False)


_quiet = _QuietForThisThread()
logging.getLogger("apprise").addFilter(_quiet)


@contextmanager
def _apprise_quiet() -> Iterator[None]:
    _quiet.local.quiet = True
    try:
        yield
    finally:
        _quiet.local.quiet = False


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower() if "://" in url else ""


def parse_problem(url: str) -> str | None:
    """Why apprise cannot read ``url`` (no such channel, a form it cannot parse), or None.
    Whether its tokens are well formed is the channel's business, found when it is used
    (``syncd page test`` tries every contact)."""
    scheme = _scheme(url)
    with _apprise_quiet():
        parsed = url_to_dict(url, secure_logging=True)
    if parsed is not None:
        return None
    if scheme and scheme not in _known_schemes() and scheme not in ("http", "https"):
        return (f"apprise has no channel {scheme}:// (see the apprise wiki for the URL of each "
                f"service)")
    return (f"apprise cannot parse this {scheme + ':// ' if scheme else ''}URL: check its form "
            f"in the apprise wiki")


def _plugin(url: str) -> NotifyBase:
    """The apprise service for ``url``, or UnusableUrl saying why there is none."""
    problem = parse_problem(url)
    if problem is not None:
        raise UnusableUrl(problem)
    try:
        with _apprise_quiet():
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=False)
    except Exception as error:       # the channel refused its arguments (a malformed token)
        raise UnusableUrl(_scrub(f"apprise cannot use this {_scheme(url)}:// URL: {error}", url)
                          ) from None
    if plugin is None:
        raise UnusableUrl(f"apprise cannot use this {_scheme(url)}:// URL (the channel is "
                          f"disabled on this system)")
    return plugin


@lru_cache(maxsize=1)
def _known_schemes() -> frozenset[str]:
    return frozenset(NotificationManager().schemas())


def _plugin_class(url: str) -> type[NotifyBase] | None:
    with _apprise_quiet():
        parsed = url_to_dict(url, secure_logging=True)
    return NotificationManager()[parsed["schema"]] if parsed else None


@lru_cache(maxsize=1024)
def channel_of(url: str) -> str:
    """The channel's name for metrics and templates: the service's plain scheme (mailto, json,
    slack, twilio; mailto for mailtos://, slack for a native https://hooks.slack.com URL)."""
    plugin = _plugin_class(url)
    if plugin is None:
        return _scheme(url) or "unknown"
    names: list[str] = []
    for value in (plugin.protocol, plugin.secure_protocol):
        names += [value] if isinstance(value, str) else list(value or ())
    return names[0] if names else _scheme(url)


@lru_cache(maxsize=1024)
def is_short(url: str) -> bool:
    """Whether the channel takes only short texts without a subject (SMS, pagers)."""
    try:
        limit = _plugin(url).body_maxlen       # some channels know it only per URL (twilio)
    except UnusableUrl:
        limit = getattr(_plugin_class(url), "body_maxlen", None)
    if not isinstance(limit, int):
        return channel_of(url) in SMS_CHANNELS
    return limit <= SHORT_BODY_MAX


def deliver(url: str, *, title: str, body: str, timeout: float) -> Delivery:
    """Send one message to one URL, waiting at most ``timeout`` seconds for the answer."""
    started = time.monotonic()
    try:
        plugin = _plugin(url)
    except UnusableUrl as error:
        return Delivery("failed", str(error), time.monotonic() - started)
    plugin.socket_read_timeout = max(plugin.socket_read_timeout, timeout + READ_TIMEOUT_MARGIN)
    notifier = apprise.Apprise()
    notifier.add(plugin)
    try:
        result = notifier.notify(body=body, title=title, body_format=NotifyFormat.TEXT,
                                 timeout=timeout)
    except Exception as error:       # apprise itself broke: whether it sent is not known
        log.exception("apprise raised while sending")
        return Delivery("unknown", _scrub(f"apprise raised {type(error).__name__}: {error}", url),
                        time.monotonic() - started)
    words = "; ".join(entry.message for entry in result.logs()
                      if entry.level in ("WARNING", "ERROR", "CRITICAL"))
    elapsed = time.monotonic() - started
    if result.status == AppriseResultStatus.SUCCESS:
        return Delivery("sent", f"accepted by {plugin.service_name} in {elapsed:.2f}s", elapsed)
    if result.status == AppriseResultStatus.TIMEOUT:
        return Delivery("unknown", _scrub(
            f"{plugin.service_name} did not answer within {timeout:g}s: the message may have "
            f"gone, so it is not resent", url), elapsed)
    return Delivery("failed", _scrub(words or f"{plugin.service_name} refused the message "
                                     f"({result.status.name.lower()})", url), elapsed)
