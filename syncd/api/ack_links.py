"""Acknowledge links from pages: ``GET /a/{token}`` shows a confirm page, ``POST /a/{token}``
acknowledges. A GET never changes anything, because mail scanners and link previews follow
links. The signed token names the incident and the person; the person is the actor, and their
email becomes the incident's assignee, so the tickets show who took it."""

from __future__ import annotations

from html import escape
from typing import Callable

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from syncd.clock import Clock
from syncd.incidents import service as incident_service
from syncd.incidents.commands import IncidentCommands
from syncd.notify import service as notify_service
from syncd.notify.links import AckLink, AckLinks, ExpiredAckLink, InvalidAckLink
from syncd.response_files import ResponseSet
from syncd.store.db import transaction

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;
color:#111;line-height:1.5}}button{{font-size:1.1rem;padding:.7rem 1.4rem;border:0;
border-radius:.4rem;background:#0b5;color:#fff}}button:focus{{outline:3px solid #036}}
.note{{color:#444}}</style></head>
<body><main><h1>{title}</h1>{body}</main></body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=escape(title), body=body), status_code=status)


def ack_link_router(*, links: AckLinks, commands: IncidentCommands, sessions,
                    responses: Callable[[], ResponseSet], clock: Clock,
                    wake: Callable[[], None]) -> APIRouter:
    router = APIRouter(tags=["acknowledge links"])

    elsewhere = "<p>Acknowledge from the console, the API or the ticket instead.</p>"

    def read(token: str) -> AckLink | HTMLResponse:
        """The link, if it still acknowledges: signed, not expired, its person still in the
        response files (a person removed from on-call cannot act), and from the escalation run
        now going (an old link must not stop a later episode's paging)."""
        try:
            link = links.read(token, now=clock.now())
        except ExpiredAckLink:
            return _page("This link has expired", elsewhere, 410)
        except InvalidAckLink:
            return _page("This link is not valid",
                         "<p>It may have been cut short by your mail program.</p>", 404)
        if link.user_id not in responses().users:
            return _page("This link is no longer valid",
                         "<p>Its person is no longer in syncd's on-call files.</p>", 403)
        with transaction(sessions, readonly=True) as session:
            stale = notify_service.stale_ack_link(session=session, link=link)
        if stale is not None:
            return _page("This link is out of date", f"<p>{escape(stale)}.</p>{elsewhere}", 410)
        return link

    def incident_line(link: AckLink) -> tuple[str, str] | None:
        with transaction(sessions, readonly=True) as session:
            try:
                incident = incident_service.get_incident(session=session,
                                                         incident_id=link.incident_id)
            except incident_service.NotFound:
                return None
            return (f"{incident.number} [{incident.priority or 'no priority'}] {incident.title}",
                    incident.status)

    @router.get("/a/{token}", response_class=HTMLResponse)
    def confirm(token: str) -> HTMLResponse:
        link = read(token)
        if isinstance(link, HTMLResponse):
            return link
        found = incident_line(link)
        if found is None:
            return _page("This incident no longer exists", "", 404)
        line, status = found
        if status != "triggered":
            return _page(f"Already {status}", f"<p>{escape(line)}</p>")
        who = escape(responses().users[link.user_id].name)
        return _page("Acknowledge this incident?",
                     f"<p>{escape(line)}</p><p class=note>You are acknowledging as {who}; "
                     f"escalation stops and the tickets are assigned to you.</p>"
                     f'<form method="post"><button type="submit">Acknowledge</button></form>')

    @router.post("/a/{token}", response_class=HTMLResponse)
    def acknowledge(token: str) -> HTMLResponse:
        link = read(token)
        if isinstance(link, HTMLResponse):
            return link
        try:
            commands.acknowledge(link.incident_id, actor=link.user_id, source="ack-link")
        except incident_service.NotFound:
            return _page("This incident no longer exists", "", 404)
        except incident_service.InvalidTransition as refused:
            return _page("Not acknowledged", f"<p>{escape(str(refused))}</p>", 409)
        wake()
        found = incident_line(link)
        return _page("Acknowledged", f"<p>{escape(found[0] if found else '')}</p>"
                                     "<p class=note>Escalation stopped. Thank you.</p>")

    return router
