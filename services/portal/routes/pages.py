"""The clinic's pages (alerts paged to it) with their escalation level, and acknowledging one."""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

from litestar import Request, get, post
from litestar.response import Redirect, Template

from referral_hub.portal import forms, patient_views
from referral_hub.portal.web import PREFIX, page_context, portal_of, send_or_refuse

# --- Pages ------------------------------------------------------------------------------------


@get("/pages")
async def pages_page(request: Request[Any, Any, Any]) -> Template:
    """The clinic's pages, newest first, with acknowledge buttons and the escalation level."""
    portal = portal_of(request)
    member = await portal.current(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    return Template(
        "pages.html",
        context=page_context(
            member,
            pages=patient_views.open_pages(mirror.items, member.clinic.id, member.clinic.timezone),
        ),
    )


@post("/pages/{page_id:uuid}/ack", status_code=303)
async def ack_page(request: Request[Any, Any, Any], page_id: UUID) -> Redirect:
    """Acknowledge a page as this member: the escalation stops."""
    portal = portal_of(request)
    member = await portal.current(request)
    return await send_or_refuse(portal, member, forms.page_ack(member.actor, page_id), f"{PREFIX}/pages")


HANDLERS: Final = (pages_page, ack_page)
