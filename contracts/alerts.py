"""Contraindication alerts a clinic raises for a shared patient."""

from __future__ import annotations

import enum
from typing import Final
from uuid import UUID

from referral_hub.contracts.base import (
    ClinicalText,
    ClinicId,
    MemberId,
    Message,
    Modality,
    PatientRef,
    ShortText,
    UtcDatetime,
)


class Severity(enum.StrEnum):
    """Absolute stops treatment; relative modifies it; local avoids a site; caution informs."""

    ABSOLUTE = "absolute"
    RELATIVE = "relative"
    LOCAL = "local"
    CAUTION = "caution"


SEVERITY_RANK: Final = {Severity.CAUTION: 0, Severity.LOCAL: 1, Severity.RELATIVE: 2, Severity.ABSOLUTE: 3}
"""Absolute stops treatment, so it outranks everything; caution only informs."""


class TriggerKind(enum.StrEnum):
    """What the alert is about."""

    CONDITION = "condition"
    MEDICATION = "medication"
    EVENT = "event"


class AlertRaise(Message, frozen=True, kw_only=True, tag="alert.raise"):
    """A care-team clinic warns the others about a patient."""

    alert_id: UUID
    patient_ref: PatientRef
    trigger_kind: TriggerKind
    trigger: ShortText
    modalities: tuple[Modality, ...]
    techniques: tuple[ShortText, ...] = ()
    severity: Severity
    body_site: ShortText = ""
    valid_from: UtcDatetime | None = None
    valid_until: UtcDatetime | None = None
    note: ClinicalText = ""


class AlertAck(Message, frozen=True, kw_only=True, tag="alert.ack"):
    """A member of a care-team clinic has seen the alert."""

    alert_id: UUID
    patient_ref: PatientRef
    member: MemberId


class AlertResolve(Message, frozen=True, kw_only=True, tag="alert.resolve"):
    """The raising clinic withdraws the alert."""

    alert_id: UUID
    patient_ref: PatientRef
    reason: ClinicalText = ""


class AlertRaised(Message, frozen=True, kw_only=True, tag="alert.raised"):
    """Delivered to every care-team clinic, including ones that join while it is active."""

    alert_id: UUID
    patient_ref: PatientRef
    raised_by: ClinicId
    trigger_kind: TriggerKind
    trigger: ShortText
    modalities: tuple[Modality, ...]
    techniques: tuple[ShortText, ...] = ()
    severity: Severity
    body_site: ShortText = ""
    valid_from: UtcDatetime | None = None
    valid_until: UtcDatetime | None = None
    note: ClinicalText = ""
    event_number: int = 0
    recipients: tuple[ClinicId, ...] = ()
    """The clinics this copy was delivered to: the whole team, or a clinic that just joined."""
    raised_at: UtcDatetime | None = None
    """When the hub accepted the alert; later copies to late joiners keep it."""


class AlertAcknowledged(Message, frozen=True, kw_only=True, tag="alert.acknowledged"):
    """Fanned out when a member acknowledges."""

    alert_id: UUID
    patient_ref: PatientRef
    member: MemberId
    member_clinic: ClinicId
    event_number: int = 0


class AlertResolved(Message, frozen=True, kw_only=True, tag="alert.resolved"):
    """Fanned out when the raising clinic resolves."""

    alert_id: UUID
    patient_ref: PatientRef
    reason: ClinicalText = ""
    event_number: int = 0
