"""Pages and notifications sent to care-team members, PagerDuty-style."""

from __future__ import annotations

import enum
from uuid import UUID

from referral_hub.contracts.base import ClinicalText, ClinicId, MemberId, Message, PatientRef, ShortText, UtcDatetime


class PageSeverity(enum.StrEnum):
    """PagerDuty Events v2 severities."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class DeliveryStatus(enum.StrEnum):
    """Grafana OnCall-style delivery log states."""

    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


class NotificationQueued(Message, frozen=True, kw_only=True, tag="notification.queued"):
    """A routine notification for a clinic's intake channel (not a page)."""

    notification_id: UUID
    clinic: ClinicId
    topic: ShortText
    about_message_id: UUID
    deferred_until: UtcDatetime | None = None
    """Set when the clinic was outside working hours: it goes out in the digest at this time."""


class PageTriggered(Message, frozen=True, kw_only=True, tag="page.triggered"):
    """A page to a member; re-raises with the same dedup key update it rather than re-page."""

    page_id: UUID
    dedup_key: ShortText
    severity: PageSeverity
    clinic: ClinicId
    member: MemberId
    patient_ref: PatientRef
    escalation_level: int = 0
    cycle: int = 0
    """How many times the escalation policy has started over."""
    about_message_id: UUID | None = None
    """The alert or flag event that caused the page."""
    summary: ClinicalText = ""


class PageAck(Message, frozen=True, kw_only=True, tag="page.ack"):
    """A member acknowledges a page, stopping its escalation."""

    page_id: UUID
    member: MemberId


class PageAcknowledged(Message, frozen=True, kw_only=True, tag="page.acknowledged"):
    """Fanned out to the care team: who acknowledged."""

    page_id: UUID
    member: MemberId
    member_clinic: ClinicId
    dedup_key: ShortText = ""
    paged_clinic: ClinicId | None = None
    """The clinic whose page it was (it may differ from the acknowledging member's)."""
    event_number: int = 0


class DeliveryReceipt(Message, frozen=True, kw_only=True, tag="delivery.receipt"):
    """One delivery attempt on one channel."""

    page_id: UUID
    channel: ShortText
    status: DeliveryStatus
    attempt: int = 1
    error: ShortText = ""
    clinic: ClinicId | None = None
    member: MemberId | None = None
    """None for an intake-desk notification."""
    notification_id: UUID | None = None
    """Set instead of ``page_id`` meaning for routine notifications and digests."""


class PageSuppressed(Message, frozen=True, kw_only=True, tag="page.suppressed"):
    """A page that a silence or an inhibition kept from paging; recorded, never silent."""

    page_id: UUID
    dedup_key: ShortText
    severity: PageSeverity
    clinic: ClinicId
    patient_ref: PatientRef
    reason: ShortText
    silence_id: UUID | None = None


class AdminChanged(Message, frozen=True, kw_only=True, tag="admin.changed"):
    """An administrative change (roster, on-call override, silence), recorded for the audit log."""

    change: ShortText
    clinic: ClinicId
    detail: ShortText = ""
