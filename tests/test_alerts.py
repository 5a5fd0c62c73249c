"""Contraindication alerts and screening against a real nats-server, through every service."""

from __future__ import annotations

import json
from uuid import UUID

from prometheus_client import REGISTRY

from referral_hub.client import InboxItem, new_id, utc_now
from referral_hub.contracts.alerts import (
    AlertAck,
    AlertAcknowledged,
    AlertRaise,
    AlertRaised,
    AlertResolve,
    AlertResolved,
    Severity,
    TriggerKind,
)
from referral_hub.contracts.audit import AuditOutcome
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.codec import decode_hub_message
from referral_hub.contracts.paging import PageSeverity, PageTriggered
from referral_hub.contracts.referrals import ReferralRequest, ReferralRequested, ReferralState, ReferralTransitioned
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.contracts.screening import ScreeningDispute, ScreeningDisputed, ScreeningFlagged
from referral_hub.runtime.jetstream import streams
from referral_hub.screening.rules import Rule, load_rules

from .helpers import (
    RunningHub,
    alert_raise,
    audit_entries,
    eventually,
    hubctl,
    referral_request,
    stream_messages,
    wait_idle,
)
from .lifecycle_model import MEMBERS, command
from .test_lifecycle import plan

PT, ACU, MASSAGE = "harbor-pt", "lotus-acu", "kneadwell-massage"
PATIENT = "pt-alerts"


async def inbox(hub: RunningHub, clinic: str) -> list[InboxItem]:
    return [item async for item in (await hub.clinic(clinic)).inbox()]


async def messages_of(hub: RunningHub, clinic: str, kind: type) -> list:
    return [item.message for item in await inbox(hub, clinic) if isinstance(item.message, kind)]


async def team_through_referral(hub: RunningHub, sender: str, recipient: str, modality: Modality) -> UUID:
    """``sender`` refers the patient to ``recipient``, who accepts: both are on the care team."""
    request = referral_request(sender=sender, recipient=recipient, patient_ref=PATIENT, modality=modality)
    await (await hub.clinic(sender)).send_and_confirm(request)
    answer = await (await hub.clinic(recipient)).send_and_confirm(
        command("accept", recipient, request.referral_id, PATIENT)
    )
    assert isinstance(answer.message, ReferralTransitioned), answer.message
    return request.referral_id


def anticoagulant_alert(clinic: str = ACU, **overrides: object) -> AlertRaise:
    return alert_raise(clinic, PATIENT, **{"note": "Started apixaban for atrial fibrillation", **overrides})


def ack(alert_id: UUID, clinic: str, member: str) -> AlertAck:
    return AlertAck(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=clinic,
        actor=member,
        correlation_id=new_id(),
        alert_id=alert_id,
        patient_ref=PATIENT,
        member=member,
    )


def resolve(alert_id: UUID, clinic: str) -> AlertResolve:
    return AlertResolve(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=clinic,
        actor=MEMBERS[clinic],
        correlation_id=new_id(),
        alert_id=alert_id,
        patient_ref=PATIENT,
        reason="Apixaban stopped",
    )


async def test_an_alert_reaches_the_team_and_later_joiners(hub: RunningHub) -> None:
    await team_through_referral(hub, PT, ACU, Modality.ACUPUNCTURE)
    raise_ = anticoagulant_alert()
    confirmed = await (await hub.clinic(ACU)).send_and_confirm(raise_)
    assert isinstance(confirmed.message, AlertRaised), confirmed.message

    await team_through_referral(hub, PT, MASSAGE, Modality.MASSAGE)
    await wait_idle(hub.connection)

    for clinic in (PT, ACU, MASSAGE):
        alerts = await messages_of(hub, clinic, AlertRaised)
        assert [(a.alert_id, a.trigger) for a in alerts] == [(raise_.alert_id, "apixaban")], clinic
    pages = await eventually(lambda: pages_for(hub, raise_.alert_id, expected=2))
    assert sorted(p.clinic for p in pages) == [PT, MASSAGE]
    assert {p.severity for p in pages} == {PageSeverity.ERROR}


async def all_alerts(hub: RunningHub) -> list[AlertRaised]:
    return [alert for clinic in (PT, ACU, MASSAGE) for alert in await messages_of(hub, clinic, AlertRaised)]


async def pages_for(hub: RunningHub, alert_id: UUID, expected: int) -> list[PageTriggered]:
    alert_ids = {a.message_id for a in await all_alerts(hub) if a.alert_id == alert_id}
    found = []
    for subject, data in await stream_messages(hub.connection, streams.HUB_EVENTS):
        if subject.endswith("page.triggered"):
            message = decode_hub_message(data)
            assert isinstance(message, PageTriggered)
            if message.about_message_id in alert_ids:
                found.append(message)
    return found if len(found) >= expected else []


async def test_a_referral_to_a_modality_an_alert_names_is_flagged_to_both_sides_each_as_much_as_it_may_see(
    hub: RunningHub,
) -> None:
    await team_through_referral(hub, PT, ACU, Modality.ACUPUNCTURE)
    raise_ = anticoagulant_alert()
    await (await hub.clinic(ACU)).send_and_confirm(raise_)

    request = referral_request(sender=PT, recipient=MASSAGE, patient_ref=PATIENT, modality=Modality.MASSAGE)
    await (await hub.clinic(PT)).send_and_confirm(request)
    await wait_idle(hub.connection)

    [on_team] = await messages_of(hub, PT, ScreeningFlagged)
    [outside] = await messages_of(hub, MASSAGE, ScreeningFlagged)

    assert on_team.referral_id == outside.referral_id == request.referral_id
    assert {f"alert:{raise_.alert_id}", "anticoag-deep-massage"} <= {m.rule_id for m in on_team.matches}
    assert outside.matches == ()
    assert outside.care_team_severity is not None
    assert not on_team.held
    assert not outside.held


async def test_acknowledgement_and_resolution_reach_the_team_and_show_in_hubctl(hub: RunningHub) -> None:
    await team_through_referral(hub, PT, ACU, Modality.ACUPUNCTURE)
    raise_ = anticoagulant_alert()
    await (await hub.clinic(ACU)).send_and_confirm(raise_)

    acked = await (await hub.clinic(PT)).send_and_confirm(ack(raise_.alert_id, PT, "ana.ruiz"))
    shown = await alerts_cli(hub, "--json")
    wrong_resolver = await (await hub.clinic(PT)).send_and_confirm(resolve(raise_.alert_id, PT))
    resolved = await (await hub.clinic(ACU)).send_and_confirm(resolve(raise_.alert_id, ACU))
    late_ack = await (await hub.clinic(PT)).send_and_confirm(ack(raise_.alert_id, PT, "ben.okafor"))
    await wait_idle(hub.connection)

    assert isinstance(acked.message, AlertAcknowledged)
    assert [(a["member"], a["clinic"]) for a in shown[0]["acknowledged_by"]] == [("ana.ruiz", PT)]
    assert isinstance(wrong_resolver.message, Rejection)
    assert wrong_resolver.message.code == RejectionCode.WRONG_PARTY
    assert isinstance(resolved.message, AlertResolved)
    assert isinstance(late_ack.message, Rejection)
    assert late_ack.message.code == RejectionCode.ALERT_NOT_ACTIVE
    for clinic in (PT, ACU):
        assert [m.member for m in await messages_of(hub, clinic, AlertAcknowledged)] == ["ana.ruiz"]
        assert [m.alert_id for m in await messages_of(hub, clinic, AlertResolved)] == [raise_.alert_id]
    assert await alerts_cli(hub, "--json") == []
    assert [a["status"] for a in await alerts_cli(hub, "--json", "--all")] == ["resolved"]


async def alerts_cli(hub: RunningHub, *flags: str) -> list[dict]:
    result = await hubctl("alerts", "--patient", PATIENT, "--nats-url", hub.url, *flags)
    assert result.status == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_an_absolute_match_holds_the_referral_until_the_recipient_overrides(hub: RunningHub) -> None:
    request = referral_request(
        sender=PT, recipient=ACU, patient_ref=PATIENT, clinical_flags=ClinicalFlags(conditions=("haemophilia A",))
    )
    holds_before = REGISTRY.get_sample_value("hub_screening_holds_total") or 0.0
    requested = await (await hub.clinic(PT)).send_and_confirm(request)
    acupuncturist = await hub.clinic(ACU)

    early_accept = await acupuncturist.send_and_confirm(command("accept", ACU, request.referral_id, PATIENT))
    released = await acupuncturist.send_and_confirm(command("override", ACU, request.referral_id, PATIENT))
    accepted = await acupuncturist.send_and_confirm(command("accept", ACU, request.referral_id, PATIENT))
    await wait_idle(hub.connection)

    assert isinstance(requested.message, ReferralRequested)
    assert requested.message.state == ReferralState.NEEDS_REVIEW
    [flag] = await messages_of(hub, PT, ScreeningFlagged)
    assert flag.held
    assert flag.highest_severity == Severity.ABSOLUTE
    assert isinstance(early_accept.message, Rejection)
    assert (early_accept.message.code, early_accept.message.current_state) == (
        RejectionCode.INVALID_TRANSITION,
        "needs_review",
    )
    assert isinstance(released.message, ReferralTransitioned)
    assert (released.message.transition, released.message.state) == ("override", "requested")
    assert isinstance(accepted.message, ReferralTransitioned)
    assert accepted.message.state == ReferralState.ACCEPTED
    assert REGISTRY.get_sample_value("hub_screening_holds_total") == holds_before + 1
    overrides = [e for e in await audit_entries(hub.connection) if e.message_type == "referral.override"]
    assert [(e.clinic, e.outcome) for e in overrides] == [(ACU, AuditOutcome.SUCCESS)]


async def test_a_flag_recipient_disputes_a_match_and_both_sides_hear_of_it(hub: RunningHub) -> None:
    request = referral_request(
        sender=PT, recipient=ACU, patient_ref=PATIENT, clinical_flags=ClinicalFlags(medications=("warfarin",))
    )
    await (await hub.clinic(PT)).send_and_confirm(request)
    await wait_idle(hub.connection)
    [flag] = await messages_of(hub, ACU, ScreeningFlagged)
    rule_id = flag.matches[0].rule_id

    disputed = await (await hub.clinic(ACU)).send_and_confirm(
        ScreeningDispute(
            message_id=new_id(),
            occurred_at=utc_now(),
            sender_clinic=ACU,
            actor="mei.chen",
            correlation_id=new_id(),
            flag_id=flag.flag_id,
            patient_ref=PATIENT,
            rule_id=rule_id,
            reason="INR stable; prescriber approves fine-gauge needling",
        )
    )
    await wait_idle(hub.connection)

    assert isinstance(disputed.message, ScreeningDisputed)
    for clinic in (PT, ACU):
        [told] = await messages_of(hub, clinic, ScreeningDisputed)
        assert (told.rule_id, told.disputed_by, told.referral_id) == (rule_id, ACU, request.referral_id)
    audited = [e for e in await audit_entries(hub.connection) if e.message_type == "screening.dispute"]
    assert [(e.clinic, e.member) for e in audited] == [(ACU, "mei.chen")]


async def test_a_plan_update_an_alert_warns_against_is_flagged_to_the_team(hub: RunningHub) -> None:
    await team_through_referral(hub, PT, ACU, Modality.ACUPUNCTURE)
    await (await hub.clinic(PT)).send_and_confirm(
        anticoagulant_alert(
            PT,
            trigger_kind=TriggerKind.CONDITION,
            trigger="pacemaker fitted",
            modalities=(Modality.ACUPUNCTURE,),
            techniques=(),
            severity=Severity.ABSOLUTE,
        )
    )
    await (await hub.clinic(ACU)).send_and_confirm(plan(ACU, 1, PATIENT))
    await wait_idle(hub.connection)

    for clinic in (PT, ACU):
        [flag] = await messages_of(hub, clinic, ScreeningFlagged)
        assert (flag.screened, flag.plan_clinic, flag.plan_version) == ("plan", ACU, 1)
        assert flag.highest_severity == Severity.ABSOLUTE
        assert "pacemaker-electroacupuncture" not in {m.rule_id for m in flag.matches}


CLINIC_FOR = {
    Modality.PHYSICAL_THERAPY: PT,
    Modality.ACUPUNCTURE: ACU,
    Modality.MASSAGE: MASSAGE,
    Modality.CHIROPRACTIC: "summit-chiro",
}


def rule_referral(rule: Rule, modality: Modality, techniques: tuple[str, ...]) -> ReferralRequest:
    finding = f"Patient reports {rule.terms[0]} since last month"
    flags = (
        ClinicalFlags(medications=(finding,))
        if rule.trigger_kind is TriggerKind.MEDICATION
        else ClinicalFlags(conditions=(finding,))
    )
    recipient = CLINIC_FOR[modality]
    sender = "summit-chiro" if recipient != "summit-chiro" else PT
    return referral_request(
        sender=sender,
        actor=MEMBERS[sender],
        recipient=recipient,
        patient_ref=f"pt-rule-{rule.id}"[:60],
        modality=modality,
        clinical_flags=flags,
        requested_techniques=techniques,
    )


def near_miss(rule: Rule) -> ReferralRequest:
    """The same finding, but for techniques the rule does not cover, or another modality."""
    if rule.techniques:
        return rule_referral(rule, rule.modality, ("gentle range of motion exercises",))
    return rule_referral(rule, next(m for m in Modality if m is not rule.modality), ())


async def test_every_rule_flags_a_referral_through_the_hub_and_its_near_miss_does_not(hub: RunningHub) -> None:
    rules = load_rules().rules
    triggers = {rule.id: rule_referral(rule, rule.modality, rule.techniques[:1]) for rule in rules}
    misses = {rule.id: near_miss(rule) for rule in rules}
    for request in (*triggers.values(), *misses.values()):
        await (await hub.clinic(request.sender_clinic)).send(request)
    await wait_idle(hub.connection, timeout=60)

    matched: dict[UUID, set[str]] = {}
    for clinic in CLINIC_FOR.values():
        for flag in await messages_of(hub, clinic, ScreeningFlagged):
            if flag.referral_id is not None:
                matched.setdefault(flag.referral_id, set()).update(m.rule_id for m in flag.matches)
    for rule in rules:
        assert rule.id in matched.get(triggers[rule.id].referral_id, set()), rule.id
        assert rule.id not in matched.get(misses[rule.id].referral_id, set()), rule.id
