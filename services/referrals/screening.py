"""Screening of referrals and plan updates against the patient's safety record, as pure functions.

What the patient has is the union of the clinical flags its referrals carried and the
alerts in force on its care team. What is proposed is a modality and its techniques. Two
kinds of match are reported:

- a row of the rule table (``screening/rules.json``) whose trigger appears in the findings;
- an alert in force that names the proposed modality (and, if both name techniques, one
  of the proposed techniques): a clinic's own warning outranks the absence of a rule.

An absolute match holds a referral in ``needs_review``; a plan update is applied and flagged,
since the plan's author is already treating and a hold would only hide the plan from the team.

Minimum necessary. The care team's record (its shared flags and its members' alerts) is
other clinics' PHI. Screening still uses all of it, so a referral to a modality the team
has an absolute alert for is held whoever sends it; but a referral party that is not on the
team (the requester or the recipient) learns only that the team holds a contraindication
relevant to the modality, and its severity (:func:`outside_copy`). The team is told its
record was screened, by whom, for whom (:func:`care_team_notice`), and its answer (an
override or a decline, :func:`team_answers`) is what the parties see. A match that came
from the referral itself is the requester's own content, which the recipient receives with
the referral anyway, so it stays whole.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from referral_hub.contracts.alerts import SEVERITY_RANK, Severity, TriggerKind
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.plans import PlanUpdate
from referral_hub.contracts.referrals import ReferralCommand, ReferralDecline, ReferralOverride, ReferralRequest
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.contracts.screening import (
    FlagAudience,
    ScreeningDispute,
    ScreeningDisputed,
    ScreeningFlagged,
    ScreeningMatch,
)
from referral_hub.referrals.careteam import (
    RECENT_FLAGS,
    AlertRecord,
    CareTeam,
    DisputeRecord,
    FlagRecord,
    TeamChanged,
    remember,
)
from referral_hub.runtime.messaging.ids import derived_id
from referral_hub.runtime.messaging.outgoing import Announcement, echo
from referral_hub.runtime.messaging.refusals import HUB_SENDER, Refusal
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


def _team_contacts(team: CareTeam | None) -> tuple[str, ...]:
    """Whom to ask about the team's shared record: its clinics now, else those that were on it."""
    if team is None:
        return ()
    return team.active_clinics() or tuple(dict.fromkeys(m.clinic for m in team.members))


def matches(
    pack: RulePack, own: ClinicalFlags, team: CareTeam | None, treatment: Treatment, at: datetime
) -> tuple[ScreeningMatch, ...]:
    """Every rule and alert that applies to ``treatment``, most severe first.

    ``own`` is what the screened referral itself says about the patient; ``team`` is the
    patient's record. A match found in ``own`` names no contact; one found only in the
    team's record names the care-team clinics to ask about it (its ``contact_clinics``).
    """
    team_flags = team.clinical_flags if team is not None else ClinicalFlags()
    alerts = team.active_alerts(at) if team is not None else ()
    flags = ClinicalFlags(
        conditions=(*own.conditions, *team_flags.conditions),
        medications=(*own.medications, *team_flags.medications),
    )
    own_findings = {match.rule.id: match.finding for match in screen(pack, findings(own, ()), treatment)}

    def contacts(finding: str) -> tuple[str, ...]:
        raisers = tuple(dict.fromkeys(a.raised.sender_clinic for a in alerts if a.raised.trigger == finding))
        return raisers or _team_contacts(team)

    found = [
        ScreeningMatch(
            rule_id=match.rule.id,
            severity=match.rule.severity,
            scope=match.rule.scope,
            trigger_kind=match.rule.trigger_kind,
            finding=own_findings.get(match.rule.id, match.finding),
            rationale=match.rule.rationale,
            source=pack.sources[match.rule.source],
            contact_clinics=() if match.rule.id in own_findings else contacts(match.finding),
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
            contact_clinics=(record.raised.sender_clinic,),
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
    care_team: tuple[str, ...]
    referral_id: UUID | None = None
    referring_clinic: str | None = None
    recipient_clinic: str | None = None
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
        referring_clinic=screened.referring_clinic,
        recipient_clinic=screened.recipient_clinic,
        care_team=screened.care_team,
    )


def screen_referral(
    pack: RulePack, request: ReferralRequest, team: CareTeam | None, at: datetime
) -> ScreeningFlagged | None:
    """The flag for a new referral, or ``None``; ``held`` when any match is absolute.

    Whoever sends it, the referral is screened against everything known about the patient:
    the hold protects the patient. Who may see which match is decided when it is announced
    (:func:`flag_announcements`), from ``care_team`` and each match's ``contact_clinics``.
    """
    found = matches(pack, request.clinical_flags, team, Treatment(request.modality, request.requested_techniques), at)
    if not found:
        return None
    screened = _Screened(
        source_id=request.message_id,
        correlation_id=request.correlation_id,
        patient_ref=request.patient_ref,
        modality=request.modality,
        techniques=request.requested_techniques,
        recipients=(request.recipient_clinic, request.sender_clinic),
        care_team=team.active_clinics() if team is not None else (),
        referral_id=request.referral_id,
        referring_clinic=request.sender_clinic,
        recipient_clinic=request.recipient_clinic,
    )
    return _flag(screened, found, at, held=any(m.severity is Severity.ABSOLUTE for m in found))


def screen_plan(pack: RulePack, plan: PlanUpdate, team: CareTeam, at: datetime) -> ScreeningFlagged | None:
    """The flag for a plan update, or ``None``; delivered to the whole team."""
    found = matches(pack, ClinicalFlags(), team, Treatment(plan.modality, plan.techniques), at)
    if not found:
        return None
    screened = _Screened(
        source_id=plan.message_id,
        correlation_id=plan.correlation_id,
        patient_ref=plan.patient_ref,
        modality=plan.modality,
        techniques=plan.techniques,
        recipients=team.active_clinics(),
        care_team=team.active_clinics(),
        plan_clinic=plan.sender_clinic,
        plan_version=plan.plan_version,
    )
    return _flag(screened, found, at, held=False)


def from_care_team(match: ScreeningMatch) -> bool:
    """Whether ``match`` came from the care team's record rather than from what was screened."""
    return bool(match.contact_clinics)


def minimal_match(match: ScreeningMatch) -> ScreeningMatch:
    """``match`` without a word of any clinic's text: rule id, severity, scope, trigger kind, whom to ask.

    A rule of the hub's table keeps its rationale and citation, which are public and follow
    from its id; an alert keeps neither its trigger, nor its body site, nor its note.
    """
    if match.alert_id is None:
        return msgspec.structs.replace(match, finding="")
    return msgspec.structs.replace(
        match,
        finding="",
        rationale="An alert in force on the patient's care team concerns this modality; ask the clinic that raised it.",
        source=f"alert raised by {', '.join(match.contact_clinics)}",
    )


CARE_TEAM_ACTOR = "care-team"
"""Who answered, as a referral party off the care team is told: the team, never its clinic or member."""


def team_answers(flag: ScreeningFlagged | None, command: ReferralCommand) -> bool:
    """Whether ``command`` is the care team's answer to a hold it alone can judge.

    The referral was held by a match from the team's record while one of its parties is off
    the team: that party is told only that the team holds a contraindication, so the question
    goes to the team (the ``care_team`` notice names the referral), and a clinic of the team
    may override the hold or decline the referral. Anything else from a non-party is answered
    as if the referral did not exist.
    """
    if flag is None or not isinstance(command, ReferralOverride | ReferralDecline):
        return False
    held_by_team = flag.held and any(from_care_team(m) and m.severity is Severity.ABSOLUTE for m in flag.matches)
    parties = tuple(c for c in (flag.referring_clinic, flag.recipient_clinic) if c is not None)
    return (
        held_by_team
        and bool(outsiders(flag, parties))
        and command.sender_clinic in flag.care_team
        and command.patient_ref == flag.patient_ref
    )


def outsiders(flag: ScreeningFlagged, clinics: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``clinics`` that may not see ``flag``'s care-team matches whole.

    Nobody, when no match came from the care team's record (nothing of another clinic's is
    in it); otherwise every clinic that was not on the team when the patient was screened.
    """
    if not any(from_care_team(m) for m in flag.matches):
        return ()
    return tuple(c for c in clinics if c not in flag.care_team)


def outside_copy(flag: ScreeningFlagged, clinics: tuple[str, ...], message_id: UUID) -> ScreeningFlagged:
    """The flag for ``clinics``, which are not on the patient's care team: the team's matches as one fact.

    The matches that came from the team's record are left out; ``care_team_severity`` says the
    team holds a contraindication relevant to this modality, and how severe. A rule id names a
    condition or a medication, an alert id can be probed, the team's clinic ids say who treats
    the patient: an outsider needs none of them, since the team answers the hold itself. The
    referral's own matches stay whole (the recipient gets the referral anyway), and so do the
    hold, the modality and the referral, so the recipient knows what is pending.
    """
    team = [m.severity for m in flag.matches if from_care_team(m)]
    return msgspec.structs.replace(
        flag,
        message_id=message_id,
        audience=FlagAudience.OUTSIDE_CARE_TEAM,
        recipients=clinics,
        care_team=(),
        matches=tuple(m for m in flag.matches if not from_care_team(m)),
        care_team_severity=max(team, key=lambda s: SEVERITY_RANK[s]) if team else None,
    )


def care_team_notice(flag: ScreeningFlagged, clinics: tuple[str, ...]) -> ScreeningFlagged:
    """Tells the care team ``clinics`` that a referral involving an outside clinic was screened against its record.

    Who referred to whom, for which modality, which rules matched and whether the referral is
    held: none of the referral's free text (findings, requested techniques) is needed for that.
    """
    return msgspec.structs.replace(
        flag,
        message_id=derived_id(str(flag.message_id), "care-team-notice"),
        audience=FlagAudience.CARE_TEAM,
        recipients=clinics,
        techniques=(),
        matches=tuple(minimal_match(m) for m in flag.matches),
    )


def flag_announcements(flag: ScreeningFlagged) -> list[Announcement]:
    """The flag, to every clinic it names, each getting what it may see.

    When a referral party is not on the patient's care team and a match came from the
    team's record, the parties on the team get the whole flag, those off it the
    :func:`outside_copy`, and the team's other clinics the :func:`care_team_notice`.
    Otherwise everyone it names gets the whole flag, as the team does for a plan.
    """
    outside = outsiders(flag, flag.recipients)
    if not outside:
        return [Announcement(flag, "screening.flagged", flag.recipients)]
    told: list[Announcement] = []
    inside = tuple(c for c in flag.recipients if c not in outside)
    if inside:
        told.append(Announcement(msgspec.structs.replace(flag, recipients=inside), "screening.flagged", inside))
    copy = outside_copy(flag, outside, derived_id(str(flag.message_id), "outside-care-team"))
    told.append(Announcement(copy, "screening.flagged", outside))
    team = tuple(c for c in flag.care_team if c not in flag.recipients)
    if team:
        told.append(Announcement(care_team_notice(flag, team), "screening.flagged", team))
    return told


def forwarded_flag(flag: ScreeningFlagged, clinic: str, message_id: UUID, causation_id: UUID) -> Announcement:
    """The referral's flag for the clinic it was forwarded to: whole if it may see it all, else minimally."""
    if outsiders(flag, (clinic,)):
        copy = outside_copy(flag, (clinic,), message_id)
    else:
        copy = msgspec.structs.replace(flag, message_id=message_id)
    return Announcement(msgspec.structs.replace(copy, causation_id=causation_id), "screening.flagged", (clinic,))


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
    return flag_announcements(record.flag) if record is not None else []


def replay_dispute(team: CareTeam, command: ScreeningDispute) -> list[Announcement]:
    """The announcement of a dispute that was already applied (for a redelivery)."""
    record = team.flag(command.flag_id)
    return [disputed_announcement(record, command)] if record is not None else []
