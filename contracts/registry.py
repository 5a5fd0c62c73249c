"""The clinic registry: who is on the hub, what they practise, and their care-team members."""

from __future__ import annotations

import enum
from datetime import date
from typing import Annotated

import msgspec

from referral_hub.contracts.base import ClinicId, MemberId, Modality, ShortText, UtcDatetime

ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM, 24 h.")]


class ChannelKind(enum.StrEnum):
    """How a member or an intake desk is reached."""

    EMAIL = "email"
    WEBHOOK = "webhook"
    SMS = "sms"


class ContactChannel(msgspec.Struct, frozen=True, kw_only=True):
    """One way to reach someone: an e-mail address, a webhook URL or a phone number."""

    kind: ChannelKind
    address: ShortText


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
    channels: tuple[ContactChannel, ...] = ()
    """In priority order: a failed delivery falls back to the next channel."""


class Rotation(msgspec.Struct, frozen=True, kw_only=True):
    """An on-call rotation: members take turns, handing off at ``handoff`` in the clinic's time zone."""

    members: tuple[MemberId, ...]
    starts_on: date
    handoff: ClockTime = "08:00"
    shift_days: Annotated[int, msgspec.Meta(ge=1, le=28)] = 7


class OnCallOverride(msgspec.Struct, frozen=True, kw_only=True):
    """Someone else covers the rotation for a while (a sick day, a swap)."""

    member: MemberId
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    reason: ShortText = ""


class WorkingHours(msgspec.Struct, frozen=True, kw_only=True):
    """When routine notifications go out at once; outside them they wait for a digest."""

    start: ClockTime = "08:00"
    end: ClockTime = "18:00"
    weekdays: tuple[Annotated[int, msgspec.Meta(ge=0, le=6)], ...] = (0, 1, 2, 3, 4)
    """Monday is 0."""


class Clinic(msgspec.Struct, frozen=True, kw_only=True):
    """A partner clinic and its members."""

    id: ClinicId
    name: ShortText
    modalities: tuple[Modality, ...]
    timezone: ShortText = "UTC"
    members: tuple[Member, ...] = ()
    oncall: Rotation | None = None
    oncall_overrides: tuple[OnCallOverride, ...] = ()
    working_hours: WorkingHours = msgspec.field(default_factory=WorkingHours)
    intake_channels: tuple[ContactChannel, ...] = ()
    """Where routine notifications (new referrals, overdue referrals) go."""

    def has_member(self, member_id: str) -> bool:
        """Whether ``member_id`` acts for this clinic."""
        return any(member.id == member_id for member in self.members)


class Registry(msgspec.Struct, frozen=True, kw_only=True):
    """The whole registry file, as loaded by ``hubctl up`` and ``hubctl registry load``."""

    clinics: tuple[Clinic, ...]
