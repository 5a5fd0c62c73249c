"""The clinic registry: who is on the hub, what they practise, and their care-team members."""

from __future__ import annotations

import enum
import re
from datetime import date
from functools import cache
from importlib import resources
from typing import Annotated, Final
from zoneinfo import ZoneInfo

import msgspec

from referral_hub.contracts.base import ClinicId, MemberId, Modality, ShortText, UtcDatetime
from referral_hub.contracts.patient import SealingKey

CLOCK_PATTERN: Final = r"^([01][0-9]|2[0-3]):[0-5][0-9]\Z"
ClockTime = Annotated[str, msgspec.Meta(pattern=CLOCK_PATTERN, description="HH:MM, 24 h.")]
MAX_SHIFT_DAYS: Final = 28


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
    shift_days: Annotated[int, msgspec.Meta(ge=1, le=MAX_SHIFT_DAYS)] = 7


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
    sealing_keys: tuple[SealingKey, ...] = ()
    """Public keys patient details are sealed to, oldest first: the last is current, older ones verify old seals."""

    def has_member(self, member_id: str) -> bool:
        """Whether ``member_id`` acts for this clinic."""
        return any(member.id == member_id for member in self.members)

    @property
    def sealing_key(self) -> SealingKey | None:
        """The key new seals to this clinic must use, if it registered one."""
        return self.sealing_keys[-1] if self.sealing_keys else None


class Registry(msgspec.Struct, frozen=True, kw_only=True):
    """The whole registry file, as loaded by ``hubctl up`` and ``hubctl registry load``."""

    clinics: tuple[Clinic, ...]

    def __post_init__(self) -> None:
        """Refuse, as the file is read, a clinic whose roster would break paging (:class:`RosterError`).

        The message names the clinic and every problem :func:`roster_problems` finds.
        """
        for clinic in self.clinics:
            check_roster(clinic)


# --- Rosters the hub can page with -------------------------------------------------------------
#
# The schema checks shapes; these check what the schema cannot: that the time zone exists, that
# hours begin before they end, that the rotation and overrides name members. They run where a
# roster is set (``hubctl roster set``, ``hubctl oncall override``, a registry file), not where a
# stored record is read: a broken record that got into the registry anyway must still decode, so
# the notifications service can page around it (every member, every channel, for an absolute
# alert) rather than lose the clinic.

_CLOCK: Final = re.compile(CLOCK_PATTERN)


class RosterError(msgspec.ValidationError):
    """A clinic's roster the hub cannot page with: the message names the clinic and every problem."""


@cache
def known_timezones() -> frozenset[str]:
    """The IANA zone names the hub accepts: those of the pinned ``tzdata`` package, whatever the host has."""
    listing = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(listing.split())


def timezone_problem(name: str) -> str | None:
    """Why ``name`` cannot be a clinic's time zone, or ``None`` if it can."""
    if name not in known_timezones():
        return f"unknown time zone {name!r} (an IANA name such as America/New_York)"
    try:
        ZoneInfo(name)
    except (LookupError, ValueError, OSError) as exc:
        return f"time zone {name!r} cannot be loaded: {exc}"
    return None


def _clock_problem(what: str, value: str) -> str | None:
    return None if _CLOCK.match(value) else f"{what} {value!r} is not a 24-hour HH:MM time"


def override_problems(clinic: Clinic, override: OnCallOverride) -> list[str]:
    """Why ``override`` cannot stand in ``clinic``'s roster (empty: it can)."""
    problems = []
    if not clinic.has_member(override.member):
        problems.append(f"the on-call override names {override.member!r}, who is not a member")
    if override.starts_at.tzinfo is None or override.ends_at.tzinfo is None:
        problems.append(f"the on-call override for {override.member!r} has a time without a time zone")
    elif override.ends_at <= override.starts_at:
        problems.append(f"the on-call override for {override.member!r} ends before it starts")
    return problems


def roster_problems(clinic: Clinic) -> list[str]:
    """Everything in ``clinic``'s roster that would stop the hub working out whom to page, or when."""
    problems = []
    if (zone := timezone_problem(clinic.timezone)) is not None:
        problems.append(zone)
    rotation = clinic.oncall
    if rotation is not None:
        if (handoff := _clock_problem("the rotation's hand-off time", rotation.handoff)) is not None:
            problems.append(handoff)
        if not 1 <= rotation.shift_days <= MAX_SHIFT_DAYS:
            problems.append(f"a rotation shift is 1 to {MAX_SHIFT_DAYS} days, not {rotation.shift_days}")
        strangers = sorted({m for m in rotation.members if not clinic.has_member(m)})
        if strangers:
            problems.append(f"the rotation names people who are not members: {', '.join(strangers)}")
    hours = clinic.working_hours
    clocks = [
        _clock_problem(f"working hours {end}", value) for end, value in (("start", hours.start), ("end", hours.end))
    ]
    problems += [problem for problem in clocks if problem is not None]
    if not any(clocks) and hours.start >= hours.end:
        problems.append(f"working hours must begin before they end on the same day, not {hours.start} to {hours.end}")
    if not hours.weekdays:
        problems.append("working hours name no weekday, so routine notifications would wait forever")
    elif any(not 0 <= day <= 6 for day in hours.weekdays):  # noqa: PLR2004 - Monday is 0, Sunday 6
        problems.append(f"working-hours weekdays run from 0 (Monday) to 6 (Sunday), not {list(hours.weekdays)}")
    for override in clinic.oncall_overrides:
        problems += override_problems(clinic, override)
    return problems


def check_roster(clinic: Clinic) -> None:
    """Raise :class:`RosterError` naming every problem :func:`roster_problems` finds in ``clinic``."""
    problems = roster_problems(clinic)
    if problems:
        msg = f"clinic {clinic.id!r}: {'; '.join(problems)}"
        raise RosterError(msg)
