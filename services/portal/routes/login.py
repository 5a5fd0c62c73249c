"""Login with both factors, enrolment through a one-time invite link, and logout."""

from __future__ import annotations

import secrets
from typing import Any, Final
from uuid import uuid4

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect, Template

from referral_hub.contracts.access import AccessLogin, AccessLoginFailed
from referral_hub.contracts.base import Message
from referral_hub.portal import accounts, domain
from referral_hub.portal.accounts import LoginOutcome
from referral_hub.portal.domain import Session
from referral_hub.portal.web import PREFIX, SESSION_COOKIE, form_fields, portal_of, see_other

log = structlog.get_logger(__name__)


# --- Login, enrolment, logout -----------------------------------------------------------------


@get("/login", sync_to_thread=False)
def login_page(error: str = "") -> Template:
    """The login form."""
    return Template("login.html", context={"error": error[:200]})


def _address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


@post("/login", status_code=303)
async def login_submit(request: Request[Any, Any, Any]) -> Response[Any]:
    """Both factors at once; every outcome is audited as the clinic the username names."""
    portal = portal_of(request)
    form = await form_fields(request)
    now = domain.utc_now()
    result = await accounts.login(
        portal.storage(),
        form.get("username", ""),
        form.get("password", ""),
        form.get("code", ""),
        address=_address(request),
        now=now,
    )
    clinic = portal.clinics.get(result.clinic)
    if clinic is not None and result.member:
        record: Message = msgspec.convert(
            {
                "type": "access.login" if result.outcome is LoginOutcome.OK else "access.login_failed",
                "message_id": uuid4(),
                "occurred_at": now,
                "sender_clinic": clinic.id,
                "actor": result.member,
                "correlation_id": uuid4(),
                "address": _address(request)[:200],
                **({} if result.outcome is LoginOutcome.OK else {"reason": result.outcome.value}),
            },
            AccessLogin | AccessLoginFailed,
        )
        await portal.connections.send(clinic.id, record)
    log.info("portal_login", clinic=result.clinic, member=result.member, outcome=result.outcome.value)
    if result.outcome is not LoginOutcome.OK:
        message = {
            LoginOutcome.BAD_CREDENTIALS: "The username, password or code is wrong.",
            LoginOutcome.LOCKED: "This account is locked for 15 minutes after too many wrong attempts.",
            LoginOutcome.RATE_LIMITED: "Too many attempts from this address; wait 15 minutes.",
        }[result.outcome]
        if result.outcome is LoginOutcome.RATE_LIMITED:
            # 429 with the window to wait, so clients and proxies see a rate limit, not a wrong password.
            headers = {"Retry-After": str(int(domain.LOCKOUT.total_seconds()))}
            return Template("login.html", context={"error": message}, status_code=429, headers=headers)
        return Template("login.html", context={"error": message}, status_code=401)
    token = secrets.token_urlsafe(32)
    await portal.storage().save_session(
        token, Session(clinic=result.clinic, member=result.member, created_at=now, last_seen=now)
    )
    return see_other(
        f"{PREFIX}/inbox",
        cookies=[
            Cookie(
                key=SESSION_COOKIE,
                value=token,
                path=PREFIX,
                httponly=True,
                secure=portal.settings.cookies_secure,
                samesite="lax",
            )
        ],
    )


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    """End the session here and in the bucket."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        await portal_of(request).storage().end_session(token)
    response = see_other(f"{PREFIX}/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@get("/invite/{token:str}")
async def invite_page(request: Request[Any, Any, Any], token: str) -> Template:
    """Set a password and enrol TOTP through a one-time link."""
    invite = await accounts.open_invite(portal_of(request).storage(), token, domain.utc_now())
    if invite is None:
        return Template("invite_gone.html", status_code=410)
    return Template(
        "invite.html",
        context={"invite": invite, "uri": accounts.provisioning_uri(invite), "token": token, "error": ""},
    )


@post("/invite/{token:str}", status_code=303)
async def invite_submit(request: Request[Any, Any, Any], token: str) -> Response[Any]:
    """Check the password and the first code, then spend the link."""
    store = portal_of(request).storage()
    form = await form_fields(request)
    now = domain.utc_now()
    invite = await accounts.open_invite(store, token, now)
    if invite is None:
        return Template("invite_gone.html", status_code=410)
    problem = domain.password_problem(form.get("password", ""), form.get("confirm", ""))
    problem = problem or await accounts.enrol(store, token, form.get("password", ""), form.get("code", ""), now)
    if problem:
        context = {"invite": invite, "uri": accounts.provisioning_uri(invite), "token": token, "error": problem}
        return Template("invite.html", context=context, status_code=400)
    return see_other(f"{PREFIX}/login?error=")


HANDLERS: Final = (login_page, login_submit, logout, invite_page, invite_submit)
