"""Referral lifecycle messages, modelled on ONC 360X and the FHIR Task state machine.

Commands are what a clinic sends on ``clinic.<id>.out.referral.<verb>``; events are what
the hub delivers on ``clinic.<id>.in.referral.<past-tense>`` and records as domain events.
One ``referral_id`` is reused by every message about a referral, as 360X requires, and the
recipient reuses the initiator's ``patient_ref``.
"""

from __future__ import annotations

import enum
from typing import Annotated
from uuid import UUID

import msgspec

from referral_hub.contracts.base import (
    PHI,
    ClinicalFlags,
    ClinicalText,
    ClinicId,
    Icd10Code,
    Message,
    Modality,
    PatientRef,
    ShortText,
    UtcDatetime,
)
from referral_hub.contracts.patient import SealedDetails


class Urgency(enum.StrEnum):
    """How fast the recipient must answer; drives the SLA windows."""

    ROUTINE = "routine"
    URGENT = "urgent"


class ReferralState(enum.StrEnum):
    """Lifecycle states. Terminal ones are ``declined``, ``closed`` and ``cancelled``."""

    REQUESTED = "requested"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    SCHEDULED = "scheduled"
    NO_SHOW = "no_show"
    COMPLETED = "completed"
    CLOSED = "closed"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    NEEDS_REVIEW = "needs_review"
    """Held by screening: an absolute contraindication matched; the recipient must override or decline."""


class ConsultNote(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome summary a recipient returns when it completes a referral."""

    visits: Annotated[int, msgspec.Meta(ge=0, le=1000)]
    techniques: tuple[ShortText, ...] = ()
    response: ClinicalText = ""
    recommendations: ClinicalText = ""


class Coding(msgspec.Struct, frozen=True, kw_only=True):
    """A code of a named code system, kept as the sender's system wrote it (FHIR ``Coding``).

    The hub routes on :class:`Modality` alone; the codings travel with the referral so the
    recipient (and the sender, reading it back) sees the service exactly as it was ordered.
    """

    system: ShortText = ""
    code: ShortText = ""
    display: ShortText = ""


class ExternalIdentifier(msgspec.Struct, frozen=True, kw_only=True):
    """An identifier the sender's own system gave the referral (FHIR ``Identifier``), such as its order number."""

    system: ShortText = ""
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=200), PHI]


ServiceCodings = Annotated[tuple[Coding, ...], msgspec.Meta(max_length=20)]
ExternalIdentifiers = Annotated[tuple[ExternalIdentifier, ...], msgspec.Meta(max_length=10)]


class ReferralCommand(Message, frozen=True, kw_only=True):
    """Fields every referral command carries: the referral and the patient it is about."""

    referral_id: UUID
    patient_ref: PatientRef


class ReferralRequest(ReferralCommand, frozen=True, kw_only=True, tag="referral.request"):
    """A sender asks a recipient clinic to take on a patient."""

    recipient_clinic: ClinicId
    modality: Modality
    urgency: Urgency = Urgency.ROUTINE
    reason: ClinicalText
    icd10_codes: tuple[Icd10Code, ...] = ()
    clinical_flags: ClinicalFlags = msgspec.field(default_factory=ClinicalFlags)
    requested_techniques: tuple[ShortText, ...] = ()
    note: ClinicalText = ""
    service_codings: ServiceCodings = ()
    """The ordered service's codings as sent (the modality's among them or not)."""
    identifiers: ExternalIdentifiers = ()
    """The sender's own identifiers of the referral, returned with it and searchable."""
    patient_details: SealedDetails | None = None
    """Who the patient is, sealed by the sender to itself and the recipient; the hub cannot open it."""


class ReferralAccept(ReferralCommand, frozen=True, kw_only=True, tag="referral.accept"):
    """The recipient takes the referral; both clinics join the patient's care team."""

    note: ClinicalText = ""


class ReferralDecline(ReferralCommand, frozen=True, kw_only=True, tag="referral.decline"):
    """The recipient refuses the referral, with a coded reason."""

    reason_code: ShortText
    reason_text: ClinicalText = ""


class ReferralSchedule(ReferralCommand, frozen=True, kw_only=True, tag="referral.schedule"):
    """The recipient books (or re-books) the first appointment."""

    appointment_at: UtcDatetime
    appointment_end: UtcDatetime | None = None
    """When the appointment ends, if the recipient said."""


class ReferralNoShow(ReferralCommand, frozen=True, kw_only=True, tag="referral.no_show"):
    """The patient missed the scheduled appointment."""


class ReferralInterimNote(ReferralCommand, frozen=True, kw_only=True, tag="referral.interim_note"):
    """A consult note between accept and complete; may repeat."""

    note: ClinicalText


class ReferralComplete(ReferralCommand, frozen=True, kw_only=True, tag="referral.complete"):
    """The recipient finished the episode and reports back."""

    outcome: ConsultNote


class ReferralClose(ReferralCommand, frozen=True, kw_only=True, tag="referral.close"):
    """The sender acknowledges the outcome, closing the loop."""


class ReferralCancel(ReferralCommand, frozen=True, kw_only=True, tag="referral.cancel"):
    """Either party cancels; after scheduling a sender's cancel is only a request."""

    reason_code: ShortText
    reason_text: ClinicalText = ""


class ReferralCancelConfirm(ReferralCommand, frozen=True, kw_only=True, tag="referral.cancel_confirm"):
    """The recipient confirms a sender's cancellation request (360X handshake)."""


class ReferralForward(ReferralCommand, frozen=True, kw_only=True, tag="referral.forward"):
    """The recipient passes the referral on to a third clinic; the sender stays informed."""

    to_clinic: ClinicId
    reason: ClinicalText = ""
    patient_details: SealedDetails | None = None
    """The details re-sealed by the forwarding clinic to ``to_clinic``, so the new recipient knows who to call."""


class ReferralOverride(ReferralCommand, frozen=True, kw_only=True, tag="referral.override"):
    """The recipient releases a referral held in ``needs_review``, saying why it is safe."""

    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=4000), PHI]


class ReferralEvent(Message, frozen=True, kw_only=True):
    """Fields every referral event carries, so a clinic can follow the loop without lookups."""

    referral_id: UUID
    patient_ref: PatientRef
    state: ReferralState
    referring_clinic: ClinicId
    recipient_clinic: ClinicId
    event_number: int = 0
    """Per-recipient-clinic, gap-free inbox number; 0 where not (yet) assigned."""


class ReferralRequested(ReferralEvent, frozen=True, kw_only=True, tag="referral.requested"):
    """Delivered to the recipient: a new referral with its clinical content."""

    modality: Modality
    urgency: Urgency
    reason: ClinicalText
    icd10_codes: tuple[Icd10Code, ...] = ()
    clinical_flags: ClinicalFlags = msgspec.field(default_factory=ClinicalFlags)
    requested_techniques: tuple[ShortText, ...] = ()
    note: ClinicalText = ""
    service_codings: ServiceCodings = ()
    identifiers: ExternalIdentifiers = ()
    patient_details: SealedDetails | None = None
    """The sealed details with a copy for this recipient, as the sending or forwarding clinic sealed them."""


class ReferralTransitioned(ReferralEvent, frozen=True, kw_only=True, tag="referral.transitioned"):
    """Delivered to the other party after any later lifecycle step."""

    transition: ShortText
    detail: ClinicalText = ""
    outcome: ConsultNote | None = None
    reason_code: ShortText = ""
    appointment_at: UtcDatetime | None = None
    appointment_end: UtcDatetime | None = None
    forwarded_to: ClinicId | None = None
    bser_status: ShortText = ""
    """HL7 BSeR business-status code of the new state, for example ``5.1.1``."""


class ReferralOverdue(ReferralEvent, frozen=True, kw_only=True, tag="referral.overdue"):
    """The recipient has not accepted or declined within the urgency's window."""

    due_by: UtcDatetime


class ReferralCloseReminder(ReferralEvent, frozen=True, kw_only=True, tag="referral.close_reminder"):
    """The referral was completed but the sender has not closed the loop within its window."""

    completed_at: UtcDatetime


REFERRAL_COMMANDS: tuple[type[ReferralCommand], ...] = (
    ReferralRequest,
    ReferralAccept,
    ReferralDecline,
    ReferralSchedule,
    ReferralNoShow,
    ReferralInterimNote,
    ReferralComplete,
    ReferralClose,
    ReferralCancel,
    ReferralCancelConfirm,
    ReferralForward,
    ReferralOverride,
)
REFERRAL_EVENTS: tuple[type[ReferralEvent], ...] = (
    ReferralRequested,
    ReferralTransitioned,
    ReferralOverdue,
    ReferralCloseReminder,
)
