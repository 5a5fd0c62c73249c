"""Pure referral rules: admitting a submission and deciding what a command does.

Nothing here does I/O or reads a clock. The handler passes in the stored state, a registry
lookup and the time the hub received the command, so every decision is replayable: a
redelivered command yields exactly the same outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

import msgspec

from referral_hub.contracts.base import ContractError, message_type
from referral_hub.contracts.codec import (
    ClinicCommand,
    MalformedJsonError,
    SchemaViolationError,
    UnknownTypeError,
    UnsupportedVersionError,
    decode_command,
)
from referral_hub.contracts.referrals import ReferralRequest, ReferralRequested, ReferralState, Urgency
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.runtime.rejecting import Refusal, derived_id
from referral_hub.runtime.subjects import OutSubject, parse_clinic_out

ClinicLookup = Callable[[str], Clinic | None]
DECODE_REFUSALS: Final[dict[type[ContractError], RejectionCode]] = {
    MalformedJsonError: RejectionCode.MALFORMED_JSON,
    UnsupportedVersionError: RejectionCode.UNSUPPORTED_VERSION,
    UnknownTypeError: RejectionCode.UNKNOWN_MESSAGE_TYPE,
    SchemaViolationError: RejectionCode.SCHEMA_VIOLATION,
}


class HistoryItem(msgspec.Struct, frozen=True, kw_only=True):
    """One accepted step of a referral, with the command that caused it."""

    message_id: UUID
    transition: str
    by_clinic: str
    at: datetime
    state: ReferralState


class Referral(msgspec.Struct, frozen=True, kw_only=True):
    """A referral's durable state, as stored in the referrals KV bucket."""

    referral_id: UUID
    patient_ref: str
    referring_clinic: str
    recipient_clinic: str
    urgency: Urgency
    state: ReferralState
    request: ReferralRequest
    history: tuple[HistoryItem, ...]

    def applied(self, message_id: UUID) -> bool:
        """Whether the command ``message_id`` already changed this referral."""
        return any(item.message_id == message_id for item in self.history)


@dataclass(frozen=True)
class Admitted:
    """A submission that passed every check that does not depend on referral state."""

    command: ClinicCommand
    sender: Clinic


def admit(subject: str, data: bytes, lookup: ClinicLookup) -> Admitted | Refusal:
    """Check subject, encoding, contract, version, sender identity and actor membership.

    The sender's identity is the clinic id in the subject, which the broker authenticates;
    the payload's ``sender_clinic`` must agree with it.
    """
    out = parse_clinic_out(subject)
    if out is None:
        return Refusal(RejectionCode.INVALID_SUBJECT, f"{subject!r} is not clinic.<clinic_id>.out.<type>")
    try:
        command = decode_command(data)
    except ContractError as exc:
        return Refusal(DECODE_REFUSALS[type(exc)], str(exc))
    return _check_identity(command, out, lookup)


def _check_identity(command: ClinicCommand, out: OutSubject, lookup: ClinicLookup) -> Admitted | Refusal:
    declared = message_type(type(command))
    if declared != out.message_type:
        return Refusal(
            RejectionCode.SUBJECT_TYPE_MISMATCH,
            f"subject says {out.message_type!r} but the payload is {declared!r}",
        )
    if command.sender_clinic != out.clinic_id:
        return Refusal(
            RejectionCode.SENDER_MISMATCH,
            f"payload sender_clinic {command.sender_clinic!r} is not the authenticated clinic {out.clinic_id!r}",
        )
    sender = lookup(out.clinic_id)
    if sender is None:
        return Refusal(RejectionCode.UNKNOWN_CLINIC, f"clinic {out.clinic_id!r} is not registered")
    if not sender.has_member(command.actor):
        return Refusal(RejectionCode.UNKNOWN_MEMBER, f"{command.actor!r} is not a member of {sender.id!r}")
    return Admitted(command, sender)


@dataclass(frozen=True)
class Created:
    """A new referral to store, then announce."""

    referral: Referral


@dataclass(frozen=True)
class AlreadyApplied:
    """The command was applied before (a redelivery or a resend): re-announce, change nothing."""

    referral: Referral


def request(
    command: ReferralRequest, existing: Referral | None, lookup: ClinicLookup, received_at: datetime
) -> Created | AlreadyApplied | Refusal:
    """Decide a ``referral.request``."""
    if existing is not None:
        if existing.applied(command.message_id):
            return AlreadyApplied(existing)
        return Refusal(
            RejectionCode.DUPLICATE_REFERRAL_ID,
            f"referral {command.referral_id} already exists",
            current_state=existing.state,
        )
    recipient = lookup(command.recipient_clinic)
    if recipient is None:
        return Refusal(RejectionCode.UNKNOWN_CLINIC, f"recipient clinic {command.recipient_clinic!r} is not registered")
    if recipient.id == command.sender_clinic:
        return Refusal(RejectionCode.INVALID_RECIPIENT, "a clinic cannot refer a patient to itself")
    if command.modality not in recipient.modalities:
        return Refusal(
            RejectionCode.INVALID_RECIPIENT,
            f"{recipient.id!r} does not offer {command.modality}; it offers {', '.join(recipient.modalities)}",
        )
    created = HistoryItem(
        message_id=command.message_id,
        transition="request",
        by_clinic=command.sender_clinic,
        at=received_at,
        state=ReferralState.REQUESTED,
    )
    return Created(
        Referral(
            referral_id=command.referral_id,
            patient_ref=command.patient_ref,
            referring_clinic=command.sender_clinic,
            recipient_clinic=command.recipient_clinic,
            urgency=command.urgency,
            state=ReferralState.REQUESTED,
            request=command,
            history=(created,),
        ),
    )


def requested_event(referral: Referral) -> ReferralRequested:
    """The announcement of a new referral, identical however often it is re-derived."""
    command = referral.request
    return ReferralRequested(
        message_id=derived_id(str(command.message_id), "requested"),
        occurred_at=referral.history[0].at,
        sender_clinic=command.sender_clinic,
        actor=command.actor,
        correlation_id=command.correlation_id,
        causation_id=command.message_id,
        referral_id=referral.referral_id,
        patient_ref=referral.patient_ref,
        state=ReferralState.REQUESTED,
        referring_clinic=referral.referring_clinic,
        recipient_clinic=referral.recipient_clinic,
        modality=command.modality,
        urgency=command.urgency,
        reason=command.reason,
        icd10_codes=command.icd10_codes,
        clinical_flags=command.clinical_flags,
        requested_techniques=command.requested_techniques,
        note=command.note,
    )
