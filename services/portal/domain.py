"""The portal's pure rules: what a page shows, which buttons a clinic gets, when a login is refused.

No I/O here. Everything a page shows is derived from the clinic's own inbox (the hub
delivers every step of a referral to both parties), so what a member sees is exactly what
the hub told the clinic, in the hub's own numbering.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec

from referral_hub.client import InboxItem
from referral_hub.contracts.alerts import SEVERITY_RANK, AlertAcknowledged, AlertRaised, AlertResolved, Severity
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
from referral_hub.documents.domain import DocumentMeta
from referral_hub.notifications.domain import PAGING_SEVERITIES
from referral_hub.notifications.page_rules import page_id_for
from referral_hub.referrals import lifecycle
from referral_hub.referrals.lifecycle import Party

PAGE_SIZE: Final = 50
"""Inbox rows per page: long lists page."""
IDLE_TIMEOUT: Final = timedelta(minutes=30)
"""A session unused this long is over; the bucket's TTL bounds it absolutely."""
SESSION_TOUCH_EVERY: Final = timedelta(seconds=60)
"""A session's last-seen time is written at most this often (one KV write per minute, not per request)."""
MAX_FAILED_LOGINS: Final = 5
"""Consecutive wrong passwords or codes before an account locks."""
LOCKOUT: Final = timedelta(minutes=15)
MAX_ADDRESS_ATTEMPTS: Final = 20
"""Login attempts from one address within the logins bucket's window (15 minutes)."""
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
    failed_logins: int = 0
    locked_until: datetime | None = None
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


def session_needs_touch(session: Session, now: datetime) -> bool:
    """Whether last-seen is old enough to be worth a write."""
    return now - session.last_seen > SESSION_TOUCH_EVERY


def locked(account: MemberAccount, now: datetime) -> bool:
    """Whether the account is in its lockout."""
    return account.locked_until is not None and account.locked_until > now


def after_failure(account: MemberAccount, now: datetime) -> MemberAccount:
    """The account after one more wrong factor: locked once it reaches the limit."""
    failed = account.failed_logins + 1
    if failed >= MAX_FAILED_LOGINS:
        return msgspec.structs.replace(account, failed_logins=0, locked_until=now + LOCKOUT)
    return msgspec.structs.replace(account, failed_logins=failed)


def after_success(account: MemberAccount, totp_step: int) -> MemberAccount:
    """The account after a good login: counters cleared, the code's step spent."""
    return msgspec.structs.replace(account, failed_logins=0, locked_until=None, last_totp_step=totp_step)


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
    "rejection": "Refused by the hub",
    "alert.raised": "Alert raised",
    "alert.acknowledged": "Alert acknowledged",
    "alert.resolved": "Alert resolved",
    "page.triggered": "Page",
    "page.acknowledged": "Page acknowledged",
    "screening.flagged": "Screening hold",
}
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


def _summary(message: Message) -> str:  # noqa: PLR0911 - one plain sentence per message kind
    if isinstance(message, ReferralRequested):
        return f"{message.referring_clinic} → {message.recipient_clinic}: {message.modality.value.replace('_', ' ')}"
    if isinstance(message, ReferralTransitioned):
        return f"{message.transition.replace('_', ' ')} by {message.sender_clinic}"
    if isinstance(message, ReferralOverdue):
        return "no answer within the urgency's window"
    if isinstance(message, ReferralCloseReminder):
        return "completed; the referrer has not closed the loop yet"
    if isinstance(message, Rejection):
        return rejection_words(message)
    if isinstance(message, AlertRaised):
        return f"{message.severity.value} alert on {message.trigger}"
    if isinstance(message, PageTriggered):
        return f"{message.severity.value} page for {message.member} (level {message.escalation_level})"
    if isinstance(message, (AlertAcknowledged, PageAcknowledged)):
        return f"by {message.member} of {message.member_clinic}"
    return ""


def rejection_words(rejection: Rejection) -> str:
    """A refusal in plain words, then the hub's own reason."""
    plain = REJECTION_WORDS.get(rejection.code, "The hub refused this.")
    known = {state.value: words for state, words in STATE_WORDS.items()}
    state = f" (the referral is {known[rejection.current_state]})" if rejection.current_state in known else ""
    if rejection.code is RejectionCode.STALE_PLAN_VERSION:
        plain += f" The hub holds version {rejection.current_version}; send version {rejection.current_version + 1}."
    return f"{plain}{state} The hub said: {rejection.reason}"


def row(item: InboxItem, zone: str, read: frozenset[int]) -> InboxRow:
    """The inbox line of one delivery."""
    message = item.message
    kind = kind_of(message)
    state = message.state.value if isinstance(message, ReferralEvent) else ""
    return InboxRow(
        event_number=item.event_number,
        kind=kind,
        label=LABELS.get(kind, kind),
        when=local_time(message.occurred_at, zone),
        summary=_summary(message),
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
    items: Sequence[InboxItem], zone: str, read: frozenset[int], query: InboxQuery
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
        return [row(item, zone, read) for item in reversed(window)], pages
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
    return [row(item, zone, read) for item in window], pages


# --- Referral ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineStep:
    """One step of a referral's history, as both parties saw it."""

    event_number: int
    when: str
    what: str
    by: str
    state: str
    detail: str
    message_id: str = ""


@dataclass(frozen=True)
class ReferralView:
    """Everything the referral page shows."""

    referral_id: str
    patient_ref: str
    role: PortalRole
    state: ReferralState
    state_words: str
    bser_code: str
    bser_display: str
    referring_clinic: str
    recipient_clinic: str
    request: ReferralRequested | None
    timeline: list[TimelineStep]
    transitions: list[str]
    screening: list[ScreeningFlagged] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    event_numbers: frozenset[int] = frozenset()
    disputes: list[str] = field(default_factory=list)


def _step_detail(message: ReferralEvent, zone: str) -> str:
    if isinstance(message, ReferralTransitioned):
        parts = [message.detail, message.reason_code]
        if message.appointment_at is not None:
            parts.append(f"appointment {local_time(message.appointment_at, zone)}")
        if message.outcome is not None:
            parts.append(f"{message.outcome.visits} visits; {message.outcome.response}")
        if message.forwarded_to:
            parts.append(f"forwarded to {message.forwarded_to}")
        return "; ".join(part for part in parts if part)
    if isinstance(message, ReferralRequested):
        return message.reason
    return ""


def referral_view(items: Iterable[InboxItem], referral_id: UUID, clinic: str, zone: str) -> ReferralView | None:
    """The referral as this clinic's inbox tells it, or ``None`` when its inbox never mentioned it.

    ``None`` is what another clinic's referral id gives too: the page answers 404 for both.
    """
    events: list[tuple[int, ReferralEvent]] = []
    flags: list[ScreeningFlagged] = []
    refusals: list[str] = []
    disputes: list[str] = []
    numbers: set[int] = set()
    for item in items:
        message = item.message
        if getattr(message, "referral_id", None) != referral_id:
            continue
        numbers.add(item.event_number)
        if isinstance(message, ReferralEvent):
            events.append((item.event_number, message))
        elif isinstance(message, ScreeningFlagged):
            flags.append(message)
        elif isinstance(message, ScreeningDisputed):
            disputes.append(dispute_words(message, zone))
    if not events:
        return None
    latest = events[-1][1]
    role = PortalRole.REFERRER if latest.referring_clinic == clinic else PortalRole.RECIPIENT
    status = lifecycle.STATUS[latest.state]
    request = next((message for _, message in events if isinstance(message, ReferralRequested)), None)
    timeline = [
        TimelineStep(
            event_number=number,
            when=local_time(message.occurred_at, zone),
            what=message.transition.replace("_", " ")
            if isinstance(message, ReferralTransitioned)
            else LABELS.get(kind_of(message), kind_of(message)),
            by=f"{message.actor} ({message.sender_clinic})",
            state=STATE_WORDS[message.state],
            detail=_step_detail(message, zone),
            message_id=str(message.message_id),
        )
        for number, message in events
    ]
    return ReferralView(
        referral_id=str(referral_id),
        patient_ref=latest.patient_ref,
        role=role,
        state=latest.state,
        state_words=STATE_WORDS[latest.state],
        bser_code=status.bser_code,
        bser_display=f"Service Request {status.bser_display}",
        referring_clinic=latest.referring_clinic,
        recipient_clinic=latest.recipient_clinic,
        request=request,
        timeline=timeline,
        transitions=permitted_transitions(latest.state, role),
        screening=flags,
        refusals=refusals,
        event_numbers=frozenset(numbers),
        disputes=disputes,
    )


def dispute_words(message: ScreeningDisputed, zone: str) -> str:
    """One dispute of a screening match, as a line."""
    when = local_time(message.occurred_at, zone)
    return f"{message.disputed_by} ({message.actor}) disputed rule {message.rule_id} at {when}: {message.reason}"


TRANSITION_ORDER: Final = (
    "accept",
    "override",
    "decline",
    "schedule",
    "interim_note",
    "no_show",
    "complete",
    "close",
    "cancel",
    "cancel_confirm",
    "forward",
)


def permitted_transitions(state: ReferralState, role: PortalRole) -> list[str]:
    """The steps this clinic may take now, from the hub's own transition table."""
    party = Party.SENDER if role is PortalRole.REFERRER else Party.RECIPIENT
    allowed = {
        rule.transition
        for rule in lifecycle.RULES.values()
        if party in rule.by and lifecycle.permits(rule, party, state)
    }
    return [name for name in TRANSITION_ORDER if name in allowed]


# --- Patient, alerts and pages ----------------------------------------------------------------


@dataclass
class AlertView:
    """One alert on a patient, with who acknowledged it."""

    alert_id: str
    severity: str
    trigger: str
    raised_by: str
    raised_at: str
    note: str
    acknowledged: list[str] = field(default_factory=list)
    resolved: bool = False


@dataclass(frozen=True)
class TeamMemberView:
    """One clinic on the patient's care team, as the care-team changes in this inbox tell it."""

    clinic: str
    modality: str
    since: str
    left: str = ""


@dataclass(frozen=True)
class PlanVersionView:
    """One version of a care-team clinic's treatment plan."""

    version: int
    modality: str
    effective: str
    goals: tuple[str, ...]
    frequency: str
    techniques: tuple[str, ...]
    precautions: tuple[str, ...]
    sent: str
    by: str


@dataclass(frozen=True)
class PlanHistory:
    """A clinic's plan for the patient: the newest version first, then the older ones."""

    clinic: str
    versions: list[PlanVersionView]


@dataclass(frozen=True)
class PatientView:
    """The patient page: what this clinic's inbox holds about the patient.

    The care team and plans come from ``careteam.changed`` and ``plan.updated``, as the hub
    delivered them to this clinic: a clinic joining a team is told of every member already
    there (with the time it joined, ``since``) and sent their current plans, and every plan
    reaches its author too. So the page shows the whole team and every member's plan.
    """

    patient_ref: str
    referrals: list[tuple[str, str, str]]
    alerts: list[AlertView]
    team: list[TeamMemberView] = field(default_factory=list)
    plans: list[PlanHistory] = field(default_factory=list)
    flags: list[ScreeningFlagged] = field(default_factory=list)
    disputes: list[str] = field(default_factory=list)
    own_modality: str = ""
    """This clinic's modality on the team; empty when the inbox does not show it on the team."""

    @property
    def on_team(self) -> bool:
        """Whether this clinic's inbox shows it on the patient's care team now."""
        return bool(self.own_modality)


def _team(changes: Iterable[CareTeamChanged], zone: str) -> list[TeamMemberView]:
    members: dict[str, TeamMemberView] = {}
    for change in changes:
        when = local_time(change.occurred_at, zone)
        if change.change == "joined":
            since = local_time(change.since, zone) if change.since is not None else when
            members[change.clinic] = TeamMemberView(change.clinic, change.modality.value, since)
        elif change.change == "left" and change.clinic in members:
            members[change.clinic] = dataclasses.replace(members[change.clinic], left=when)
    return list(members.values())


def _plans(updates: Iterable[PlanUpdated], zone: str) -> list[PlanHistory]:
    by_clinic: dict[str, dict[int, PlanVersionView]] = {}
    for update in updates:
        by_clinic.setdefault(update.plan_clinic, {})[update.plan_version] = PlanVersionView(
            version=update.plan_version,
            modality=update.modality.value,
            effective=update.effective_date.isoformat(),
            goals=update.goals,
            frequency=update.frequency,
            techniques=update.techniques,
            precautions=update.precautions,
            sent=local_time(update.occurred_at, zone),
            by=update.actor,
        )
    return [
        PlanHistory(clinic, sorted(versions.values(), key=lambda v: -v.version))
        for clinic, versions in sorted(by_clinic.items())
    ]


def patient_view(  # noqa: C901 - one branch per kind of message the page shows
    items: Iterable[InboxItem], patient_ref: str, zone: str, clinic: str = ""
) -> PatientView | None:
    """What this clinic's inbox says about one patient, or ``None`` when it says nothing (404)."""
    referrals: dict[str, tuple[str, str, str]] = {}
    alerts: dict[str, AlertView] = {}
    changes: list[CareTeamChanged] = []
    updates: list[PlanUpdated] = []
    flags: dict[str, ScreeningFlagged] = {}
    disputes: list[str] = []
    for item in items:
        message = item.message
        if getattr(message, "patient_ref", None) != patient_ref:
            continue
        if isinstance(message, ReferralEvent):
            referrals[str(message.referral_id)] = (
                str(message.referral_id),
                STATE_WORDS[message.state],
                f"{message.referring_clinic} → {message.recipient_clinic}",
            )
        elif isinstance(message, AlertRaised):
            alerts[str(message.alert_id)] = AlertView(
                alert_id=str(message.alert_id),
                severity=message.severity.value,
                trigger=message.trigger,
                raised_by=message.raised_by,
                raised_at=local_time(message.raised_at or message.occurred_at, zone),
                note=message.note,
            )
        elif isinstance(message, AlertAcknowledged) and str(message.alert_id) in alerts:
            alerts[str(message.alert_id)].acknowledged.append(
                f"{message.member} ({message.member_clinic}) at {local_time(message.occurred_at, zone)}"
            )
        elif isinstance(message, AlertResolved) and str(message.alert_id) in alerts:
            alerts[str(message.alert_id)].resolved = True
        elif isinstance(message, CareTeamChanged):
            changes.append(message)
        elif isinstance(message, PlanUpdated):
            updates.append(message)
        elif isinstance(message, ScreeningFlagged):
            flags[str(message.flag_id)] = message
        elif isinstance(message, ScreeningDisputed):
            disputes.append(dispute_words(message, zone))
    if not (referrals or alerts or changes or updates or flags):
        return None
    active = sorted(
        (alert for alert in alerts.values() if not alert.resolved),
        key=lambda alert: (-SEVERITY_RANK[Severity(alert.severity)], alert.raised_at),
    )
    team = _team(changes, zone)
    own = next((m.modality for m in team if m.clinic == clinic and not m.left), "")
    return PatientView(
        patient_ref,
        list(referrals.values()),
        active,
        team=team,
        plans=_plans(updates, zone),
        flags=list(reversed(flags.values())),
        disputes=disputes,
        own_modality=own,
    )


def screening_match(
    items: Iterable[InboxItem], patient_ref: str, flag_id: UUID, rule_id: str
) -> ScreeningFlagged | None:
    """The flag ``flag_id`` on ``patient_ref`` in this clinic's inbox, if one of its matches is ``rule_id``."""
    for item in items:
        message = item.message
        if (
            isinstance(message, ScreeningFlagged)
            and message.flag_id == flag_id
            and message.patient_ref == patient_ref
            and any(match.rule_id == rule_id for match in message.matches)
        ):
            return message
    return None


def inbox_message(items: Iterable[InboxItem], message_id: UUID) -> InboxItem | None:
    """The delivery of ``message_id`` in this clinic's inbox (another clinic's message is never here)."""
    return next((item for item in items if item.message.message_id == message_id), None)


@dataclass(frozen=True)
class PageView:
    """A page the hub sent this clinic for another clinic's alert, with who acknowledged it."""

    page_id: str
    alert_id: str
    severity: str
    trigger: str
    patient_ref: str
    raised_by: str
    also_paged: str
    when: str
    acknowledged_by: str


def open_pages(items: Iterable[InboxItem], clinic: str, zone: str) -> list[PageView]:
    """The pages this clinic got, newest first, from the alerts in its inbox.

    The hub pages each care-team clinic but the raiser for an alert of a paging severity,
    once per alert and clinic, under an id derived from both (``page_id_for``): the portal
    finds the page from the alert without reading the hub's pages bucket.
    """
    pages: dict[str, PageView] = {}
    acks: dict[str, str] = {}
    for item in items:
        message = item.message
        if isinstance(message, AlertRaised) and message.severity in PAGING_SEVERITIES and message.raised_by != clinic:
            page_id = str(page_id_for(f"alert:{message.alert_id}:{clinic}"))
            others = [c for c in message.recipients if c not in {clinic, message.raised_by}]
            pages[page_id] = PageView(
                page_id=page_id,
                alert_id=str(message.alert_id),
                severity=message.severity.value,
                trigger=message.trigger,
                patient_ref=message.patient_ref,
                raised_by=message.raised_by,
                also_paged=", ".join(others) or "no other clinic",
                when=local_time(message.raised_at or message.occurred_at, zone),
                acknowledged_by="",
            )
        elif isinstance(message, PageAcknowledged):
            when = local_time(message.occurred_at, zone)
            acks[str(message.page_id)] = f"{message.member} ({message.member_clinic}) at {when}"
    return [dataclasses.replace(page, acknowledged_by=acks.get(page.page_id, "")) for page in reversed(pages.values())]


@dataclass(frozen=True)
class DocumentRow:
    """One document on a referral page: what it is, who attached it, when (clinic time)."""

    id: str
    title: str
    content_type: str
    size: str
    author: str
    when: str


def size_words(size: int) -> str:
    """A byte count as a member reads it: 812 bytes, 14 KiB, 3.2 MiB."""
    if size < 1024:  # noqa: PLR2004 - one KiB
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def document_rows(metas: Iterable[DocumentMeta], zone: str) -> list[DocumentRow]:
    """A referral's documents, oldest first, with sizes in words and times in ``zone``."""
    ordered = sorted(metas, key=lambda meta: meta.created)
    return [
        DocumentRow(
            id=meta.id,
            title=meta.title,
            content_type=meta.content_type,
            size=size_words(meta.size),
            author=meta.author,
            when=local_time(meta.created, zone),
        )
        for meta in ordered
    ]


INERT_TYPES: Final = frozenset({"application/pdf", "text/plain", "image/png", "image/jpeg", "image/gif"})
"""Types a download keeps; anything else (HTML, SVG, scripts) goes out as ``application/octet-stream``."""


def download_type(content_type: str) -> str:
    """The ``Content-Type`` a download is served with: the stored one only when it cannot run script."""
    declared = content_type.split(";", 1)[0].strip().lower()
    return declared if declared in INERT_TYPES else "application/octet-stream"


def download_name(title: str) -> str:
    """A ``Content-Disposition`` filename: printable ASCII without quotes or path separators."""
    kept = re.sub(r"[^A-Za-z0-9._ -]", "_", title).strip(" .") or "document"
    return kept[:100]


def utc_now() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(UTC)
