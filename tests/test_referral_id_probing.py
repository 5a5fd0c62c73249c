"""A clinic that is not a party to a referral learns nothing from the hub's answers about it, as pure functions.

Referral ids are random UUIDs that only a referral's parties see. A clinic naming one it is
not a party to must get exactly the answer (code, text, state) it gets for an id nobody uses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from referral_hub.client import new_id
from referral_hub.contracts.alerts import AlertResolve
from referral_hub.contracts.base import Modality
from referral_hub.contracts.referrals import ReferralCommand, ReferralForward
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.referrals import alerting, careteam, domain
from referral_hub.referrals.careteam import TeamChanged
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from referral_hub.runtime.messaging.refusals import Refusal

from .helpers import alert_raise, referral_request
from .lifecycle_model import MEMBERS, TRANSITIONS, command

CLINICS = {clinic.id: clinic for clinic in load_registry_file().clinics}
AT = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
SLA = domain.SlaPolicy()
SENDER, RECIPIENT, STRANGER = "harbor-pt", "lotus-acu", "summit-chiro"
PATHS = {
    "requested": [],
    "accepted": [("accept", RECIPIENT)],
    "scheduled": [("accept", RECIPIENT), ("schedule", RECIPIENT)],
    "completed": [("accept", RECIPIENT), ("schedule", RECIPIENT), ("complete", RECIPIENT)],
    "closed": [("accept", RECIPIENT), ("schedule", RECIPIENT), ("complete", RECIPIENT), ("close", SENDER)],
    "declined": [("decline", RECIPIENT)],
    "cancel_requested": [("accept", RECIPIENT), ("schedule", RECIPIENT), ("cancel", SENDER)],
}


def lookup(clinic_id: str) -> Clinic | None:
    return CLINICS.get(clinic_id)


def walk(steps: list[tuple[str, str]], **request: object) -> domain.Referral:
    decision = domain.decide(referral_request(**request), None, lookup, AT, SLA)
    assert isinstance(decision, domain.Changed)
    referral = decision.referral
    for transition, clinic in steps:
        built = command(transition, clinic, referral.referral_id, referral.patient_ref)
        decision = domain.decide(built, referral, lookup, AT, SLA)
        assert isinstance(decision, domain.Changed), decision
        referral = decision.referral
    return referral


def strangers_commands(referral: domain.Referral) -> list[ReferralCommand]:
    """Every command on a referral id, from a clinic that is not a party, with and without the right patient."""
    built: list[ReferralCommand] = []
    for patient in (referral.patient_ref, "pt-guess"):
        built += [command(transition, STRANGER, referral.referral_id, patient) for transition in TRANSITIONS]
        built.append(
            ReferralForward(
                message_id=new_id(), occurred_at=AT, sender_clinic=STRANGER, actor=MEMBERS[STRANGER],
                correlation_id=new_id(), referral_id=referral.referral_id, patient_ref=patient,
                to_clinic="kneadwell-massage",
            )
        )  # fmt: skip
    return built


@pytest.mark.parametrize("state", sorted(PATHS))
def test_a_stranger_gets_the_same_answer_for_another_clinics_referral_as_for_none(state: str) -> None:
    referral = walk(PATHS[state])

    for stranger in strangers_commands(referral):
        refusal = domain.decide(stranger, referral, lookup, AT, SLA)

        assert refusal == domain.decide(stranger, None, lookup, AT, SLA), (state, type(stranger).__name__)
        assert isinstance(refusal, Refusal)
        assert (refusal.code, refusal.current_state) == (RejectionCode.UNKNOWN_REFERRAL, "")


@pytest.mark.parametrize("state", sorted(PATHS))
def test_a_stranger_replaying_a_steps_message_id_is_not_treated_as_a_resend(state: str) -> None:
    referral = walk(PATHS[state])

    for step in referral.history:
        for stranger in strangers_commands(referral)[:2]:
            replay = msgspec.structs.replace(stranger, message_id=step.message_id)

            decision = domain.decide(replay, referral, lookup, AT, SLA)

            assert decision == domain.decide(replay, None, lookup, AT, SLA), (state, step.transition)


def test_a_party_resending_its_command_is_still_already_applied() -> None:
    referral = walk(PATHS["accepted"])
    accept = referral.history[1]
    resent = command("accept", RECIPIENT, referral.referral_id)

    decision = domain.decide(
        msgspec.structs.replace(resent, message_id=accept.message_id), referral, lookup, AT + timedelta(hours=1), SLA
    )

    assert decision == domain.AlreadyApplied(referral, accept)


def test_a_new_referral_with_another_clinics_id_learns_nothing_of_that_referral() -> None:
    taken = new_id()
    open_one = walk(PATHS["requested"], referral_id=taken)
    other = walk(
        PATHS["declined"],
        referral_id=taken,
        patient_ref="pt-7777",
        sender="kneadwell-massage",
        recipient=RECIPIENT,
        actor="sam.lee",
    )
    probe = referral_request(
        sender=STRANGER,
        recipient="kneadwell-massage",
        actor=MEMBERS[STRANGER],
        modality=Modality.MASSAGE,
        referral_id=taken,
    )

    answers = [domain.decide(probe, existing, lookup, AT, SLA) for existing in (open_one, other)]

    assert answers[0] == answers[1]
    refusal = answers[0]
    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.DUPLICATE_REFERRAL_ID
    assert refusal.current_state == ""
    for revealing in ("requested", "declined", SENDER, RECIPIENT, "kneadwell-massage", "pt-0001", "pt-7777"):
        assert revealing not in refusal.reason


def test_a_party_reusing_its_own_referral_id_is_still_told_the_state() -> None:
    referral = walk(PATHS["accepted"])

    for party, actor, recipient in ((SENDER, "ben.okafor", "kneadwell-massage"), (RECIPIENT, "raj.patel", SENDER)):
        clash = referral_request(
            sender=party, recipient=recipient, actor=actor, modality=CLINICS[recipient].modalities[0],
            referral_id=referral.referral_id,
        )  # fmt: skip
        refusal = domain.decide(clash, referral, lookup, AT, SLA)

        assert isinstance(refusal, Refusal)
        assert (refusal.code, refusal.current_state) == (RejectionCode.DUPLICATE_REFERRAL_ID, "accepted")


def test_resolving_another_teams_alert_answers_as_for_an_alert_nobody_raised() -> None:
    team, _ = careteam.join(
        None,
        "pt-0001",
        [(SENDER, Modality.PHYSICAL_THERAPY), (RECIPIENT, Modality.ACUPUNCTURE)],
        AT - timedelta(days=1),
        new_id(),
    )
    raised = alerting.raise_alert(team, alert_raise(RECIPIENT, "pt-0001", occurred_at=AT), AT)
    assert isinstance(raised, TeamChanged)
    alert_id = raised.team.alerts[0].raised.alert_id
    resolve = AlertResolve(
        message_id=new_id(), occurred_at=AT, sender_clinic=STRANGER, actor=MEMBERS[STRANGER], correlation_id=new_id(),
        alert_id=alert_id, patient_ref="pt-0001",
    )  # fmt: skip
    nobodys = msgspec.structs.replace(resolve, alert_id=new_id())

    refusal = alerting.resolve(raised.team, resolve, AT)
    unknown = alerting.resolve(raised.team, nobodys, AT)

    assert isinstance(refusal, Refusal)
    assert isinstance(unknown, Refusal)
    assert refusal.code == unknown.code == RejectionCode.UNKNOWN_ALERT
    assert refusal.reason == unknown.reason.replace(str(nobodys.alert_id), str(alert_id))
    assert RECIPIENT not in refusal.reason
