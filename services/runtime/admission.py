"""Admission of a clinic submission: everything that can be checked without domain state.

Shared by every service that reads ``clinic.<id>.out.>``: the subject, the encoding, the
contract and version, the sender's identity (the subject, which the broker authenticates,
must agree with the payload) and that the actor is a member of the sending clinic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from referral_hub.contracts.base import ContractError, message_type
from referral_hub.contracts.codec import (
    ClinicCommand,
    MalformedJsonError,
    SchemaViolationError,
    UnknownTypeError,
    UnsupportedVersionError,
    decode_command,
)
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.runtime.rejecting import Refusal
from referral_hub.runtime.subjects import OutSubject, parse_clinic_out

ClinicLookup = Callable[[str], Clinic | None]
DECODE_REFUSALS: Final[dict[type[ContractError], RejectionCode]] = {
    MalformedJsonError: RejectionCode.MALFORMED_JSON,
    UnsupportedVersionError: RejectionCode.UNSUPPORTED_VERSION,
    UnknownTypeError: RejectionCode.UNKNOWN_MESSAGE_TYPE,
    SchemaViolationError: RejectionCode.SCHEMA_VIOLATION,
}


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
