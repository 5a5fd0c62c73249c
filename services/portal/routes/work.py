"""The start page: "Needs you now", one row per thing waiting for this clinic, with its next action."""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, get
from litestar.response import Redirect, Template

from referral_hub.portal import domain, worklist
from referral_hub.portal.web import PREFIX, page_context, portal_of, see_other


@get("/work")
async def work(request: Request[Any, Any, Any]) -> Template:
    """What waits for this clinic now, most pressing first; the event log is the Activity page."""
    portal = portal_of(request)
    member = await portal.current(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    rows = worklist.work_rows(mirror.items, member.clinic.id, domain.utc_now())
    return Template("work.html", context=page_context(member, rows=rows))


@get("/", sync_to_thread=False)
def home() -> Redirect:
    """The work list is the start page."""
    return see_other(f"{PREFIX}/work")


HANDLERS: Final = (home, work)
