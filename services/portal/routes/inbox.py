"""The Activity page (the inbox as an event log), marking it read, and its live updates as server-sent events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Final

from litestar import Request, get, post
from litestar.params import Parameter
from litestar.response import Redirect, ServerSentEvent, Template
from litestar.response.sse import ServerSentEventMessage

from referral_hub.client import InboxItem
from referral_hub.portal import domain
from referral_hub.portal.domain import InboxQuery
from referral_hub.portal.web import PREFIX, page_context, portal_of, see_other

SSE_KEEPALIVE_SECONDS: Final = 15.0


# --- Inbox and live updates -------------------------------------------------------------------


def _query(kind: str, state: str, page: int, unread: bool) -> InboxQuery:  # noqa: FBT001 - a query flag
    kinds = set(domain.LABELS)
    states = set(domain.STATE_WORDS)
    return InboxQuery(
        kind=kind if kind in kinds else "",
        state=state if state in states else "",
        page=max(page, 1),
        unread_only=unread,
    )


@get("/inbox")
async def inbox(
    request: Request[Any, Any, Any],
    kind: str = "",
    state_filter: Annotated[str, Parameter(query="state")] = "",
    page: int = 1,
    unread: bool = False,  # noqa: FBT001, FBT002 - a query flag
) -> Template:
    """The clinic's inbox, newest first, filtered and paged, live while open."""
    portal = portal_of(request)
    member = await portal.current(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    read = await portal.storage().read_marks(member.clinic.id, member.member)
    query = _query(kind, state_filter, page, unread)
    rows, pages = domain.inbox_rows(mirror.items, member.clinic.timezone, read, query, member.clinic.id)
    return Template(
        "inbox.html",
        context=page_context(
            member,
            rows=rows,
            names={
                referral_id: details.display_name
                for referral_id, details in portal.patients.by_referral(
                    portal.clinics, member.clinic.id, mirror.items
                ).items()
            },
            pages=pages,
            query=query,
            total=mirror.last_event_number,
            kinds=domain.LABELS,
            states=domain.STATE_WORDS,
        ),
    )


@post("/inbox/read", status_code=303)
async def mark_all_read(request: Request[Any, Any, Any]) -> Redirect:
    """Mark everything in the inbox now as read, for this member only."""
    portal = portal_of(request)
    member = await portal.current(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    await portal.storage().mark_read(member.clinic.id, member.member, frozenset(range(1, mirror.last_event_number + 1)))
    return see_other(f"{PREFIX}/inbox")


@get("/events")
async def events(
    request: Request[Any, Any, Any], kind: str = "", state_filter: Annotated[str, Parameter(query="state")] = ""
) -> ServerSentEvent:
    """New inbox rows as server-sent events, rendered as table rows for htmx to prepend."""
    portal = portal_of(request)
    member = await portal.current(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    query = _query(kind, state_filter, 1, unread=False)
    inbox_row = request.app.state.jinja.get_template("_row.html").module.inbox_row

    async def stream() -> AsyncGenerator[ServerSentEventMessage, None]:
        async with mirror.subscribe() as queue:
            yield ServerSentEventMessage(comment="live")
            while queue in mirror.subscribers or not queue.empty():
                try:
                    item: InboxItem = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_SECONDS)
                except TimeoutError:
                    if not await portal.session_alive(member):
                        return
                    yield ServerSentEventMessage(comment="keepalive")
                    continue
                if not await portal.session_alive(member):
                    return
                rows, _ = domain.inbox_rows([item], member.clinic.timezone, frozenset(), query, member.clinic.id)
                names = portal.patients.by_referral(portal.clinics, member.clinic.id, [item])
                for row in rows:
                    name = names[row.referral_id].display_name if row.referral_id in names else ""
                    html = str(inbox_row(row, name)).replace("\n", " ")
                    yield ServerSentEventMessage(data=html, event="inbox", id=row.event_number)

    return ServerSentEvent(stream(), headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


HANDLERS: Final = (inbox, mark_all_read, events)
