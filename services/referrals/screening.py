"""Screening of referrals and plan updates against the patient's safety record, as pure functions.

What the patient has is the union of the clinical flags its referrals carried and the
alerts in force on its care team. What is proposed is a modality and its techniques. Two
kinds of match are reported:

- a row of the rule table (``screening/rules.json``) whose trigger appears in the findings;
- an alert in force that names the proposed modality (and, if both name techniques, one
  of the proposed techniques): a clinic's own warning outranks the absence of a rule.

An absolute match holds a referral in ``needs_review``; a plan update is applied and flagged,
since the plan's author is already treating and a hold would only hide the plan from the team.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from referral_hub.contracts.alerts import SEVERITY_RANK, Severity, TriggerKind
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.plans import PlanUpdate
from referral_hub.contracts.referrals import ReferralRequest
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.contracts.screening import ScreeningDispute, ScreeningDisputed, ScreeningFlagged, ScreeningMatch
from referral_hub.referrals.careteam import (
    RECENT_FLAGS,
    AlertRecord,
    CareTeam,
    DisputeRecord,
    FlagRecord,
    TeamChanged,
    remember,
)
from referral_hub.runtime.inbox import Announcement, echo
from referral_hub.runtime.rejecting import HUB_SENDER, Refusal, derived_id
from referral_hub.screening.rules import Findings, RulePack, Treatment, mentions, screen

SCREENER = "screening"


def findings(flags: ClinicalFlags, alerts: tuple[AlertRecord, ...]) -> Findings:
    """The patient's conditions, medications and events, from flags and alert triggers."""
    by_kind: dict[TriggerKind, list[str]] = {kind: [] for kind in TriggerKind}
    for record in alerts:
        by_kind[record.raised.trigger_kind].append(record.raised.trigger)
    return Findings(
        conditions=(*flags.conditions, *by_kind[TriggerKind.CONDITION]),
        medications=(*flags.medications, *by_kind[TriggerKind.MEDICATION]),
        events=tuple(by_kind[TriggerKind.EVENT]),
    )


def _alert_applies(record: AlertRecord, treatment: Treatment) -> bool:
    alert = record.raised
    if treatment.modality not in alert.modalities:
        return False
    if not alert.techniques or not treatment.techniques:
        return True
    return any(mentions(planned, named) for planned in treatment.techniques for named in alert.techniques)


def matches(
    pack: RulePack, flags: ClinicalFlags, alerts: tuple[AlertRecord, ...], treatment: Treatment
) -> tuple[ScreeningMatch, ...]:
    """Every rule and alert that applies to ``treatment``, most severe first."""
    found = [
        ScreeningMatch(
            rule_id=match.rule.id,
            severity=match.rule.severity,
            scope=match.rule.scope,
            trigger_kind=match.rule.trigger_kind,
            finding=match.finding,
            rationale=match.rule.rationale,
            source=pack.sources[match.rule.source],
        )
        for match in screen(pack, findings(flags, alerts), treatment)
    ]
    found += [
        ScreeningMatch(
            rule_id=f"alert:{record.raised.alert_id}",
            severity=record.raised.severity,
            scope="local" if record.raised.body_site else "systemic",
            trigger_kind=record.raised.trigger_kind,
            finding=record.raised.trigger + (f" ({record.raised.body_site})" if record.raised.body_site else ""),
            rationale=record.raised.note or f"{record.raised.sender_clinic} alerted the care team",
            source=f"alert raised by {record.raised.sender_clinic}",
            alert_id=record.raised.alert_id,
        )
        for record in alerts
        if _alert_applies(record, treatment)
    ]
    return tuple(sorted(found, key=lambda m: -SEVERITY_RANK[m.severity]))


class _Screened(msgspec.Struct, frozen=True, kw_only=True):
    """What was screened and who hears about it: the parts of a flag its subject decides."""

    source_id: UUID
    correlation_id: UUID
    patient_ref: str
    modality: Modality
    techniques: tuple[str, ...]
    recipients: tuple[str, ...]
    referral_id: UUID | None = None
    plan_clinic: str | None = None
    plan_version: int = 0


def _flag(screened: _Screened, found: tuple[ScreeningMatch, ...], at: datetime, *, held: bool) -> ScreeningFlagged:
    source = str(screened.source_id)
    return ScreeningFlagged(
        message_id=derived_id(source, "screening-flagged"),
        occurred_at=at,
        sender_clinic=HUB_SENDER,
        actor=SCREENER,
        correlation_id=screened.correlation_id,
        causation_id=screened.source_id,
        flag_id=derived_id(source, "screening-flag"),
        patient_ref=screened.patient_ref,
        screened="referral" if screened.referral_id is not None else "plan",
        referral_id=screened.referral_id,
        plan_clinic=screened.plan_clinic,
        plan_version=screened.plan_version,
        modality=screened.modality,
        techniques=screened.techniques,
        matches=found,
        highest_severity=found[0].severity,
        held=held,
        recipients=screened.recipients,
    )


def screen_referral(
    pack: RulePack, request: ReferralRequest, team: CareTeam | None, at: datetime
) -> ScreeningFlagged | None:
    """The flag for a new referral, or ``None``; ``held`` when any match is absolute."""
    team_flags = team.clinical_flags if team is not None else ClinicalFlags()
    flags = ClinicalFlags(
        conditions=(*request.clinical_flags.conditions, *team_flags.conditions),
        medications=(*request.clinical_flags.medications, *team_flags.medications),
    )
    alerts = team.active_alerts(at) if team is not None else ()
    found = matches(pack, flags, alerts, Treatment(request.modality, request.requested_techniques))
    if not found:
        return None
    screened = _Screened(
        source_id=request.message_id,
        correlation_id=request.correlation_id,
        patient_ref=request.patient_ref,
        modality=request.modality,
        techniques=request.requested_techniques,
        recipients=(request.recipient_clinic, request.sender_clinic),
        referral_id=request.referral_id,
    )
    return _flag(screened, found, at, held=any(m.severity is Severity.ABSOLUTE for m in found))


def screen_plan(pack: RulePack, plan: PlanUpdate, team: CareTeam, at: datetime) -> ScreeningFlagged | None:
    """The flag for a plan update, or ``None``; delivered to the whole team."""
    found = matches(pack, team.clinical_flags, team.active_alerts(at), Treatment(plan.modality, plan.techniques))
    if not found:
        return None
    screened = _Screened(
        source_id=plan.message_id,
        correlation_id=plan.correlation_id,
        patient_ref=plan.patient_ref,
        modality=plan.modality,
        techniques=plan.techniques,
        recipients=team.active_clinics(),
        plan_clinic=plan.sender_clinic,
        plan_version=plan.plan_version,
    )
    return _flag(screened, found, at, held=False)


def flag_announcement(flag: ScreeningFlagged) -> Announcement:
    """The flag, to every clinic it names."""
    return Announcement(flag, "screening.flagged", flag.recipients)


def record_flag(team: CareTeam | None, flag: ScreeningFlagged) -> CareTeam:
    """The team with ``flag`` kept for disputes; unchanged if it is already there."""
    current = team or CareTeam(patient_ref=flag.patient_ref)
    if current.flag(flag.flag_id) is not None:
        return current
    return msgspec.structs.replace(current, flags=(*current.flags, FlagRecord(flag=flag))[-RECENT_FLAGS:])


def dispute(team: CareTeam | None, command: ScreeningDispute, at: datetime) -> TeamChanged | Refusal:
    """A clinic that received a flag objects to one of its matches; every recipient is told."""
    record = team.flag(command.flag_id) if team is not None else None
    if team is None or record is None or command.sender_clinic not in record.flag.recipients:
        return Refusal(
            RejectionCode.UNKNOWN_FLAG, f"no screening flag {command.flag_id} was sent to {command.sender_clinic!r}"
        )
    if command.rule_id not in {m.rule_id for m in record.flag.matches}:
        return Refusal(RejectionCode.UNKNOWN_FLAG, f"flag {command.flag_id} has no match {command.rule_id!r}")
    objection = DisputeRecord(
        message_id=command.message_id,
        clinic=command.sender_clinic,
        actor=command.actor,
        rule_id=command.rule_id,
        reason=command.reason,
        at=at,
    )
    disputed = msgspec.structs.replace(record, disputes=(*record.disputes, objection))
    flags = tuple(disputed if f is record else f for f in team.flags)
    updated = msgspec.structs.replace(team, flags=flags, applied=remember(team, command.message_id))
    return TeamChanged(updated, [disputed_announcement(disputed, command)])


def disputed_announcement(record: FlagRecord, command: ScreeningDispute) -> Announcement:
    """The dispute, to every clinic that received the flag."""
    event = ScreeningDisputed(
        **echo(command, "screening-disputed"),
        flag_id=command.flag_id,
        patient_ref=command.patient_ref,
        rule_id=command.rule_id,
        reason=command.reason,
        disputed_by=command.sender_clinic,
        referral_id=record.flag.referral_id,
    )
    return Announcement(event, "screening.disputed", record.flag.recipients)


def replay_flag(team: CareTeam, source_id: UUID) -> list[Announcement]:
    """The flag a plan update ``source_id`` raised, if it raised one (for a redelivery)."""
    record = team.flag(derived_id(str(source_id), "screening-flag"))
    return [flag_announcement(record.flag)] if record is not None else []


def replay_dispute(team: CareTeam, command: ScreeningDispute) -> list[Announcement]:
    """The announcement of a dispute that was already applied (for a redelivery)."""
    record = team.flag(command.flag_id)
    return [disputed_announcement(record, command)] if record is not None else []
