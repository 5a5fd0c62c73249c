"""The clinic registry: who is on the hub, what they practise, and their care-team members."""

from __future__ import annotations

import enum

import msgspec

from referral_hub.contracts.base import ClinicId, MemberId, Modality, ShortText


class Role(enum.StrEnum):
    """A member's role in the clinic; escalation goes therapist, then clinical lead."""

    THERAPIST = "therapist"
    FRONT_DESK = "front_desk"
    CLINICAL_LEAD = "clinical_lead"


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """A care-team member of one clinic."""

    id: MemberId
    name: ShortText
    role: Role


class Clinic(msgspec.Struct, frozen=True, kw_only=True):
    """A partner clinic and its members."""

    id: ClinicId
    name: ShortText
    modalities: tuple[Modality, ...]
    timezone: ShortText = "UTC"
    members: tuple[Member, ...] = ()

    def has_member(self, member_id: str) -> bool:
        """Whether ``member_id`` acts for this clinic."""
        return any(member.id == member_id for member in self.members)


class Registry(msgspec.Struct, frozen=True, kw_only=True):
    """The whole registry file, as loaded by ``hubctl up`` and ``hubctl registry load``."""

    clinics: tuple[Clinic, ...]
