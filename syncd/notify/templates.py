"""The words of a page: Jinja2 templates per kind (syncd/notify/templates/), a long form for mail
and chat, and a short one (at most 160 characters, no subject) for SMS and voice.

Each long template sets ``subject`` and renders the body. The output is plain text (autoescape is
off: apprise escapes for HTML channels itself); what people typed (titles, names) passes through
:func:`one_line`, so a title with line breaks or control characters cannot break a mail header or
forge lines of the message.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from jinja2 import Environment, PackageLoader, StrictUndefined

from syncd.oncall.definitions import User

SHORT_LIMIT = 160
ELLIPSIS = "…"

_environment = Environment(loader=PackageLoader("syncd.notify", "templates"), autoescape=False,
                           undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class TicketLink:
    system: str      # the connector's name: servicenow, jira
    key: str         # INC0010001, OPS-12
    url: str


def one_line(value: Any, limit: int | None = None) -> str:
    """``value`` as one line of printable text, cut to ``limit`` characters with an ellipsis."""
    text = "" if value is None else str(value)
    text = "".join(" " if unicodedata.category(char)[0] in "CZ" else char for char in text)
    text = re.sub(r" +", " ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[:max(limit - 1, 0)].rstrip() + ELLIPSIS if limit > 0 else ""
    return text


def _render(name: str, context: dict[str, Any]) -> tuple[str, str]:
    module = _environment.get_template(name).make_module(context)
    subject = one_line(getattr(module, "subject", ""))
    return subject, str(module).strip() + "\n"


def render_page(*, incident: Any, user: User, ticket_links: Iterable[Sequence[str]],
                ack_url: str | None, urgency: str | None, short: bool,
                service: str | None = None) -> tuple[str, str]:
    """(subject, body) of a page; ``service`` is the one paging (the incident's own field may be
    empty when the service was matched by its fields). Short: the whole message is the body (SMS has no subject and
    apprise would prepend one), at most 160 characters: the title gives way first, then the
    ticket keys; the acknowledge link stays whole."""
    tickets = [TicketLink(*map(str, link)) for link in ticket_links]
    context = {"number": incident.number, "incident_id": incident.id,
               "title": one_line(incident.title), "priority": incident.priority,
               "service": one_line(service or incident.service), "urgency": urgency or "high",
               "user_name": one_line(user.name), "tickets": tickets, "ack_url": ack_url}
    if not short:
        return _render("page.txt", context)
    return "", _short("page_short.txt", context, tickets)


def _short(name: str, context: dict[str, Any], tickets: list[TicketLink]) -> str:
    template = _environment.get_template(name)

    def text(**changes: Any) -> str:
        return one_line(template.render({**context, **changes}))

    fixed = len(text(title=""))
    if fixed > SHORT_LIMIT and tickets:
        tickets = []
        fixed = len(text(title="", tickets=tickets))
    room = SHORT_LIMIT - fixed - 1              # the space the empty title collapsed
    return text(title=one_line(context["title"], max(room, 0)), tickets=tickets) + "\n"


def render_test(*, user: User, contact: str, channel: str, short: bool) -> tuple[str, str]:
    """(subject, body) of a test notification (`syncd page test`)."""
    context = {"user_name": one_line(user.name), "contact": contact, "channel": channel}
    if short:
        return "", one_line(_environment.get_template("test_short.txt").render(context),
                            SHORT_LIMIT) + "\n"
    return _render("test.txt", context)


def render_bundle(*, messages: Sequence[tuple[str, str]], numbers: Sequence[str],
                  short: bool) -> tuple[str, str]:
    """One message carrying several pages for one contact (the throttle bundled them). Short:
    the pages' own short texts, one per line, each with its acknowledge link (an SMS then spans
    several segments rather than losing a link)."""
    if short:
        return "", "".join(body if body.endswith("\n") else body + "\n" for _, body in messages)
    context = {"messages": [{"subject": subject, "body": body.strip()}
                            for subject, body in messages], "numbers": list(numbers)}
    return _render("bundle.txt", context)
