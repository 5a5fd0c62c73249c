"""Login with both factors, enrolment through a one-time invite link, and logout."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any, Final
from uuid import uuid4

import msgspec
import segno
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.middleware.csrf import generate_csrf_token
from litestar.response import Redirect, Template

from referral_hub.contracts.access import AccessLogin, AccessLoginFailed
from referral_hub.contracts.base import Message
from referral_hub.portal import accounts, domain
from referral_hub.portal.accounts import LoginOutcome
from referral_hub.portal.domain import Invite, Session
from referral_hub.portal.web import CSRF_COOKIE, PREFIX, SESSION_COOKIE, form_fields, portal_of, see_other

log = structlog.get_logger(__name__)


# --- Login, enrolment, logout -----------------------------------------------------------------


@get("/login", sync_to_thread=False)
def login_page() -> Template:
    """The login form; it shows only what the portal itself says, never text from the URL."""
    return Template("login.html", context={"error": ""})


def _address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def _digest(text: str) -> str:
    """A short SHA-256 digest: equal inputs match in the log, the input itself never appears."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


BAD_LOGIN: Final = "The username, password or code is wrong."
"""One answer for every wrong login: unknown name, wrong password, wrong or reused code, member off the roster."""
TOO_MANY: Final = "Too many failed attempts from this address; wait 15 minutes and try again."


async def _audit_login(request: Request[Any, Any, Any], result: accounts.LoginResult, now: datetime) -> None:
    """Record the attempt in the audit log as the clinic the username names (an unknown clinic has no log)."""
    portal = portal_of(request)
    clinic = portal.clinics.get(result.clinic)
    if clinic is None or not result.member:
        return
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


@post("/login", status_code=303)
async def login_submit(request: Request[Any, Any, Any]) -> Response[Any]:
    """Both factors at once; every outcome is audited as the clinic the username names.

    A success starts a session with a fresh CSRF cookie of its own (the session keeps its
    digest), so a token minted before login, or in another browser, is no use to the member's session.
    """
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
        is_member=portal.is_member,
    )
    await _audit_login(request, result, now)
    if result.outcome is LoginOutcome.OK:
        log.info("portal_login", clinic=result.clinic, member=result.member, outcome=result.outcome.value)
    else:
        # Failures come from anyone, typed names included: only digests reach the log, so an
        # operator can count repeats from one address or at one name without the log holding either.
        log.warning(
            "portal_login_failed",
            cause=result.outcome.value,  # not "reason": the log drops that key as PHI (referral reason)
            source=_digest(_address(request)),
            username=_digest(form.get("username", "")),
        )
    if result.outcome is LoginOutcome.RATE_LIMITED:
        # 429 with the window to wait, so clients and proxies see a rate limit, not a wrong password.
        headers = {"Retry-After": str(int(domain.LOGIN_WINDOW.total_seconds()))}
        return Template("login.html", context={"error": TOO_MANY}, status_code=429, headers=headers)
    if result.outcome is not LoginOutcome.OK:
        return Template("login.html", context={"error": BAD_LOGIN}, status_code=401)
    token, csrf = secrets.token_urlsafe(32), generate_csrf_token(portal.csrf_secret)
    session = Session(
        clinic=result.clinic, member=result.member, created_at=now, last_seen=now, csrf=domain.csrf_digest(csrf)
    )
    await portal.storage().save_session(token, session)
    secure = portal.settings.cookies_secure
    return see_other(
        f"{PREFIX}/work",
        cookies=[
            Cookie(key=SESSION_COOKIE, value=token, path=PREFIX, httponly=True, secure=secure, samesite="lax"),
            Cookie(key=CSRF_COOKIE, value=csrf, path=PREFIX, httponly=True, secure=secure, samesite="lax"),
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


def _invite_context(invite: Invite, token: str, error: str) -> dict[str, object]:
    """The enrolment page: the key as a QR code to scan, and as text to type."""
    uri = accounts.provisioning_uri(invite)
    return {"invite": invite, "uri": uri, "qr": qr_svg(uri), "token": token, "error": error}


@get("/invite/{token:str}")
async def invite_page(request: Request[Any, Any, Any], token: str) -> Template:
    """Set a password and enrol TOTP through a one-time link."""
    invite = await accounts.open_invite(portal_of(request).storage(), token, domain.utc_now())
    if invite is None:
        return Template("invite_gone.html", status_code=410)
    return Template("invite.html", context=_invite_context(invite, token, ""))


@post("/invite/{token:str}")
async def invite_submit(request: Request[Any, Any, Any], token: str) -> Template:
    """Check the password and the first code, spend the link, and say that it worked."""
    portal = portal_of(request)
    store = portal.storage()
    form = await form_fields(request)
    now = domain.utc_now()
    invite = await accounts.open_invite(store, token, now)
    if invite is None:
        return Template("invite_gone.html", status_code=410)
    problem = domain.password_problem(form.get("password", ""), form.get("confirm", ""))
    if not problem and not portal.is_member(invite.clinic, invite.member):
        problem = "Your clinic no longer lists you as a member. Ask your clinic lead."
    problem = problem or await accounts.enrol(store, token, form.get("password", ""), form.get("code", ""), now)
    if problem:
        return Template("invite.html", context=_invite_context(invite, token, problem), status_code=400)
    clinic = portal.clinics.get(invite.clinic)
    context = {"username": f"{invite.member}@{invite.clinic}", "clinic_name": clinic.name if clinic else invite.clinic}
    return Template("enrolled.html", context=context, status_code=201)


def qr_svg(uri: str) -> str:
    """The ``otpauth://`` URI as an inline SVG QR code (segno: pure Python, no image library)."""
    return str(segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff", title="Authenticator key"))


HANDLERS: Final = (login_page, login_submit, logout, invite_page, invite_submit)
