r"""Field types and the envelope every hub message shares.

Identifiers that end up in NATS subjects (clinic ids, message types) are constrained to
subject-token-safe characters here, once, so no handler has to re-validate them.

Every pattern ends in ``\Z``, never ``$``: msgspec checks a pattern with ``re.search``, where
``$`` also matches before a final newline, so ``"pt-1\n"`` would pass for a patient
reference that differs from ``"pt-1"`` yet looks the same on a screen. The JSON Schema export
writes ``$`` again (:mod:`referral_hub.contracts.compat`), which ECMA-262 reads as the end.

Fields that carry protected health information are annotated with :data:`PHI`; the
logging layer reads that marker to strip them, so adding a PHI field is a one-line change.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Final
from uuid import UUID

import msgspec

CONTRACT_VERSION: Final = 1
"""The schema version this code writes and the newest it accepts."""


class ContractError(Exception):
    """Base of every error raised by the contracts package."""


PHI: Final = msgspec.Meta(
    extra={"phi": True},
    extra_json_schema={"x-phi": True},
    description="Protected health information: never logged, never put in a subject.",
)

ClinicId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9][a-z0-9-]{1,62}\Z",
        description="Registry id of a clinic; also a NATS subject token.",
    ),
]
MemberId = Annotated[
    str,
    msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}\Z", description="Care-team member id."),
]
PatientRef = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{3,63}\Z",
        description="Pseudonymous patient reference agreed between clinics; never a name or MRN.",
    ),
    PHI,
]
UtcDatetime = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 timestamp in UTC.")]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]
ClinicalText = Annotated[str, msgspec.Meta(max_length=4000), PHI]
Icd10Code = Annotated[str, msgspec.Meta(pattern=r"^[A-TV-Z][0-9][0-9AB](\.[0-9A-Z]{1,4})?\Z")]


class Modality(enum.StrEnum):
    """The four practice types the hub connects."""

    MASSAGE = "massage"
    PHYSICAL_THERAPY = "physical_therapy"
    CHIROPRACTIC = "chiropractic"
    ACUPUNCTURE = "acupuncture"


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """The envelope shared by every hub message.

    ``type`` is the tag that selects the concrete Struct in a union; it also appears as the
    last tokens of the subject, and the hub rejects a message whose two disagree.
    """

    message_id: UUID
    schema_version: int = CONTRACT_VERSION
    occurred_at: UtcDatetime
    sender_clinic: ClinicId
    actor: MemberId
    correlation_id: UUID
    causation_id: UUID | None = None


class ClinicalFlags(msgspec.Struct, frozen=True, kw_only=True):
    """What screening needs to know about the patient, and nothing more."""

    conditions: Annotated[tuple[ShortText, ...], PHI] = ()
    medications: Annotated[tuple[ShortText, ...], PHI] = ()


def message_type(struct_type: type[Message]) -> str:
    """The wire tag of a message class, as used in subjects."""
    tag = struct_type.__struct_config__.tag
    if not isinstance(tag, str):
        msg = f"{struct_type.__name__} has no string tag"
        raise ContractError(msg)
    return tag
