"""What every portal route shares: the settings, the session guard, and the steps each handler takes.

``Portal`` is the per-process state (the store, the clinic connections, the registry);
:meth:`Portal.current` is the session guard every page but login and invite passes first.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from typing import Any, Final
from uuid import uuid4

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.response import Redirect

from referral_hub.contracts.access import AccessViewed
from referral_hub.contracts.base import Message
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import Rejection
from referral_hub.errors import HubError
from referral_hub.portal import domain, forms, receipts
from referral_hub.portal.adapters import ClinicConnections, PortalStore
from referral_hub.portal.patient_details import PatientReader
from referral_hub.runtime.jetstream.registry_cache import RegistryCache
from referral_hub.sealing.keystore import KeyStore

PREFIX: Final = "/portal"
SESSION_COOKIE: Final = "portal_session"
CSRF_COOKIE: Final = "portal_csrf"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


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
    metrics_port: int | None = None
    """Where ``/metrics`` and ``/health`` are served, apart from the portal's port; ``None``: not served."""
    metrics_host: str = "127.0.0.1"

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
    flash: str = ""
    """A refusal the previous action left for this page."""

    @property
    def actor(self) -> forms.Actor:
        """The member as a command's sender."""
        return forms.Actor(self.clinic.id, self.member, self.clinic.timezone)


class Portal:
    """Per-process state the handlers share: the store, the clinic connections, the live registry."""

    def __init__(self, settings: PortalSettings) -> None:
        """Nothing opens until the lifespan starts."""
        self.settings = settings
        self.registry = RegistryCache()
        """The hub's registry bucket as its watch tells it: a roster change shows at once, here as everywhere."""
        self.store: PortalStore | None = None
        self.connections = ClinicConnections(settings.nats_url)
        self.verifier_key = receipts.portal_verifier_key()
        self.csrf_secret = ""
        """The CSRF middleware's secret, set by the app: login mints the session's own CSRF cookie with it."""
        self.patients = PatientReader(KeyStore.from_environment())

    @property
    def clinics(self) -> dict[str, Clinic]:
        """Every registered clinic by id, as the registry holds it now."""
        return {clinic.id: clinic for clinic in self.registry.clinics()}

    def is_member(self, clinic: str, member: str) -> bool:
        """Whether the live registry lists ``member`` in ``clinic`` (a member taken off the roster may not log in)."""
        found = self.registry.get(clinic)
        return found is not None and found.has_member(member)

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
        if found is None or domain.session_expired(found[0], now):
            raise LoginRequiredError
        session = found[0]
        clinic = self.registry.get(session.clinic)
        if clinic is None or not clinic.has_member(session.member):
            # Taken off the live roster: the session ends with the membership.
            raise LoginRequiredError
        method = request.scope.get("method", "GET")
        if method not in SAFE_METHODS and not domain.csrf_bound(session, request.cookies.get(CSRF_COOKIE, "")):
            # The form's token matched the CSRF cookie, but that cookie is not the one the member's session was given.
            raise PermissionDeniedException(detail="CSRF token verification failed")
        shows_page = method == "GET" and not request.url.path.endswith("/events")
        flash = session.flash if shows_page else ""
        if flash or domain.session_needs_touch(session, now):
            # A flash is shown once: the page that shows it clears it.
            await self.storage().save_session(token, msgspec.structs.replace(session, last_seen=now, flash=""))
        return Member(clinic, session.member, token, flash)

    async def flash(self, member: Member, words: str) -> None:
        """Leave ``words`` for the member's session's next page."""
        found = await self.storage().session(member.token)
        if found is not None:
            await self.storage().save_session(member.token, msgspec.structs.replace(found[0], flash=words[:2000]))

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


def portal_of(request: ASGIConnection[Any, Any, Any, Any]) -> Portal:
    """The app's :class:`Portal`."""
    portal: Portal = request.app.state.portal
    return portal


def page_context(member: Member, **values: object) -> dict[str, object]:
    """A template's context: the member and their clinic (every page's header shows both), then ``values``."""
    return {"member": member, "clinic": member.clinic, "flash": member.flash, **values}


async def form_fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The form's text fields; file parts are read apart, where a form takes files."""
    data = await request.form()
    return {key: value for key, value in data.items() if isinstance(value, str)}


async def send_or_refuse(portal: Portal, member: Member, message: Message, back: str) -> Redirect:
    """Send an action as the member's clinic and go ``back``; a refusal waits in the session for that page.

    Never in the URL: a link anyone can craft would otherwise put their words on the page.
    """
    answer = await portal.connections.send_and_confirm(member.clinic.id, message)
    if isinstance(answer.message, Rejection):
        await portal.flash(member, domain.rejection_words(answer.message))
    return see_other(back)
