"""Care teams and treatment plans, as pure functions.

A patient's care team is the set of clinics treating them, keyed by ``patient_ref``. An
accepted referral puts both clinics on it. A member clinic's ``plan.update`` reaches every
active member, its author included (its confirmation); plan versions are optimistic
concurrency, so two therapists editing at once cannot silently overwrite each other. A
clinic joining a team that already has members is told who they are and sent their current
plans, so it starts with the whole team rather than waiting for their next versions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

import msgspec

from referral_hub.contracts.alerts import AlertRaise, AlertResolve
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.plans import CareTeamChanged, CareTeamLeave, PlanUpdate, PlanUpdated
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.contracts.screening import ScreeningFlagged
from referral_hub.runtime.messaging.ids import derived_id
from referral_hub.runtime.messaging.outgoing import Announcement, ToInbox, echo
from referral_hub.runtime.messaging.refusals import Refusal

RECENT_COMMANDS: Final = 256
"""How many applied message ids a team remembers, to recognise redeliveries."""
RECENT_FLAGS: Final = 64
"""How many screening flags a team keeps open to disputes."""
RESOLVED_ALERTS_KEPT: Final = 64
"""Resolved or expired alerts kept for ``hubctl alerts --all``; active ones are never dropped."""


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """One clinic on a patient's care team, with its current plan."""

    clinic: str
    modality: Modality
    since: datetime
    referral_id: UUID | None = None
    active: bool = True
    left_at: datetime | None = None
    plan: PlanUpdate | None = None

    @property
    def plan_version(self) -> int:
        """The version of this clinic's current plan; 0 if it has none."""
        return self.plan.plan_version if self.plan is not None else 0


class AckRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A member's acknowledgement of an alert."""

    message_id: UUID
    member: str
    clinic: str
    at: datetime


class AlertRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An alert on the patient: its latest raise, who saw it, and whether it was resolved.

    ``recipients`` got it when it was raised; ``late_joiners`` got it when they joined the
    team later. Copies are derived from these, so a redelivery re-derives the same ones.
    """

    raised: AlertRaise
    raised_at: datetime
    recipients: tuple[str, ...]
    late_joiners: tuple[str, ...] = ()
    acks: tuple[AckRecord, ...] = ()
    resolved: AlertResolve | None = None
    resolved_at: datetime | None = None

    def active(self, at: datetime) -> bool:
        """Not resolved, and not past its ``valid_until``."""
        until = self.raised.valid_until
        return self.resolved is None and (until is None or at < until)

    def delivered_to(self, clinic: str) -> bool:
        """Whether ``clinic`` already has a copy."""
        return clinic in self.recipients or clinic in self.late_joiners


class DisputeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A clinic's objection to one match of a flag."""

    message_id: UUID
    clinic: str
    actor: str
    rule_id: str
    reason: str
    at: datetime


class FlagRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A screening flag raised for this patient, kept so its recipients can dispute it."""

    flag: ScreeningFlagged
    disputes: tuple[DisputeRecord, ...] = ()


class CareTeam(msgspec.Struct, frozen=True, kw_only=True):
    """A patient's care team, as stored in the care-teams KV bucket.

    It is also the patient's safety record: the clinical flags its referrals carried, the
    alerts clinics raised, and the screening flags the hub raised.
    """

    patient_ref: str
    members: tuple[Member, ...] = ()
    applied: tuple[UUID, ...] = ()
    clinical_flags: ClinicalFlags = msgspec.field(default_factory=ClinicalFlags)
    alerts: tuple[AlertRecord, ...] = ()
    flags: tuple[FlagRecord, ...] = ()

    def alert(self, alert_id: UUID) -> AlertRecord | None:
        """The alert ``alert_id``, active or not."""
        return next((a for a in self.alerts if a.raised.alert_id == alert_id), None)

    def active_alerts(self, at: datetime) -> tuple[AlertRecord, ...]:
        """Alerts in force at ``at``."""
        return tuple(a for a in self.alerts if a.active(at))

    def flag(self, flag_id: UUID) -> FlagRecord | None:
        """The screening flag ``flag_id``, if still kept."""
        return next((f for f in self.flags if f.flag.flag_id == flag_id), None)

    def member(self, clinic: str) -> Member | None:
        """The active membership of ``clinic``, if any."""
        return next((m for m in self.members if m.clinic == clinic and m.active), None)

    def active_clinics(self) -> tuple[str, ...]:
        """Every clinic currently on the team."""
        return tuple(m.clinic for m in self.members if m.active)


def team_key(patient_ref: str) -> str:
    """The KV key for a patient's team. KV keys are NATS subjects, so never the PHI itself."""
    return "pt." + hashlib.sha256(patient_ref.encode()).hexdigest()[:40]


def join(
    team: CareTeam | None,
    patient_ref: str,
    joiners: list[tuple[str, Modality]],
    at: datetime,
    referral_id: UUID,
) -> tuple[CareTeam, list[tuple[str, Modality]]]:
    """Add clinics that are not yet active members; returns the team and who actually joined.

    A joiner is owed every alert in force that it has not seen: it is recorded in the
    alert's ``late_joiners``, from which its copies are derived.
    """
    current = team or CareTeam(patient_ref=patient_ref)
    joined = [(clinic, modality) for clinic, modality in joiners if current.member(clinic) is None]
    if not joined:
        return current, []
    added = tuple(
        Member(clinic=clinic, modality=modality, since=at, referral_id=referral_id) for clinic, modality in joined
    )
    newcomers = [clinic for clinic, _ in joined]
    alerts = tuple(
        msgspec.structs.replace(
            record,
            late_joiners=(*record.late_joiners, *(c for c in newcomers if not record.delivered_to(c))),
        )
        if record.active(at)
        else record
        for record in current.alerts
    )
    return msgspec.structs.replace(current, members=(*current.members, *added), alerts=alerts), joined


def with_clinical_flags(team: CareTeam, flags: ClinicalFlags) -> CareTeam:
    """The team with ``flags`` added to the patient's known conditions and medications."""
    merged = ClinicalFlags(
        conditions=tuple(dict.fromkeys((*team.clinical_flags.conditions, *flags.conditions))),
        medications=tuple(dict.fromkeys((*team.clinical_flags.medications, *flags.medications))),
    )
    return team if merged == team.clinical_flags else msgspec.structs.replace(team, clinical_flags=merged)


@dataclass(frozen=True)
class TeamChanged:
    """The team after a command, and the messages for its members."""

    team: CareTeam
    announcements: list[Announcement]


def remember(team: CareTeam, message_id: UUID) -> tuple[UUID, ...]:
    """The team's recently applied message ids, with ``message_id`` added."""
    return (*team.applied, message_id)[-RECENT_COMMANDS:]


def update_plan(team: CareTeam | None, command: PlanUpdate) -> TeamChanged | Refusal:
    """Apply a plan update from a member clinic, fanning it out to every member, the author included.

    The author's copy is its confirmation: without it, a client could only wait for a
    rejection that might not come and guess success.
    """
    member = team.member(command.sender_clinic) if team is not None else None
    if team is None or member is None:
        return Refusal(RejectionCode.NOT_ON_CARE_TEAM, f"{command.sender_clinic!r} is not on this patient's care team")
    if command.plan_version != member.plan_version + 1:
        return Refusal(
            RejectionCode.STALE_PLAN_VERSION,
            f"plan_version {command.plan_version} does not follow the current version {member.plan_version}",
            current_version=member.plan_version,
        )
    members = tuple(msgspec.structs.replace(m, plan=command) if m is member else m for m in team.members)
    updated = msgspec.structs.replace(team, members=members, applied=remember(team, command.message_id))
    return TeamChanged(updated, [Announcement(plan_updated_event(command), "plan.updated", updated.active_clinics())])


def plan_updated_event(command: PlanUpdate) -> PlanUpdated:
    """The fan-out of a plan update, identical however often it is derived."""
    return PlanUpdated(
        **echo(command, "plan-updated"),
        patient_ref=command.patient_ref,
        plan_clinic=command.sender_clinic,
        modality=command.modality,
        plan_version=command.plan_version,
        goals=command.goals,
        frequency=command.frequency,
        techniques=command.techniques,
        precautions=command.precautions,
        effective_date=command.effective_date,
    )


def leave(team: CareTeam | None, command: CareTeamLeave, at: datetime) -> TeamChanged | Refusal:
    """A member clinic leaves; its plan ends and the others are told."""
    member = team.member(command.sender_clinic) if team is not None else None
    if team is None or member is None:
        return Refusal(RejectionCode.NOT_ON_CARE_TEAM, f"{command.sender_clinic!r} is not on this patient's care team")
    members = tuple(
        msgspec.structs.replace(m, active=False, left_at=at, plan=None) if m is member else m for m in team.members
    )
    updated = msgspec.structs.replace(team, members=members, applied=remember(team, command.message_id))
    cause = Cause(command.message_id, command.correlation_id, command.sender_clinic, command.actor, at)
    event = team_changed_event(cause, team, member, "left")
    return TeamChanged(updated, [Announcement(event, "careteam.changed", (*updated.active_clinics(), member.clinic))])


@dataclass(frozen=True)
class Cause:
    """The command behind a membership change: which message, who, and when."""

    message_id: UUID
    correlation_id: UUID
    clinic: str
    actor: str
    at: datetime


def team_changed_event(cause: Cause, team: CareTeam, member: Member, change: str) -> CareTeamChanged:
    """A membership change, identical however often it is derived."""
    return CareTeamChanged(
        message_id=derived_id(str(cause.message_id), f"careteam-{change}-{member.clinic}"),
        occurred_at=cause.at,
        sender_clinic=cause.clinic,
        actor=cause.actor,
        correlation_id=cause.correlation_id,
        causation_id=cause.message_id,
        patient_ref=team.patient_ref,
        clinic=member.clinic,
        change=change,
        modality=member.modality,
        since=member.since if change == "joined" else None,
    )


def replay(team: CareTeam, command: PlanUpdate | CareTeamLeave) -> list[Announcement]:
    """The announcements of a team command that was already applied (for a redelivery)."""
    if isinstance(command, PlanUpdate):
        return [Announcement(plan_updated_event(command), "plan.updated", team.active_clinics())]
    left = next((m for m in reversed(team.members) if m.clinic == command.sender_clinic and not m.active), None)
    if left is None or left.left_at is None:
        return []
    cause = Cause(command.message_id, command.correlation_id, command.sender_clinic, command.actor, left.left_at)
    event = team_changed_event(cause, team, left, "left")
    return [Announcement(event, "careteam.changed", (*team.active_clinics(), left.clinic))]


def joined_announcements(team: CareTeam, referral_id: UUID, cause: Cause) -> list[Announcement]:
    """Tell the whole team about the clinics that joined through ``referral_id``.

    Derived from the stored team, so a redelivered ``accept`` re-derives the same events.
    """
    return [
        Announcement(team_changed_event(cause, team, m, "joined"), "careteam.changed", team.active_clinics())
        for m in team.members
        if m.referral_id == referral_id and m.active
    ]


def catch_up(team: CareTeam, referral_id: UUID, cause: Cause) -> list[ToInbox]:
    """What the clinics that joined through ``referral_id`` are owed about the members already there.

    For each existing member, a ``joined`` carrying its original ``since``, then its current
    plan, if it has one; sent to the joiners alone (the others know their team), and only
    this patient's team. They are inbox copies without a domain event: nobody joined or
    changed a plan, the hub only tells a newcomer what is already so. Ids are derived from
    the accept and the joiner, so a redelivered accept re-derives the same copies.
    """
    joiners = [m.clinic for m in team.members if m.referral_id == referral_id and m.active]
    existing = [m for m in team.members if m.active and m.referral_id != referral_id and m.since <= cause.at]
    deliveries: list[ToInbox] = []
    for joiner in joiners:
        for member in existing:
            joined = msgspec.structs.replace(
                team_changed_event(cause, team, member, "joined"),
                message_id=derived_id(str(cause.message_id), f"careteam-member-{member.clinic}-for-{joiner}"),
            )
            deliveries.append(_delivery(joiner, "careteam.changed", joined))
            if member.plan is not None:
                plan = msgspec.structs.replace(
                    plan_updated_event(member.plan),
                    message_id=derived_id(str(cause.message_id), f"plan-current-{member.clinic}-for-{joiner}"),
                    causation_id=cause.message_id,
                )
                deliveries.append(_delivery(joiner, "plan.updated", plan))
    return deliveries


def _delivery(clinic: str, message_type: str, event: CareTeamChanged | PlanUpdated) -> ToInbox:
    return ToInbox(clinic, message_type, event, f"{event.message_id}/inbox/{clinic}")
