"""What every portal route shares: the settings, the session guard, and the steps each handler takes.

``Portal`` is the per-process state (the store, the clinic connections, the registry);
:meth:`Portal.current` is the session guard every page but login and invite passes first.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from uuid import uuid4

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.response import Redirect

from referral_hub.contracts.access import AccessViewed
from referral_hub.contracts.base import Message
from referral_hub.contracts.registry import Clinic, Registry
from referral_hub.contracts.rejections import Rejection
from referral_hub.errors import HubError
from referral_hub.portal import domain, forms, receipts
from referral_hub.portal.adapters import ClinicConnections, PortalStore
from referral_hub.portal.domain import Session

PREFIX: Final = "/portal"
SESSION_COOKIE: Final = "portal_session"


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


def portal_of(request: ASGIConnection[Any, Any, Any, Any]) -> Portal:
    """The app's :class:`Portal`."""
    portal: Portal = request.app.state.portal
    return portal


def page_context(member: Member, **values: object) -> dict[str, object]:
    """A template's context: the member and their clinic (every page's header shows both), then ``values``."""
    return {"member": member, "clinic": member.clinic, **values}


async def form_fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The form's text fields; file parts are read apart, where a form takes files."""
    data = await request.form()
    return {key: value for key, value in data.items() if isinstance(value, str)}


async def send_or_refuse(portal: Portal, member: Member, message: Message, back: str) -> Redirect:
    """Send an action as the member's clinic and go ``back``; a refusal rides along in plain words."""
    answer = await portal.connections.send_and_confirm(member.clinic.id, message)
    if isinstance(answer.message, Rejection):
        return see_other(back, query_params={"refused": domain.rejection_words(answer.message)[:500]})
    return see_other(back)
