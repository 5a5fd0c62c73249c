"""The clinic portal's wiring: a Litestar app under ``/portal``, its lifespan, and thin handlers.

Handlers read the session, call the pure rules (``domain``, ``forms``) and the adapters,
and render. Every clinic action is a contract message sent with the member's own clinic's
credentials; every view of patient data is recorded in the hub's audit log before the page
is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final
from uuid import UUID, uuid4

import jinja2
import msgspec
import nats.errors
import prometheus_client
import structlog
import uvicorn
from litestar import Litestar, Request, Response, Router, get, post
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.datastructures import Cookie, ResponseHeader, UploadFile
from litestar.exceptions import HTTPException, NotFoundException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.params import Parameter
from litestar.response import Redirect, ServerSentEvent, Template
from litestar.response.sse import ServerSentEventMessage
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from referral_hub.client import InboxItem
from referral_hub.contracts.access import AccessLogin, AccessLoginFailed, AccessViewed
from referral_hub.contracts.base import Message
from referral_hub.contracts.plans import PlanUpdated
from referral_hub.contracts.registry import Clinic, Registry
from referral_hub.contracts.rejections import Rejection
from referral_hub.documents import domain as documents
from referral_hub.errors import HubError
from referral_hub.portal import accounts, domain, forms, receipts
from referral_hub.portal.accounts import LoginOutcome
from referral_hub.portal.adapters import ClinicConnections, PortalStore
from referral_hub.portal.domain import InboxQuery, Session
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from referral_hub.screening.rules import load_rules

log = structlog.get_logger(__name__)
HERE: Final = Path(__file__).parent
PREFIX: Final = "/portal"
SESSION_COOKIE: Final = "portal_session"
CSRF_COOKIE: Final = "portal_csrf"
SECRET_ENV: Final = "HUB_PORTAL_SECRET"  # noqa: S105 - the name of a variable, not a secret
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SSE_KEEPALIVE_SECONDS: Final = 15.0
UPLOAD_BODY_BYTES: Final = documents.MAX_BYTES + 5 * 1024 * 1024
"""A form with files: one document at the 20 MiB limit and the form around it; several files share it."""
DOWNLOAD_CSP: Final = "sandbox; default-src 'none'"
"""A downloaded document is never a page of the portal: no script, no origin, nothing loaded."""


class LoginRequiredError(HubError):
    """No valid session: the member is sent to the login page."""


@dataclass(frozen=True)
class PortalSettings:
    """Where the portal listens and reaches NATS."""

    nats_url: str
    host: str = "127.0.0.1"
    port: int = 8480
    secure_cookies: bool | None = None
    """``None``: Secure everywhere but on a loopback address (local development)."""
    registry_file: Path | None = None

    @property
    def cookies_secure(self) -> bool:
        """Whether cookies carry ``Secure``."""
        if self.secure_cookies is not None:
            return self.secure_cookies
        with contextlib.suppress(ValueError):
            return not ipaddress.ip_address(self.host).is_loopback
        return self.host != "localhost"


@dataclass(frozen=True)
class Member:
    """The logged-in member, as the session says."""

    clinic: Clinic
    member: str
    token: str

    @property
    def actor(self) -> forms.Actor:
        """The member as a command's sender."""
        return forms.Actor(self.clinic.id, self.member, self.clinic.timezone)


class Portal:
    """Per-process state the handlers share: the store, the clinic connections, the registry."""

    def __init__(self, settings: PortalSettings, registry: Registry) -> None:
        """Nothing opens until the lifespan starts."""
        self.settings = settings
        self.clinics = {clinic.id: clinic for clinic in registry.clinics}
        self.store: PortalStore | None = None
        self.connections = ClinicConnections(settings.nats_url)
        self.verifier_key = receipts.portal_verifier_key()

    def storage(self) -> PortalStore:
        """The open store."""
        if self.store is None:
            msg = "the portal store is not open"
            raise HubError(msg)
        return self.store

    async def current(self, request: ASGIConnection[Any, Any, Any, Any]) -> Member:
        """The session's member, refreshing its idle timer; raises when there is none."""
        token = request.cookies.get(SESSION_COOKIE, "")
        found = await self.storage().session(token) if token else None
        now = domain.utc_now()
        if found is None or domain.session_expired(found[0], now) or found[0].clinic not in self.clinics:
            raise LoginRequiredError
        session = found[0]
        if domain.session_needs_touch(session, now):
            await self.storage().save_session(
                token,
                Session(clinic=session.clinic, member=session.member, created_at=session.created_at, last_seen=now),
            )
        return Member(self.clinics[session.clinic], session.member, token)

    async def session_alive(self, member: Member) -> bool:
        """Whether the member's session still stands, without refreshing its idle timer.

        An open live page is not activity: a session that idles out, or is logged out on
        another tab, ends the page's stream rather than feeding it patient data.
        """
        found = await self.storage().session(member.token)
        return found is not None and not domain.session_expired(found[0], domain.utc_now())

    async def record(self, member: Member, message: Message) -> None:
        """Send an access record as the member's clinic; the page is shown only once it is stored."""
        await self.connections.send(member.clinic.id, message)

    async def viewed(self, member: Member, page: str, *, referral_id: str = "", patient_ref: str | None = None) -> None:
        """Record that ``member`` viewed patient data."""
        await self.record(
            member,
            AccessViewed(
                message_id=uuid4(),
                occurred_at=domain.utc_now(),
                sender_clinic=member.clinic.id,
                actor=member.member,
                correlation_id=uuid4(),
                page=page,
                referral_id=referral_id,
                patient_ref=patient_ref,
            ),
        )


def see_other(path: str, **options: Any) -> Redirect:  # noqa: ANN401 - Redirect's own keyword options
    """A 303: after a form post the browser GETs the next page, and a reload never re-posts."""
    return Redirect(path, status_code=303, **options)


def _portal(request: ASGIConnection[Any, Any, Any, Any]) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def _context(member: Member, **values: object) -> dict[str, object]:
    return {"member": member, "clinic": member.clinic, **values}


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    data = await request.form()
    return {key: value for key, value in data.items() if isinstance(value, str)}


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
    portal = _portal(request)
    form = await _form(request)
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
        await _portal(request).storage().end_session(token)
    response = see_other(f"{PREFIX}/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@get("/invite/{token:str}")
async def invite_page(request: Request[Any, Any, Any], token: str) -> Template:
    """Set a password and enrol TOTP through a one-time link."""
    invite = await accounts.open_invite(_portal(request).storage(), token, domain.utc_now())
    if invite is None:
        return Template("invite_gone.html", status_code=410)
    return Template(
        "invite.html",
        context={"invite": invite, "uri": accounts.provisioning_uri(invite), "token": token, "error": ""},
    )


@post("/invite/{token:str}", status_code=303)
async def invite_submit(request: Request[Any, Any, Any], token: str) -> Response[Any]:
    """Check the password and the first code, then spend the link."""
    store = _portal(request).storage()
    form = await _form(request)
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
    portal = _portal(request)
    member = await portal.current(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    read = await portal.storage().read_marks(member.clinic.id, member.member)
    query = _query(kind, state_filter, page, unread)
    rows, pages = domain.inbox_rows(mirror.items, member.clinic.timezone, read, query)
    return Template(
        "inbox.html",
        context=_context(
            member,
            rows=rows,
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
    portal = _portal(request)
    member = await portal.current(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    await portal.storage().mark_read(member.clinic.id, member.member, frozenset(range(1, mirror.last_event_number + 1)))
    return see_other(f"{PREFIX}/inbox")


@get("/events")
async def events(
    request: Request[Any, Any, Any], kind: str = "", state_filter: Annotated[str, Parameter(query="state")] = ""
) -> ServerSentEvent:
    """New inbox rows as server-sent events, rendered as table rows for htmx to prepend."""
    portal = _portal(request)
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
                rows, _ = domain.inbox_rows([item], member.clinic.timezone, frozenset(), query)
                for row in rows:
                    html = str(inbox_row(row)).replace("\n", " ")
                    yield ServerSentEventMessage(data=html, event="inbox", id=row.event_number)

    return ServerSentEvent(stream(), headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# --- Referrals --------------------------------------------------------------------------------


def _offers(portal: Portal) -> dict[str, tuple[str, ...]]:
    return {clinic.id: tuple(m.value for m in clinic.modalities) for clinic in portal.clinics.values()}


@get("/referrals/new")
async def new_referral_page(request: Request[Any, Any, Any]) -> Template:
    """The new-referral form."""
    portal = _portal(request)
    member = await portal.current(request)
    return Template(
        "new_referral.html", context=_context(member, **_new_form_context(portal, member, forms.FormResult()))
    )


def _new_form_context(portal: Portal, member: Member, result: forms.FormResult) -> dict[str, object]:
    choices = [
        (f"{clinic.id}|{modality}", f"{clinic.name} — {modality.replace('_', ' ')}")
        for clinic in portal.clinics.values()
        if clinic.id != member.clinic.id
        for modality in (m.value for m in clinic.modalities)
    ]
    return {"choices": choices, "errors": result.errors, "values": result.values}


async def _files(request: Request[Any, Any, Any]) -> list[forms.Attachment]:
    """The form's ``attachments`` file parts (a multipart form; none in a plain one)."""
    data = await request.form()
    return [
        forms.Attachment(part.filename or "", part.content_type or "", await part.read())
        for part in data.getall("attachments", [])
        if isinstance(part, UploadFile)
    ]


def _attachment_status(parts: list[forms.Attachment]) -> int:
    """413 when a file is over the limit, else 400: the form's error says which and why."""
    return 413 if any(len(part.data) > documents.MAX_BYTES for part in parts) else 400


async def _store_documents(
    portal: Portal, member: Member, referral_id: UUID, patient_ref: str, files: list[forms.Attachment]
) -> list[str]:
    """Store each file under the referral and audit its upload; the names of those not stored.

    A file the store refuses or cannot take is named back to the member, never dropped
    silently; the others are stored and listed.
    """
    failed = []
    for file in files:
        now = domain.utc_now()
        try:
            meta = documents.describe(
                data=file.data,
                referral_id=referral_id,
                patient_ref=patient_ref,
                title=file.filename,
                content_type=file.content_type,
                author=member.clinic.id,
                created=now,
            )
            await portal.storage().documents.put(meta, file.data)
        except (documents.DocumentError, nats.errors.Error) as exc:
            log.warning("portal_document_not_stored", clinic=member.clinic.id, error=str(exc))
            failed.append(file.filename or "a file")
            continue
        record = documents.access_record(meta, clinic=member.clinic.id, actor=member.member, now=now, what="uploaded")
        await portal.record(member, record)
        log.info("portal_document_stored", clinic=member.clinic.id, document=meta.id, size=meta.size)
    return failed


def _not_stored_words(failed: list[str]) -> str:
    return f"These files were not stored: {', '.join(failed)}. Nothing else changed; attach them again."


@post("/referrals/new", status_code=303, request_max_body_size=UPLOAD_BODY_BYTES)
async def new_referral_submit(request: Request[Any, Any, Any]) -> Response[Any]:
    """Validate, send as the clinic, and show the hub's answer (a hold with its rules, or a refusal).

    Attachments are checked with the form and stored once the hub has accepted the
    referral, so they belong to a referral that exists; any not stored are named on the
    referral page.
    """
    portal = _portal(request)
    member = await portal.current(request)
    result = forms.new_referral(await _form(request), member.actor, _offers(portal))
    parts = await _files(request)
    files, problem = forms.attachments(parts, documents.MAX_BYTES)
    if problem:
        result.errors["attachments"] = problem
    if result.message is None or problem:
        context = _context(member, **_new_form_context(portal, member, result))
        return Template("new_referral.html", context=context, status_code=_attachment_status(parts))
    answer = await portal.connections.send_and_confirm(member.clinic.id, result.message)
    if isinstance(answer.message, Rejection):
        result.errors["form"] = domain.rejection_words(answer.message)
        context = _context(member, **_new_form_context(portal, member, result))
        return Template("new_referral.html", context=context, status_code=400)
    referral_id = UUID(str(getattr(result.message, "referral_id", "")))
    failed = await _store_documents(portal, member, referral_id, str(getattr(result.message, "patient_ref", "")), files)
    if failed:
        return see_other(f"{PREFIX}/referrals/{referral_id}", query_params={"not_stored": _not_stored_words(failed)})
    return see_other(f"{PREFIX}/referrals/{referral_id}")


async def _referral_view(portal: Portal, member: Member, referral_id: UUID) -> domain.ReferralView:
    mirror = await portal.connections.mirror(member.clinic.id)
    view = domain.referral_view(mirror.items, referral_id, member.clinic.id, member.clinic.timezone)
    if view is None:
        raise NotFoundException
    return view


async def _referral_context(
    portal: Portal, member: Member, view: domain.ReferralView, **values: object
) -> dict[str, object]:
    """What ``referral.html`` shows: the view, its documents, and any refusal or form errors."""
    found = await portal.storage().documents.for_referral(UUID(view.referral_id))
    defaults: dict[str, object] = {"refused": "", "errors": {}, "document_error": ""}
    return _context(
        member, view=view, documents=domain.document_rows(found, member.clinic.timezone), **{**defaults, **values}
    )


@get("/referrals/{referral_id:uuid}")
async def referral_page(
    request: Request[Any, Any, Any], referral_id: UUID, refused: str = "", not_stored: str = ""
) -> Template:
    """A referral: state with its BSeR code, the timeline, its documents, the steps this clinic may take now."""
    portal = _portal(request)
    member = await portal.current(request)
    view = await _referral_view(portal, member, referral_id)
    await portal.viewed(member, "referral", referral_id=view.referral_id, patient_ref=view.patient_ref)
    await portal.storage().mark_read(member.clinic.id, member.member, view.event_numbers)
    context = await _referral_context(portal, member, view, refused=refused[:2000], document_error=not_stored[:2000])
    return Template("referral.html", context=context)


@post("/referrals/{referral_id:uuid}/documents", status_code=303, request_max_body_size=UPLOAD_BODY_BYTES)
async def upload_documents(request: Request[Any, Any, Any], referral_id: UUID) -> Response[Any]:
    """Attach files to a referral this clinic is a party to (404 for any other, like every cross-clinic URL)."""
    portal = _portal(request)
    member = await portal.current(request)
    view = await _referral_view(portal, member, referral_id)
    parts = await _files(request)
    files, problem = forms.attachments(parts, documents.MAX_BYTES)
    if not files and not problem:
        problem = "Choose a file to attach."
    if problem:
        context = await _referral_context(portal, member, view, document_error=problem)
        return Template("referral.html", context=context, status_code=_attachment_status(parts))
    failed = await _store_documents(portal, member, referral_id, view.patient_ref, files)
    if failed:
        context = await _referral_context(portal, member, view, document_error=_not_stored_words(failed))
        return Template("referral.html", context=context, status_code=503)
    return see_other(f"{PREFIX}/referrals/{referral_id}")


@get("/referrals/{referral_id:uuid}/documents/{document_id:uuid}")
async def download_document(request: Request[Any, Any, Any], referral_id: UUID, document_id: UUID) -> Response[Any]:
    """A document of a referral this clinic is a party to, as a download that can never run on this origin.

    ``Content-Disposition: attachment``, ``nosniff``, a sandboxing CSP, and a script-capable
    type (HTML, SVG) sent as ``application/octet-stream``. The read is audited before the
    bytes go out, with the document's SHA-256, as the gateway does.
    """
    portal = _portal(request)
    member = await portal.current(request)
    await _referral_view(portal, member, referral_id)
    store = portal.storage().documents
    try:
        meta = await store.meta(str(document_id))
        if meta.referral_id != referral_id:
            raise NotFoundException
        data = await store.read(meta)
    except documents.DocumentNotFoundError as exc:
        raise NotFoundException from exc
    except documents.DocumentCorruptError as exc:
        log.error("portal_document_corrupt", document=str(document_id))  # noqa: TRY400 - the reason is the log line
        raise HTTPException(status_code=500, detail="The stored document does not match its hash.") from exc
    now = domain.utc_now()
    await portal.record(
        member, documents.access_record(meta, clinic=member.clinic.id, actor=member.member, now=now, what="read")
    )
    return Response(
        content=data,
        media_type=domain.download_type(meta.content_type),
        headers={
            "Content-Disposition": f'attachment; filename="{domain.download_name(meta.title)}"',
            "Content-Security-Policy": DOWNLOAD_CSP,
            "X-Content-Type-Options": "nosniff",
        },
    )


@post("/referrals/{referral_id:uuid}/{step:str}", status_code=303)
async def referral_step(request: Request[Any, Any, Any], referral_id: UUID, step: str) -> Response[Any]:
    """One lifecycle step, sent as the clinic; a refusal comes back in plain words."""
    portal = _portal(request)
    member = await portal.current(request)
    view = await _referral_view(portal, member, referral_id)
    result = forms.transition(step, await _form(request), member.actor, referral_id, view.patient_ref)
    if result.message is None:
        context = await _referral_context(portal, member, view, errors=result.errors, step=step)
        return Template("referral.html", context=context, status_code=400)
    answer = await portal.connections.send_and_confirm(member.clinic.id, result.message)
    if isinstance(answer.message, Rejection):
        view = await _referral_view(portal, member, referral_id)
        context = await _referral_context(portal, member, view, refused=domain.rejection_words(answer.message))
        return Template("referral.html", context=context, status_code=409)
    return see_other(f"{PREFIX}/referrals/{referral_id}")


# --- Patients and pages -----------------------------------------------------------------------


async def _patient(portal: Portal, member: Member, patient_ref: str) -> domain.PatientView:
    """The patient as this clinic's inbox tells it; 404 when it never mentioned the patient."""
    mirror = await portal.connections.mirror(member.clinic.id)
    view = domain.patient_view(mirror.items, patient_ref, member.clinic.timezone, member.clinic.id)
    if view is None:
        raise NotFoundException
    return view


def _patient_context(member: Member, view: domain.PatientView, **values: object) -> dict[str, object]:
    defaults: dict[str, object] = {
        "errors": {},
        "values": {},
        "plan_errors": {},
        "plan_values": {"plan_version": "1", "effective_date": domain.utc_now().date().isoformat()},
        "refused": "",
        "sent": "",
    }
    return _context(member, view=view, **{**defaults, **values})


@get("/patients/{patient_ref:str}")
async def patient_page(
    request: Request[Any, Any, Any], patient_ref: str, refused: str = "", plan_sent: int = 0
) -> Template:
    """What this clinic knows of a patient: care team, plans by version, screening, referrals, alerts."""
    portal = _portal(request)
    member = await portal.current(request)
    view = await _patient(portal, member, patient_ref)
    await portal.viewed(member, "patient", patient_ref=view.patient_ref)
    extra: dict[str, object] = {"refused": refused[:2000]}
    if plan_sent > 0:
        extra["sent"] = f"Version {plan_sent} of this clinic's plan is stored by the hub and went to the care team."
        today = domain.utc_now().date().isoformat()
        extra["plan_values"] = {"plan_version": str(plan_sent + 1), "effective_date": today}
    return Template("patient.html", context=_patient_context(member, view, **extra))


async def _known_patient(portal: Portal, member: Member, patient_ref: str) -> None:
    await _patient(portal, member, patient_ref)


PLAN_ANSWER_WAIT: Final = 10.0
"""How long the plan form waits for the hub's answer: its ``plan.updated`` (stored) or a refusal."""
PLAN_UNANSWERED: Final = "The hub did not answer; nothing is known to have changed — retry."


@post("/patients/{patient_ref:str}/plan", status_code=303)
async def plan_update(request: Request[Any, Any, Any], patient_ref: str) -> Response[Any]:
    """Publish a new version of this clinic's plan; "sent" only once the hub confirms it stored it.

    The hub answers the author with the plan's ``plan.updated`` or a refusal (a stale version
    names the current one). No answer in time is said as such, never taken for success.
    """
    portal = _portal(request)
    member = await portal.current(request)
    view = await _patient(portal, member, patient_ref)
    if not view.on_team:
        raise NotFoundException
    form = await _form(request)
    result = forms.plan_update(form, member.actor, view.patient_ref, view.own_modality)
    if result.message is None:
        context = _patient_context(member, view, plan_errors=result.errors, plan_values=result.values)
        return Template("patient.html", context=context, status_code=400)
    answer = await portal.connections.send_and_wait(member.clinic.id, result.message, PLAN_ANSWER_WAIT)
    if answer is not None and isinstance(answer.message, PlanUpdated):
        version = answer.message.plan_version
        return see_other(f"{PREFIX}/patients/{patient_ref}", query_params={"plan_sent": str(version)})
    values = dict(result.values)
    words, status = PLAN_UNANSWERED, 503
    if answer is not None and isinstance(answer.message, Rejection):
        if answer.message.current_version:
            values["plan_version"] = str(answer.message.current_version + 1)
        words, status = domain.rejection_words(answer.message), 409
    view = await _patient(portal, member, patient_ref)
    context = _patient_context(member, view, plan_errors={"form": words}, plan_values=values)
    return Template("patient.html", context=context, status_code=status)


@post("/patients/{patient_ref:str}/flags/{flag_id:uuid}/dispute", status_code=303)
async def dispute_match(request: Request[Any, Any, Any], patient_ref: str, flag_id: UUID) -> Response[Any]:
    """Dispute one match of a screening flag this clinic received; the hub tells every clinic that got the flag."""
    portal = _portal(request)
    member = await portal.current(request)
    form = await _form(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    flag = domain.screening_match(mirror.items, patient_ref, flag_id, form.get("rule_id", ""))
    if flag is None:
        raise NotFoundException
    back = (
        f"{PREFIX}/referrals/{flag.referral_id}"
        if form.get("back") == "referral" and flag.referral_id is not None
        else f"{PREFIX}/patients/{patient_ref}"
    )
    result = forms.dispute(form, member.actor, patient_ref, flag_id)
    if result.message is None:
        why = "Say why the match does not apply: " + "; ".join(result.errors.values())
        return see_other(back, query_params={"refused": why})
    return await _send_or_refuse(portal, member, result.message, back)


@get("/receipts/{message_id:uuid}")
async def audit_receipt(request: Request[Any, Any, Any], message_id: UUID) -> Response[Any]:
    """The audit receipt of one message in this clinic's inbox, as a JSON download.

    The same receipt ``hubctl audit prove`` writes, for the entry recording the message's
    delivery to this clinic; ``hubctl audit check-proof`` checks it offline. Another
    clinic's message is not in this inbox, so it answers 404 like an unknown id.
    """
    portal = _portal(request)
    member = await portal.current(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    item = domain.inbox_message(mirror.items, message_id)
    if item is None:
        raise NotFoundException
    pinned = portal.verifier_key
    if pinned is None:
        words = "The portal has no pinned audit verifier key, so it cannot vouch for a receipt; ask the operator."
        return Template("receipt_unavailable.html", context=_context(member, reason=words), status_code=503)
    try:
        receipt = await receipts.receipt_for(portal.settings.nats_url, member.clinic.id, message_id, pinned)
    except receipts.ReceiptUnavailableError as exc:
        return Template("receipt_unavailable.html", context=_context(member, reason=str(exc)), status_code=409)
    message = item.message
    await portal.viewed(
        member,
        "receipt",
        referral_id=str(getattr(message, "referral_id", "") or ""),
        patient_ref=getattr(message, "patient_ref", None),
    )
    body = msgspec.json.format(msgspec.json.encode(receipt), indent=2) + b"\n"
    name = f"receipt-{member.clinic.id}-{item.event_number}.json"
    return Response(
        content=body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _send_or_refuse(portal: Portal, member: Member, message: Message, back: str) -> Redirect:
    answer = await portal.connections.send_and_confirm(member.clinic.id, message)
    if isinstance(answer.message, Rejection):
        return see_other(back, query_params={"refused": domain.rejection_words(answer.message)[:500]})
    return see_other(back)


@post("/patients/{patient_ref:str}/alerts", status_code=303)
async def raise_alert(request: Request[Any, Any, Any], patient_ref: str) -> Response[Any]:
    """Raise a contraindication alert to the patient's care team."""
    portal = _portal(request)
    member = await portal.current(request)
    view = await _patient(portal, member, patient_ref)
    result = forms.alert_raise(await _form(request), member.actor, patient_ref)
    if result.message is None:
        context = _patient_context(member, view, errors=result.errors, values=result.values)
        return Template("patient.html", context=context, status_code=400)
    return await _send_or_refuse(portal, member, result.message, f"{PREFIX}/patients/{patient_ref}")


@post("/patients/{patient_ref:str}/alerts/{alert_id:uuid}/{action:str}", status_code=303)
async def alert_action(request: Request[Any, Any, Any], patient_ref: str, alert_id: UUID, action: str) -> Redirect:
    """Acknowledge or resolve an alert."""
    portal = _portal(request)
    member = await portal.current(request)
    await _known_patient(portal, member, patient_ref)
    if action == "ack":
        message = forms.alert_ack(member.actor, patient_ref, alert_id)
    elif action == "resolve":
        result = forms.alert_resolve(await _form(request), member.actor, patient_ref, alert_id)
        if result.message is None:
            raise HTTPException(status_code=400, detail="; ".join(result.errors.values()))
        message = result.message
    else:
        raise NotFoundException
    return await _send_or_refuse(portal, member, message, f"{PREFIX}/patients/{patient_ref}")


@get("/pages")
async def pages_page(request: Request[Any, Any, Any], refused: str = "") -> Template:
    """The clinic's pages, newest first, with acknowledge buttons and the escalation level."""
    portal = _portal(request)
    member = await portal.current(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    return Template(
        "pages.html",
        context=_context(
            member,
            pages=domain.open_pages(mirror.items, member.clinic.id, member.clinic.timezone),
            refused=refused[:2000],
        ),
    )


@post("/pages/{page_id:uuid}/ack", status_code=303)
async def ack_page(request: Request[Any, Any, Any], page_id: UUID) -> Redirect:
    """Acknowledge a page as this member: the escalation stops."""
    portal = _portal(request)
    member = await portal.current(request)
    return await _send_or_refuse(portal, member, forms.page_ack(member.actor, page_id), f"{PREFIX}/pages")


@get("/", sync_to_thread=False)
def home() -> Redirect:
    """The inbox is the start page."""
    return see_other(f"{PREFIX}/inbox")


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    """Readiness at the root, where ``hubctl up`` probes every service."""
    return {"status": "ok"}


@get("/metrics", sync_to_thread=False, media_type="text/plain; version=0.0.4")
def metrics() -> bytes:
    """Prometheus metrics of this process."""
    return prometheus_client.generate_latest()


# --- Wiring -----------------------------------------------------------------------------------


def _login_redirect(request: Request[Any, Any, Any], _exc: Exception) -> Response[Any]:
    if request.url.path.endswith("/events"):
        return Response(content="", status_code=401)
    return see_other(f"{PREFIX}/login")


def _too_large(_request: Request[Any, Any, Any], _exc: Exception) -> Response[Any]:
    """A form whose files together pass the body limit: said in words, before anything is stored."""
    limit = UPLOAD_BODY_BYTES // (1024 * 1024)
    words = f"The files are too large: at most {documents.MAX_BYTES // (1024 * 1024)} MiB each, {limit} MiB per form."
    return Template("too_large.html", context={"reason": words}, status_code=413)


def _not_found(_request: Request[Any, Any, Any], _exc: Exception) -> Response[Any]:
    """The same plain 404 for a wrong id and for another clinic's id."""
    return Template("not_found.html", status_code=404)


def create_app(settings: PortalSettings) -> Litestar:
    """The portal app; its lifespan opens the portal's store and closes every clinic connection."""
    registry = load_registry_file(settings.registry_file)
    portal = Portal(settings, registry)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        # Templates ship with the code: compiled once, never stat-ed again on a render.
        auto_reload=False,
    )
    environment.globals["prefix"] = PREFIX
    pack = load_rules()
    rules = {rule.id: rule for rule in pack.rules}

    def rule_source(rule_id: str) -> str:
        """The public source a rule cites, from the rule pack (matches sent to outsiders carry only the id)."""
        rule = rules.get(rule_id)
        return f"{rule.source}: {pack.sources.get(rule.source, '')}" if rule else ""

    environment.globals["rule_source"] = rule_source

    @contextlib.asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        portal.store = await PortalStore.open(settings.nats_url)
        try:
            yield
        finally:
            await portal.connections.close()
            await portal.store.close()

    # Replicas behind one address must share the secret (HUB_PORTAL_SECRET); one process may make its own.
    csrf_secret = os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32)
    app = Litestar(
        route_handlers=[
            _router(),
            health,
            metrics,
            create_static_files_router(path=f"{PREFIX}/static", directories=[HERE / "static"]),
        ],
        lifespan=[lifespan],
        template_config=TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment)),
        csrf_config=CSRFConfig(
            secret=csrf_secret,
            cookie_name=CSRF_COOKIE,
            cookie_path=PREFIX,
            cookie_secure=settings.cookies_secure,
            cookie_httponly=True,
            cookie_samesite="lax",
        ),
        response_headers=[
            ResponseHeader(name="Content-Security-Policy", value=CSP),
            ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
            ResponseHeader(name="Referrer-Policy", value="no-referrer"),
            ResponseHeader(name="Cache-Control", value="no-store"),
        ],
        exception_handlers={
            LoginRequiredError: _login_redirect,
            NotFoundException: _not_found,
            RequestEntityTooLarge: _too_large,
        },
        state=None,
    )
    app.state.portal = portal
    app.state.jinja = environment
    return app


def _router() -> Router:
    return Router(
        path=PREFIX,
        route_handlers=[
            home,
            healthz,
            login_page,
            login_submit,
            logout,
            invite_page,
            invite_submit,
            inbox,
            mark_all_read,
            events,
            new_referral_page,
            new_referral_submit,
            referral_page,
            upload_documents,
            download_document,
            referral_step,
            patient_page,
            raise_alert,
            alert_action,
            plan_update,
            dispute_match,
            audit_receipt,
            pages_page,
            ack_page,
        ],
    )


def run(settings: PortalSettings) -> None:
    """Serve the portal with uvicorn until interrupted."""
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
    )


__all__ = ["PortalSettings", "create_app", "run"]
