"""The portal's pure rules: what a page shows, which buttons a clinic gets, when a login is refused.

No I/O here. Everything a page shows is derived from the clinic's own inbox (the hub
delivers every step of a referral to both parties), so what a member sees is exactly what
the hub told the clinic, in the hub's own numbering.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

from referral_hub.client import InboxItem
from referral_hub.contracts.alerts import AlertAcknowledged, AlertRaised, AlertResolved
from referral_hub.contracts.base import Message, message_type
from referral_hub.contracts.paging import PageAcknowledged, PageTriggered
from referral_hub.contracts.plans import CareTeamChanged, PlanUpdated
from referral_hub.contracts.referrals import (
    ReferralCloseReminder,
    ReferralEvent,
    ReferralOverdue,
    ReferralRequested,
    ReferralState,
    ReferralTransitioned,
)
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.contracts.screening import ScreeningDisputed, ScreeningFlagged

PAGE_SIZE: Final = 50
"""Inbox rows per page: long lists page."""
IDLE_TIMEOUT: Final = timedelta(minutes=30)
"""A session unused this long is over; the bucket's TTL bounds it absolutely."""
SESSION_TOUCH_EVERY: Final = timedelta(seconds=60)
"""A session's last-seen time is written at most this often (one KV write per minute, not per request)."""
LOGIN_WINDOW: Final = timedelta(minutes=15)
"""A failure budget refills this long after its last failure (the logins bucket's TTL)."""
MAX_SOURCE_FAILURES: Final = 20
"""Failed logins from one address, whatever accounts they name, before that address waits."""
MAX_PAIR_FAILURES: Final = 5
"""Failed logins from one address for one username before that pair waits; other addresses are untouched."""
MIN_PASSWORD_LENGTH: Final = 12
USERNAME: Final = re.compile(r"^(?P<member>[a-z0-9][a-z0-9._-]{0,62})@(?P<clinic>[a-z0-9][a-z0-9-]{1,62})$")


class PortalRole(enum.StrEnum):
    """Which side of a referral the viewing clinic is on."""

    REFERRER = "referrer"
    RECIPIENT = "recipient"


# --- Accounts, sessions and logins ----------------------------------------------------------


class MemberAccount(msgspec.Struct, frozen=True, kw_only=True):
    """A portal login: one care-team member of one clinic, with both factors."""

    clinic: str
    member: str
    password_hash: str
    totp_secret: str
    enrolled_at: datetime
    last_totp_step: int = 0
    """The newest TOTP time step accepted: a code is never accepted twice."""


class Invite(msgspec.Struct, frozen=True, kw_only=True):
    """A one-time enrolment link's record, keyed by the SHA-256 of its token (never the token)."""

    clinic: str
    member: str
    expires_at: datetime
    totp_secret: str = ""
    """Chosen when the link is first opened, so the page and the enrolment agree."""


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A server-side session, keyed by the SHA-256 of the cookie's value."""

    clinic: str
    member: str
    created_at: datetime
    last_seen: datetime
    csrf: str = ""
    """SHA-256 of the CSRF cookie set at login: a form is taken only with the token of its own session."""
    flash: str = ""
    """A refusal to show once on the next page, kept here rather than in a URL anyone can craft."""


def account_key(clinic: str, member: str) -> str:
    """The members bucket key of one member (both ids are subject-token safe)."""
    return f"{clinic}.{member}"


def parse_username(text: str) -> tuple[str, str] | None:
    """``member@clinic`` as ``(clinic, member)``, or ``None`` when it is not shaped like one."""
    found = USERNAME.match(text.strip().lower())
    return (found["clinic"], found["member"]) if found else None


def session_expired(session: Session, now: datetime) -> bool:
    """Whether the session has been idle too long."""
    return now - session.last_seen > IDLE_TIMEOUT


def csrf_digest(cookie: str) -> str:
    """What a session keeps of its CSRF cookie: a digest, never the value."""
    return hashlib.sha256(cookie.encode()).hexdigest()


def csrf_bound(session: Session, cookie: str) -> bool:
    """Whether ``cookie`` is the CSRF cookie the member's session was given at login."""
    return bool(session.csrf and cookie) and hmac.compare_digest(session.csrf, csrf_digest(cookie))


def session_needs_touch(session: Session, now: datetime) -> bool:
    """Whether last-seen is old enough to be worth a write."""
    return now - session.last_seen > SESSION_TOUCH_EVERY


def failure_keys(address: str, username: str) -> tuple[str, str]:
    """The logins bucket's keys of the two failure budgets an attempt draws on: its address, and address+username.

    Hashed, so the bucket holds neither addresses nor usernames. The username is taken as
    typed (normalised), known or not, so an unknown account spends its budget exactly as a
    known one does and the budget tells nobody which accounts exist. There is no budget per
    account alone: that would let anyone lock a member out from anywhere.
    """
    source = hashlib.sha256(f"addr\0{address}".encode()).hexdigest()
    pair = hashlib.sha256(f"pair\0{address}\0{username.strip().lower()}".encode()).hexdigest()
    return f"addr.{source}", f"pair.{pair}"


def over_budget(source_failures: int, pair_failures: int) -> bool:
    """Whether an attempt exceeds either budget (counts include the attempt itself)."""
    return source_failures > MAX_SOURCE_FAILURES or pair_failures > MAX_PAIR_FAILURES


def after_success(account: MemberAccount, totp_step: int) -> MemberAccount:
    """The account after a good login: the code's step is spent, so the same code never works twice."""
    return msgspec.structs.replace(account, last_totp_step=totp_step)


def password_problem(password: str, confirm: str) -> str:
    """Why a new password is refused, in plain words, or empty."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > 1024:  # noqa: PLR2004 - a bound on hashing work, stated once
        return "Use at most 1024 characters."
    if password != confirm:
        return "The two passwords differ."
    return ""


# --- Inbox ------------------------------------------------------------------------------------

LABELS: Final = {
    "referral.requested": "New referral",
    "referral.transitioned": "Referral update",
    "referral.overdue": "Referral overdue",
    "referral.close_reminder": "Close the loop",
    "plan.updated": "Treatment plan",
    "careteam.changed": "Care team",
    "rejection": "Refused by the hub",
    "alert.raised": "Alert raised",
    "alert.acknowledged": "Alert acknowledged",
    "alert.resolved": "Alert resolved",
    "page.triggered": "Page",
    "page.acknowledged": "Page acknowledged",
    "page.suppressed": "Page held back",
    "notification.queued": "Notification queued",
    "delivery.receipt": "Page delivery",
    "screening.flagged": "Screening hold",
    "screening.disputed": "Screening match disputed",
    "admin.changed": "Hub settings changed",
    "audit.checkpoint.witnessed": "Audit checkpoint witnessed",
    "inbox.heartbeat": "Inbox check",
}
"""Every kind of message the hub delivers to a clinic, named as a front desk would say it."""
STATE_WORDS: Final = {state: state.value.replace("_", " ") for state in ReferralState}
REJECTION_WORDS: Final = {
    RejectionCode.INVALID_TRANSITION: "That step is not possible from the referral's current state.",
    RejectionCode.WRONG_PARTY: "Only the other clinic may take that step.",
    RejectionCode.REFERRAL_CLOSED: "This referral is closed; nothing more can happen to it.",
    RejectionCode.UNKNOWN_REFERRAL: "The hub knows no such referral for this clinic.",
    RejectionCode.INVALID_RECIPIENT: "That clinic cannot receive this referral.",
    RejectionCode.UNKNOWN_CLINIC: "The hub does not know that clinic.",
    RejectionCode.SCHEMA_VIOLATION: "A field was not filled in as the hub expects.",
    RejectionCode.RATE_LIMITED: "The clinic is sending too fast; try again in a moment.",
    RejectionCode.STALE_PLAN_VERSION: "Someone changed this clinic's plan first: the version is not the next one.",
    RejectionCode.NOT_ON_CARE_TEAM: "This clinic is not on the patient's care team.",
    RejectionCode.NO_CARE_TEAM: "The patient has no care team yet (a referral must be accepted first).",
    RejectionCode.UNKNOWN_FLAG: "The hub knows no such screening match for this clinic.",
    RejectionCode.PATIENT_MISMATCH: "The patient does not match.",
}


@dataclass(frozen=True)
class InboxRow:
    """One inbox line as the page shows it."""

    event_number: int
    kind: str
    label: str
    when: str
    summary: str
    state: str
    referral_id: str
    patient_ref: str
    unread: bool
    message_id: str = ""
    """For the audit receipt link: the delivered message's id."""


def local_time(at: datetime | None, zone: str) -> str:
    """A timestamp in the clinic's time zone, with the zone's abbreviation."""
    if at is None:
        return ""
    return at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def kind_of(message: Message) -> str:
    """The message's wire type."""
    return message_type(type(message))


def _referral_summary(message: ReferralEvent, clinic: str) -> str:
    """A referral step, with which way it goes from this clinic's side."""
    sent = message.referring_clinic == clinic
    other = message.recipient_clinic if sent else message.referring_clinic
    way = f"sent to {other}" if sent else f"from {other}"
    if isinstance(message, ReferralRequested):
        return f"{message.urgency.value} {message.modality.value.replace('_', ' ')} referral {way}"
    if isinstance(message, ReferralTransitioned):
        return f"{message.transition.replace('_', ' ')} by {message.sender_clinic} (referral {way})"
    if isinstance(message, ReferralOverdue):
        return f"no answer within the urgency's window (referral {way})"
    if isinstance(message, ReferralCloseReminder):
        return f"completed; the referrer has not closed the loop yet (referral {way})"
    return f"referral {way}"


def _summary(message: Message, clinic: str = "") -> str:  # noqa: C901, PLR0911 - one plain sentence per message kind
    """One sentence on what happened; never empty, so every Activity row says what it is about."""
    if isinstance(message, ReferralEvent):
        return _referral_summary(message, clinic)
    if isinstance(message, Rejection):
        return rejection_words(message)
    if isinstance(message, AlertRaised):
        return f"{message.severity.value} alert on {message.trigger}, raised by {message.raised_by}"
    if isinstance(message, PageTriggered):
        return f"{message.severity.value} page for {message.member} (level {message.escalation_level})"
    if isinstance(message, (AlertAcknowledged, PageAcknowledged)):
        return f"by {message.member} of {message.member_clinic}"
    if isinstance(message, AlertResolved):
        return f"withdrawn by {message.sender_clinic}" + (f": {message.reason}" if message.reason else "")
    if isinstance(message, CareTeamChanged):
        verb = "joined" if message.change == "joined" else "left"
        return f"{message.clinic} {verb} the care team ({message.modality.value.replace('_', ' ')})"
    if isinstance(message, PlanUpdated):
        return f"{message.plan_clinic} sent version {message.plan_version} of its plan"
    if isinstance(message, ScreeningFlagged):
        held, modality = "held" if message.held else "noted", message.modality.value.replace("_", " ")
        return f"{message.highest_severity.value} contraindication {held} for {modality}"
    if isinstance(message, ScreeningDisputed):
        return f"{message.disputed_by} disputed rule {message.rule_id}"
    return LABELS.get(kind_of(message), kind_of(message))


def rejection_words(rejection: Rejection) -> str:
    """A refusal in plain words, then the hub's own reason."""
    plain = REJECTION_WORDS.get(rejection.code, "The hub refused this.")
    known = {state.value: words for state, words in STATE_WORDS.items()}
    state = f" (the referral is {known[rejection.current_state]})" if rejection.current_state in known else ""
    if rejection.code is RejectionCode.STALE_PLAN_VERSION:
        plain += f" The hub holds version {rejection.current_version}; send version {rejection.current_version + 1}."
    return f"{plain}{state} The hub said: {rejection.reason}"


def row(item: InboxItem, zone: str, read: frozenset[int], clinic: str = "") -> InboxRow:
    """The Activity line of one delivery, worded from ``clinic``'s side."""
    message = item.message
    kind = kind_of(message)
    state = message.state.value if isinstance(message, ReferralEvent) else ""
    return InboxRow(
        event_number=item.event_number,
        kind=kind,
        label=LABELS.get(kind, kind),
        when=local_time(message.occurred_at, zone),
        summary=_summary(message, clinic),
        state=state,
        referral_id=str(getattr(message, "referral_id", "") or ""),
        patient_ref=str(getattr(message, "patient_ref", "") or ""),
        unread=item.event_number not in read,
        message_id=str(message.message_id),
    )


@dataclass(frozen=True)
class InboxQuery:
    """The inbox filters and page, as the query string gives them (already validated)."""

    kind: str = ""
    state: str = ""
    page: int = 1
    unread_only: bool = False


def inbox_rows(
    items: Sequence[InboxItem], zone: str, read: frozenset[int], query: InboxQuery, clinic: str = ""
) -> tuple[list[InboxRow], int]:
    """The rows of one inbox page, newest first, and how many pages the filtered inbox has.

    Unfiltered, the page is a slice of ``items`` (oldest first), so a render touches one
    page of rows whatever the inbox's size; a filter has to look at every message.
    """
    if not (query.kind or query.state or query.unread_only):
        pages = max(1, -(-len(items) // PAGE_SIZE))
        page = min(max(query.page, 1), pages)
        end = len(items) - (page - 1) * PAGE_SIZE
        window = items[max(end - PAGE_SIZE, 0) : end]
        return [row(item, zone, read, clinic) for item in reversed(window)], pages
    chosen = [
        item
        for item in reversed(items)
        if (not query.kind or kind_of(item.message) == query.kind)
        and (not query.state or getattr(item.message, "state", None) == query.state)
        and (not query.unread_only or item.event_number not in read)
    ]
    pages = max(1, -(-len(chosen) // PAGE_SIZE))
    page = min(max(query.page, 1), pages)
    window = chosen[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    return [row(item, zone, read, clinic) for item in window], pages


def utc_now() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(UTC)
