"""What pages, notifications and digests say, and the events that record them. Pure.

Everything here is a function of its arguments: the clock's reading comes in as ``at``, ids
are derived from seeds, so a step redelivered after a crash renders the same ids again.
Channels send an :class:`Outbound`; the handlers publish the events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict
from uuid import UUID

from referral_hub.contracts.paging import (
    DeliveryReceipt,
    DeliveryStatus,
    PageSeverity,
    PageSuppressed,
    PageTriggered,
)
from referral_hub.notifications.domain import SERVICE
from referral_hub.notifications.page_rules import PAGE_SEVERITY, Page
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.messaging.ids import derived_id
from referral_hub.runtime.messaging.refusals import HUB_SENDER

RECEIPT_ERROR_CHARS = 200
"""A receipt carries this much of an attempt's error: enough to act on, never a whole answer."""


@dataclass(frozen=True)
class Outbound:
    """What a page or notification says, rendered once for every channel."""

    subject: str
    text: str
    payload: dict[str, object]
    notification_id: str = ""
    """Receivers' de-duplication key, the same across retries; empty: each delivery draws one."""
    clinic: str = ""
    """Whose webhook secrets sign it; empty: the payload's ``clinic``."""

    @property
    def signing_clinic(self) -> str:
        """The clinic whose webhook secrets sign this message."""
        return self.clinic or str(self.payload.get("clinic", ""))


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt's outcome, for a ``delivery.receipt``."""

    channel: str
    """A :class:`ChannelKind`, or ``none`` when the member has no channel at all."""
    attempt: int
    status: DeliveryStatus
    error: str = ""


@dataclass(frozen=True)
class Addressee:
    """Whose delivery a receipt reports: one member at one page step, or an intake desk."""

    delivery_id: UUID
    seed: str
    clinic: str
    correlation_id: UUID
    member: str | None = None
    notification_id: UUID | None = None


class PageEnvelope(TypedDict):
    """What every event about a page says: from the hub, caused by the alert or flag, which page."""

    message_id: UUID
    occurred_at: datetime
    sender_clinic: str
    actor: str
    correlation_id: UUID
    causation_id: UUID
    page_id: UUID
    dedup_key: str
    severity: PageSeverity
    clinic: str
    patient_ref: str


def page_envelope(page: Page, message_id: UUID, at: datetime) -> PageEnvelope:
    """The shared fields of ``page.triggered`` and ``page.suppressed``."""
    intent = page.intent
    return {
        "message_id": message_id,
        "occurred_at": at,
        "sender_clinic": HUB_SENDER,
        "actor": SERVICE,
        "correlation_id": intent.about_message_id,
        "causation_id": intent.about_message_id,
        "page_id": page.page_id,
        "dedup_key": page.dedup_key,
        "severity": PAGE_SEVERITY[intent.severity],
        "clinic": intent.clinic,
        "patient_ref": intent.patient_ref,
    }


def render(page: Page, level: int) -> Outbound:
    """The page as every channel sends it."""
    intent = page.intent
    severity = PAGE_SEVERITY[intent.severity]
    ack = f"Acknowledge: hubctl page ack {page.page_id} --member <you> --clinic {intent.clinic}"
    return Outbound(
        subject=f"[{severity.upper()}] Referral Hub page for {intent.clinic}",
        text=f"{intent.summary}\n\n{ack}\n",
        payload={
            "type": "page",
            "page_id": str(page.page_id),
            "dedup_key": page.dedup_key,
            "severity": str(severity),
            "clinic": intent.clinic,
            "patient_ref": intent.patient_ref,
            "summary": intent.summary,
            "escalation_level": level,
            "ack_subject": subjects.clinic_out(intent.clinic, "page.ack"),
        },
    )


def routine(clinic: str, topic: str, text: str, notification_id: UUID) -> Outbound:
    """A routine notification (or a digest of them) as a clinic's intake channels get it."""
    return Outbound(
        subject=f"Referral Hub: {topic}",
        text=text,
        payload={"type": "notification", "topic": topic, "clinic": clinic, "text": text},
        notification_id=str(notification_id),
    )


def member_seed(page: Page, member: str) -> str:
    """One member at one page step: the seed of every id its delivery carries."""
    return f"{page.page_id}/{page.step}/{member}"


def triggered(page: Page, member: str, at: datetime) -> PageTriggered:
    """``page.triggered``: this step of the page goes to ``member``."""
    intent = page.intent
    return PageTriggered(
        **page_envelope(page, derived_id(member_seed(page, member), "page-triggered"), at),
        member=member,
        escalation_level=page.level,
        cycle=page.cycle,
        about_message_id=intent.about_message_id,
        summary=intent.summary,
    )


def suppressed(page: Page) -> PageSuppressed:
    """``page.suppressed``: a silence or an inhibition kept this generation of the page quiet."""
    return PageSuppressed(
        **page_envelope(page, derived_id(f"{page.page_id}/{page.generation}", "page-suppressed"), page.opened_at),
        reason=page.suppressed_reason,
        silence_id=page.silence_id,
    )


def receipt(to: Addressee, attempt: Attempt, at: datetime) -> DeliveryReceipt:
    """``delivery.receipt`` for one attempt; its id is derived, so a redelivered step repeats it."""
    return DeliveryReceipt(
        message_id=derived_id(f"{to.seed}/{attempt.channel}/{attempt.attempt}", "receipt"),
        occurred_at=at,
        sender_clinic=HUB_SENDER,
        actor=SERVICE,
        correlation_id=to.correlation_id,
        causation_id=to.correlation_id,
        page_id=to.delivery_id,
        channel=attempt.channel,
        status=attempt.status,
        attempt=attempt.attempt,
        error=attempt.error[:RECEIPT_ERROR_CHARS],
        clinic=to.clinic,
        member=to.member,
        notification_id=to.notification_id,
    )
