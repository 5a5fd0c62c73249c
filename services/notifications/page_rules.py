"""Pages, de-duplication, silences, inhibition and escalation, as pure functions.

A page is one safety event (an alert or a screening flag) for one clinic. Its dedup key is
``<source>:<id>:<clinic>``, so a re-raised alert updates the open page instead of paging
again. Escalation follows PagerDuty's model: each level has a delay, after the last level
the policy starts over, a set number of times, and an acknowledgement stops it. Silences
and inhibitions follow Alertmanager's. Nothing lowers the safety floor: an absolute page is
never silenced, inhibited, quiet-houred or de-duplicated into silence.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from uuid import UUID

import msgspec

from referral_hub.contracts.alerts import SEVERITY_RANK, Severity
from referral_hub.contracts.base import Modality
from referral_hub.contracts.paging import PageAck, PageSeverity
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.runtime.messaging.ids import derived_id

PAGE_SEVERITY: Final = {
    Severity.ABSOLUTE: PageSeverity.CRITICAL,
    Severity.RELATIVE: PageSeverity.ERROR,
    Severity.LOCAL: PageSeverity.WARNING,
    Severity.CAUTION: PageSeverity.INFO,
}
"""Clinical severity to PagerDuty Events v2 severity."""
MAX_SILENCE: Final = timedelta(days=30)


class PageStatus(enum.StrEnum):
    """Where a page is in its life."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    """Its alert was resolved before anyone acknowledged."""
    SUPPRESSED = "suppressed"
    """A silence or an inhibition kept it from paging (never an absolute one)."""


@dataclass(frozen=True)
class EscalationPolicy:
    """Delays per level (on-call, clinical leads, everyone) and how often the policy starts over."""

    delays: tuple[timedelta, ...] = (timedelta(minutes=5), timedelta(minutes=5), timedelta(minutes=10))
    repeats: int = 2


class PageIntent(msgspec.Struct, frozen=True, kw_only=True):
    """What routing asks for: page ``clinic`` about a safety event."""

    source: str
    """``alert`` or ``flag``."""
    source_id: UUID
    clinic: str
    patient_ref: str
    severity: Severity
    modalities: tuple[Modality, ...]
    about_message_id: UUID
    summary: str
    notify_clinics: tuple[str, ...]
    source_at: datetime
    """When the hub accepted the alert or raised the flag: ``alert_to_page_seconds`` starts here."""

    @property
    def dedup_key(self) -> str:
        """One page per safety event per clinic."""
        return f"{self.source}:{self.source_id}:{self.clinic}"


def page_id_for(dedup_key: str) -> UUID:
    """Pages are found by id without an index: the id is derived from the dedup key."""
    return derived_id(dedup_key, "page")


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """A page's durable state, as stored in the pages KV bucket."""

    page_id: UUID
    dedup_key: str
    intent: PageIntent
    status: PageStatus
    opened_at: datetime
    level: int = 0
    cycle: int = 0
    next_at: datetime | None = None
    """When the current level escalates if nobody acknowledges; ``None`` once the policy ran out."""
    delivered_step: str = ""
    """The ``cycle/level`` whose delivery last started; behind :attr:`step` means owed."""
    changed_at: datetime
    acked_by: str = ""
    acked_clinic: str = ""
    acked_at: datetime | None = None
    acked_message_id: UUID | None = None
    suppressed_reason: str = ""
    silence_id: UUID | None = None
    generation: int = 0

    @property
    def step(self) -> str:
        """The escalation step the page is on."""
        return f"{self.generation}/{self.cycle}/{self.level}"


class Silence(msgspec.Struct, frozen=True, kw_only=True):
    """Alertmanager-style: matching pages are recorded but not delivered, until ``ends_at``."""

    silence_id: UUID
    clinic: str
    ends_at: datetime
    created_by: str
    reason: str
    patient_ref: str = ""
    modality: Modality | None = None
    severities: tuple[Severity, ...] = (Severity.RELATIVE, Severity.LOCAL, Severity.CAUTION)
    starts_at: datetime | None = None

    def in_force(self, at: datetime) -> bool:
        """Whether the silence has begun and not yet ended at ``at``.

        A time stored without a zone (a record written by hand, not by ``hubctl``) reads as
        UTC rather than failing every page that consults the silences.
        """
        starts = _aware(self.starts_at) if self.starts_at is not None else None
        return (starts is None or starts <= at) and at < _aware(self.ends_at)

    def matches(self, intent: PageIntent, at: datetime) -> bool:
        """Whether this silence covers ``intent`` at ``at``; never an absolute page."""
        return (
            intent.severity is not Severity.ABSOLUTE
            and self.in_force(at)
            and self.clinic == intent.clinic
            and intent.severity in self.severities
            and (not self.patient_ref or self.patient_ref == intent.patient_ref)
            and (self.modality is None or self.modality in intent.modalities)
        )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class SilenceError(ValueError):
    """A silence that cannot be accepted."""


def check_silence(silence: Silence, now: datetime) -> None:
    """A silence must expire, within 30 days, start before it ends, and may not name absolute severity."""
    if Severity.ABSOLUTE in silence.severities:
        msg = "absolute contraindication pages cannot be silenced"
        raise SilenceError(msg)
    if silence.ends_at.tzinfo is None or (silence.starts_at is not None and silence.starts_at.tzinfo is None):
        msg = "a silence's start and end must name their time zone"
        raise SilenceError(msg)
    if silence.starts_at is not None and silence.starts_at >= silence.ends_at:
        msg = "a silence must start before it ends"
        raise SilenceError(msg)
    if silence.ends_at <= now:
        msg = "a silence must end in the future"
        raise SilenceError(msg)
    if silence.ends_at - now > MAX_SILENCE:
        msg = f"a silence may last at most {MAX_SILENCE.days} days"
        raise SilenceError(msg)


class OpenAbsolute(msgspec.Struct, frozen=True, kw_only=True):
    """An absolute alert in force, which inhibits relative pages for its modalities."""

    alert_id: UUID
    modalities: tuple[Modality, ...]


class PatientRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What notifications keeps per patient: the absolute alerts in force."""

    absolute: tuple[OpenAbsolute, ...] = ()

    def inhibits(self, intent: PageIntent) -> bool:
        """An open absolute alert inhibits relative pages for the same patient and modality."""
        return intent.severity is Severity.RELATIVE and any(
            set(a.modalities) & set(intent.modalities) and a.alert_id != intent.source_id for a in self.absolute
        )


@dataclass(frozen=True)
class Opened:
    """The page to store, and whether to deliver it now (``False``: recorded, not paged)."""

    page: Page
    deliver: bool
    outcome: str
    """``paged``, ``repaged``, ``deduplicated``, ``silenced`` or ``inhibited``: the metric label."""


def suppression(
    intent: PageIntent, silences: Iterable[Silence], record: PatientRecord | None, now: datetime
) -> tuple[str, UUID | None] | None:
    """Why ``intent`` must not page now, as ``(reason, silence_id)``; ``None``: it pages.

    A silence, or an absolute alert in force for the same patient and modality, suppresses a
    relative page; an absolute intent is never suppressed.
    """
    if intent.severity is Severity.ABSOLUTE:
        return None
    silence = next((s for s in silences if s.matches(intent, now)), None)
    if silence is not None:
        return (
            f"silenced until {silence.ends_at.isoformat(timespec='minutes')}: {silence.reason}",
            silence.silence_id,
        )
    if record is not None and record.inhibits(intent):
        return "inhibited by an absolute alert in force for the same patient and modality", None
    return None


def open_page(
    existing: Page | None,
    intent: PageIntent,
    at: datetime,
    policy: EscalationPolicy,
    suppression: tuple[str, UUID | None] | None,
) -> Opened:
    """Open, update or re-open the page for ``intent``.

    ``suppression`` is ``(reason, silence_id)`` when a silence or an inhibition applies; the
    caller never passes one for an absolute intent, and this function ignores it if it does.
    """
    page_id = page_id_for(intent.dedup_key)
    if existing is not None and existing.status in {PageStatus.OPEN, PageStatus.ACKNOWLEDGED}:
        escalated = SEVERITY_RANK[intent.severity] > SEVERITY_RANK[existing.intent.severity]
        if not (escalated and intent.severity is Severity.ABSOLUTE):
            return Opened(
                msgspec.structs.replace(existing, intent=intent, changed_at=at), deliver=False, outcome="deduplicated"
            )
    generation = existing.generation + 1 if existing is not None else 0
    if suppression is not None and intent.severity is not Severity.ABSOLUTE:
        reason, silence_id = suppression
        page = Page(
            page_id=page_id,
            dedup_key=intent.dedup_key,
            intent=intent,
            status=PageStatus.SUPPRESSED,
            opened_at=at,
            changed_at=at,
            suppressed_reason=reason,
            silence_id=silence_id,
            generation=generation,
        )
        return Opened(page, deliver=False, outcome="silenced" if silence_id else "inhibited")
    page = Page(
        page_id=page_id,
        dedup_key=intent.dedup_key,
        intent=intent,
        status=PageStatus.OPEN,
        opened_at=at,
        changed_at=at,
        next_at=at + policy.delays[0],
        generation=generation,
    )
    return Opened(page, deliver=True, outcome="repaged" if existing is not None else "paged")


def escalate(page: Page, now: datetime, policy: EscalationPolicy) -> Page | None:
    """The page one level up if its level's delay ran out unacknowledged; ``None`` if nothing is due."""
    if page.status is not PageStatus.OPEN or page.next_at is None or now < page.next_at:
        return None
    level, cycle = page.level + 1, page.cycle
    if level >= len(policy.delays):
        level, cycle = 0, cycle + 1
    if cycle > policy.repeats:
        return msgspec.structs.replace(page, next_at=None, changed_at=now)
    return msgspec.structs.replace(page, level=level, cycle=cycle, next_at=now + policy.delays[level], changed_at=now)


@dataclass(frozen=True)
class AckRefused:
    """Why a ``page.ack`` cannot stand; the handler refuses the command with this code and reason."""

    code: RejectionCode
    reason: str


def is_replayed_ack(page: Page | None, command: PageAck) -> bool:
    """Whether ``command`` is the ack ``page`` recorded, delivered again.

    Its message id alone does not say so: the id reaches every clinic told of the ack (as the
    announcement's cause), and an ack sent again with it by another clinic or for another
    member is a new command, decided by :func:`acknowledge` (for another clinic, exactly as
    for a page that does not exist).
    """
    return (
        page is not None
        and page.acked_message_id == command.message_id
        and page.acked_clinic == command.sender_clinic
        and page.acked_by == command.member
    )


def acknowledge(page: Page | None, command: PageAck, sender: Clinic, at: datetime) -> Page | AckRefused:
    """A member of the paged clinic acknowledges: escalation stops.

    Another clinic's page answers exactly as a page that does not exist: page ids can be
    derived from a flag or alert id, and the answer must not say which clinic was paged.
    """
    if page is None or command.sender_clinic != page.intent.clinic:
        return AckRefused(RejectionCode.UNKNOWN_PAGE, f"no page {command.page_id}")
    if not sender.has_member(command.member):
        return AckRefused(RejectionCode.UNKNOWN_MEMBER, f"{command.member!r} is not a member of {sender.id!r}")
    if page.status is not PageStatus.OPEN:
        return AckRefused(RejectionCode.PAGE_NOT_OPEN, f"page {command.page_id} is {page.status}")
    return msgspec.structs.replace(
        page,
        status=PageStatus.ACKNOWLEDGED,
        acked_by=command.member,
        acked_clinic=command.sender_clinic,
        acked_at=at,
        next_at=None,
        changed_at=at,
    )


def close_for_resolved_alert(page: Page, at: datetime) -> Page | None:
    """An open page whose alert was resolved stops escalating; other pages are left as they are."""
    if page.status is not PageStatus.OPEN:
        return None
    return msgspec.structs.replace(page, status=PageStatus.RESOLVED, next_at=None, changed_at=at)


def delivery_owed(page: Page, now: datetime, grace: timedelta) -> bool:
    """An open page whose current step's delivery never started (a crash in between) and is overdue."""
    return page.status is PageStatus.OPEN and page.delivered_step != page.step and now - page.changed_at >= grace
