"""The pure alert and screening cores: fan-out, late joiners, acks, resolution, flags and holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from referral_hub.client import new_id
from referral_hub.contracts.alerts import AlertAck, AlertRaise, AlertRaised, AlertResolve, Severity, TriggerKind
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.plans import PlanUpdate
from referral_hub.contracts.referrals import ReferralForward, ReferralState
from referral_hub.contracts.registry import Clinic, Member
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.contracts.screening import ScreeningDispute, ScreeningFlagged
from referral_hub.referrals import alerting, careteam, domain, screening
from referral_hub.referrals.careteam import CareTeam, TeamChanged
from referral_hub.runtime.messaging.refusals import Refusal
from referral_hub.screening.rules import load_rules

from .helpers import alert_raise, referral_request
from .lifecycle_model import command

AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
PATIENT = "pt-safety"
PACK = load_rules()
SLA = domain.SlaPolicy()


def team_of(*clinics: tuple[str, Modality]) -> CareTeam:
    team, _ = careteam.join(None, PATIENT, list(clinics), AT - timedelta(days=1), new_id())
    return team


TEAM = team_of(("harbor-pt", Modality.PHYSICAL_THERAPY), ("lotus-acu", Modality.ACUPUNCTURE))
LOTUS = Clinic(
    id="lotus-acu",
    name="Lotus Acupuncture",
    modalities=(Modality.ACUPUNCTURE,),
    members=(Member(id="raj.patel", name="Raj Patel", role="therapist"),),
)
RIVERSIDE = Clinic(
    id="riverside-wellness",
    name="Riverside Wellness",
    modalities=(Modality.MASSAGE, Modality.ACUPUNCTURE),
    members=(Member(id="kai.wong", name="Kai Wong", role="therapist"),),
)


def alert(clinic: str = "lotus-acu", **overrides: object) -> AlertRaise:
    return alert_raise(clinic, PATIENT, **{"occurred_at": AT, "trigger": "apixaban started", **overrides})


def ack(alert_id: UUID, clinic: str = "lotus-acu", member: str = "raj.patel") -> AlertAck:
    return AlertAck(
        message_id=new_id(),
        occurred_at=AT,
        sender_clinic=clinic,
        actor=member,
        correlation_id=new_id(),
        alert_id=alert_id,
        patient_ref=PATIENT,
        member=member,
    )


def resolve(alert_id: UUID, clinic: str = "lotus-acu") -> AlertResolve:
    return AlertResolve(
        message_id=new_id(),
        occurred_at=AT,
        sender_clinic=clinic,
        actor="raj.patel",
        correlation_id=new_id(),
        alert_id=alert_id,
        patient_ref=PATIENT,
        reason="Anticoagulant stopped",
    )


def raised(team: CareTeam = TEAM, **overrides: object) -> tuple[CareTeam, AlertRaise]:
    command_ = alert(**overrides)
    changed = alerting.raise_alert(team, command_, AT)
    assert isinstance(changed, TeamChanged), changed
    return changed.team, command_


def test_a_raised_alert_reaches_every_clinic_on_the_team() -> None:
    changed = alerting.raise_alert(TEAM, alert(), AT)

    assert isinstance(changed, TeamChanged)
    [announcement] = changed.announcements
    assert announcement.clinics == ("harbor-pt", "lotus-acu")
    assert isinstance(announcement.event, AlertRaised)
    assert announcement.event.recipients == ("harbor-pt", "lotus-acu")


def test_an_alert_for_a_patient_without_a_team_is_refused() -> None:
    refusal = alerting.raise_alert(None, alert(), AT)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.NO_CARE_TEAM


def test_an_alert_from_a_clinic_off_the_team_is_refused() -> None:
    refusal = alerting.raise_alert(TEAM, alert("summit-chiro"), AT)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.NOT_ON_CARE_TEAM


def test_an_alert_whose_validity_is_already_over_is_refused() -> None:
    refusal = alerting.raise_alert(TEAM, alert(valid_until=AT - timedelta(hours=1)), AT)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.INVALID_ALERT


def test_an_alert_naming_no_modality_is_refused() -> None:
    refusal = alerting.raise_alert(TEAM, alert(modalities=()), AT)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.INVALID_ALERT


def test_a_clinic_joining_later_is_owed_the_alerts_in_force() -> None:
    team, raise_ = raised()
    referral_id = new_id()

    joined, _ = careteam.join(team, PATIENT, [("kneadwell-massage", Modality.MASSAGE)], AT, referral_id)
    [copy] = alerting.late_joiner_announcements(joined, referral_id)

    assert copy.clinics == ("kneadwell-massage",)
    assert isinstance(copy.event, AlertRaised)
    assert copy.event.alert_id == raise_.alert_id


def test_a_resolved_alert_is_not_owed_to_a_later_joiner() -> None:
    team, raise_ = raised()
    resolved = alerting.resolve(team, resolve(raise_.alert_id), AT)
    assert isinstance(resolved, TeamChanged)
    referral_id = new_id()

    joined, _ = careteam.join(resolved.team, PATIENT, [("kneadwell-massage", Modality.MASSAGE)], AT, referral_id)

    assert alerting.late_joiner_announcements(joined, referral_id) == []


def test_an_acknowledgement_is_recorded_and_told_to_the_team() -> None:
    team, raise_ = raised()

    changed = alerting.acknowledge(team, ack(raise_.alert_id), AT, LOTUS)

    assert isinstance(changed, TeamChanged)
    [view] = alerting.view(changed.team, AT)
    assert [(a.member, a.clinic) for a in view.acknowledged_by] == [("raj.patel", "lotus-acu")]
    assert changed.announcements[0].clinics == ("harbor-pt", "lotus-acu")


def test_an_acknowledgement_by_someone_outside_the_clinic_is_refused() -> None:
    team, raise_ = raised()

    refusal = alerting.acknowledge(team, ack(raise_.alert_id, member="ben.okafor"), AT, LOTUS)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.UNKNOWN_MEMBER


def test_an_acknowledgement_by_a_clinic_off_the_team_is_refused() -> None:
    team, raise_ = raised()

    refusal = alerting.acknowledge(team, ack(raise_.alert_id, clinic="summit-chiro"), AT, LOTUS)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.NOT_ON_CARE_TEAM


def test_only_the_raising_clinic_resolves() -> None:
    team, raise_ = raised()

    refusal = alerting.resolve(team, resolve(raise_.alert_id, clinic="harbor-pt"), AT)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.WRONG_PARTY


def test_a_resolved_alert_cannot_be_acknowledged() -> None:
    team, raise_ = raised()
    resolved = alerting.resolve(team, resolve(raise_.alert_id), AT)
    assert isinstance(resolved, TeamChanged)

    refusal = alerting.acknowledge(resolved.team, ack(raise_.alert_id), AT, LOTUS)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.ALERT_NOT_ACTIVE


def test_an_unknown_alert_cannot_be_resolved() -> None:
    refusal = alerting.resolve(TEAM, resolve(new_id()), AT)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.UNKNOWN_ALERT


def test_a_referral_matching_an_absolute_rule_is_held_for_review() -> None:
    request = referral_request(clinical_flags=ClinicalFlags(conditions=("Haemophilia A",)))
    flag = screening.screen_referral(PACK, request, None, AT)

    decision = domain.screened(
        domain.decide(request, None, lambda c: LOTUS if c == "lotus-acu" else None, AT, SLA), flag
    )

    assert flag is not None
    assert flag.held
    assert "bleeding-disorder-needling" in {m.rule_id for m in flag.matches}
    assert isinstance(decision, domain.Changed)
    assert decision.referral.state == ReferralState.NEEDS_REVIEW


def test_a_referral_matching_only_relative_rules_is_flagged_but_not_held() -> None:
    request = referral_request(clinical_flags=ClinicalFlags(medications=("warfarin 5mg",)))

    flag = screening.screen_referral(PACK, request, None, AT)

    assert flag is not None
    assert not flag.held
    assert flag.highest_severity == Severity.RELATIVE
    assert flag.recipients == ("lotus-acu", "harbor-pt")


def test_a_referral_with_nothing_known_is_not_flagged() -> None:
    assert screening.screen_referral(PACK, referral_request(), None, AT) is None


def test_an_active_alert_naming_the_modality_flags_a_new_referral() -> None:
    team, raise_ = raised(severity=Severity.ABSOLUTE, trigger_kind=TriggerKind.EVENT, trigger="recent stroke")

    flag = screening.screen_referral(PACK, referral_request(patient_ref=PATIENT), team, AT)

    assert flag is not None
    assert flag.held
    assert [m.rule_id for m in flag.matches] == [f"alert:{raise_.alert_id}"]


def test_an_alert_for_another_modality_does_not_flag_the_referral() -> None:
    team, _ = raised(modalities=(Modality.CHIROPRACTIC,), trigger="recent stroke", trigger_kind=TriggerKind.EVENT)

    assert screening.screen_referral(PACK, referral_request(patient_ref=PATIENT), team, AT) is None


def test_a_held_referral_is_released_by_the_recipients_override() -> None:
    request = referral_request(clinical_flags=ClinicalFlags(conditions=("haemophilia",)))
    held = domain.screened(
        domain.decide(request, None, lambda c: LOTUS if c == "lotus-acu" else None, AT, SLA),
        screening.screen_referral(PACK, request, None, AT),
    )
    assert isinstance(held, domain.Changed)

    accepted_early = domain.decide(
        command("accept", "lotus-acu", request.referral_id), held.referral, dict.get, AT, SLA
    )
    released = domain.decide(command("override", "lotus-acu", request.referral_id), held.referral, dict.get, AT, SLA)

    assert isinstance(accepted_early, Refusal)
    assert accepted_early.code == RejectionCode.INVALID_TRANSITION
    assert isinstance(released, domain.Changed)
    assert released.referral.state == ReferralState.REQUESTED
    assert released.step.detail == "Prescriber confirmed light needling is safe"


def test_a_held_referral_announces_its_flag_with_the_request() -> None:
    request = referral_request(clinical_flags=ClinicalFlags(conditions=("haemophilia",)))
    held = domain.screened(
        domain.decide(request, None, lambda c: LOTUS if c == "lotus-acu" else None, AT, SLA),
        screening.screen_referral(PACK, request, None, AT),
    )
    assert isinstance(held, domain.Changed)

    kinds = [a.event_type for a in domain.announcements(held.referral, held.step)]

    assert kinds == ["referral.requested", "screening.flagged"]


def plan_update(techniques: tuple[str, ...]) -> PlanUpdate:
    return PlanUpdate(
        message_id=new_id(),
        occurred_at=AT,
        sender_clinic="lotus-acu",
        actor="raj.patel",
        correlation_id=new_id(),
        patient_ref=PATIENT,
        modality=Modality.ACUPUNCTURE,
        plan_version=1,
        techniques=techniques,
        effective_date=AT.date(),
    )


def test_a_plan_whose_techniques_an_alert_names_is_flagged_to_the_team() -> None:
    team, _ = raised(techniques=("electro-acupuncture",))

    flag = screening.screen_plan(PACK, plan_update(("electroacupuncture", "electro acupuncture")), team, AT)

    assert flag is not None
    assert flag.screened == "plan"
    assert flag.recipients == ("harbor-pt", "lotus-acu")


def test_a_plan_avoiding_the_alerted_techniques_is_not_flagged() -> None:
    team, _ = raised(techniques=("electro-acupuncture",))

    assert screening.screen_plan(PACK, plan_update(("cupping",)), team, AT) is None


def flagged_team() -> tuple[CareTeam, ScreeningFlagged]:
    request = referral_request(patient_ref=PATIENT, clinical_flags=ClinicalFlags(conditions=("haemophilia",)))
    flag = screening.screen_referral(PACK, request, None, AT)
    assert flag is not None
    return screening.record_flag(TEAM, flag), flag


def dispute(flag: ScreeningFlagged, clinic: str, rule_id: str) -> ScreeningDispute:
    return ScreeningDispute(
        message_id=new_id(),
        occurred_at=AT,
        sender_clinic=clinic,
        actor="raj.patel",
        correlation_id=new_id(),
        flag_id=flag.flag_id,
        patient_ref=PATIENT,
        rule_id=rule_id,
        reason="Factor levels normal since prophylaxis",
    )


def test_a_flag_recipient_may_dispute_a_match() -> None:
    team, flag = flagged_team()

    changed = screening.dispute(team, dispute(flag, "lotus-acu", "bleeding-disorder-needling"), AT)

    assert isinstance(changed, TeamChanged)
    record = changed.team.flag(flag.flag_id)
    assert record is not None
    assert [d.rule_id for d in record.disputes] == ["bleeding-disorder-needling"]
    assert changed.announcements[0].clinics == flag.recipients


def test_a_clinic_that_never_got_the_flag_cannot_dispute_it() -> None:
    team, flag = flagged_team()

    refusal = screening.dispute(team, dispute(flag, "summit-chiro", "bleeding-disorder-needling"), AT)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.UNKNOWN_FLAG


def test_a_dispute_must_name_a_match_of_the_flag() -> None:
    team, flag = flagged_team()

    refusal = screening.dispute(team, dispute(flag, "lotus-acu", "osteoporosis-manipulation"), AT)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.UNKNOWN_FLAG


def test_a_forwarded_referral_carries_its_flag_to_the_new_recipient() -> None:
    request = referral_request(clinical_flags=ClinicalFlags(medications=("warfarin",)))
    clinics = {"lotus-acu": LOTUS, "riverside-wellness": RIVERSIDE}
    created = domain.screened(
        domain.decide(request, None, clinics.get, AT, SLA), screening.screen_referral(PACK, request, None, AT)
    )
    assert isinstance(created, domain.Changed)
    forward = ReferralForward(
        message_id=new_id(),
        occurred_at=AT,
        sender_clinic="lotus-acu",
        actor="raj.patel",
        correlation_id=new_id(),
        referral_id=request.referral_id,
        patient_ref=request.patient_ref,
        to_clinic="riverside-wellness",
    )
    forwarded = domain.decide(forward, created.referral, clinics.get, AT, SLA)
    assert isinstance(forwarded, domain.Changed)

    flags = [a for a in domain.announcements(forwarded.referral, forwarded.step) if a.event_type == "screening.flagged"]

    assert [a.clinics for a in flags] == [("riverside-wellness",)]
    assert isinstance(flags[0].event, ScreeningFlagged)
    assert flags[0].event.flag_id == created.referral.screening.flag_id  # type: ignore[union-attr]
