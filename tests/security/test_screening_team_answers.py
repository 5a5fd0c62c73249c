"""A clinic off the care team is held by the team's contraindication: the team answers, anonymously.

Summit Chiropractic, off the patient's care team, refers the patient to Kneadwell Massage,
off it too; Lotus Acupuncture's absolute alert on the team's record holds the referral. The
outsiders are told only that the team holds a contraindication, so the hub puts the question
to the team (its ``care_team`` notice names the referral), and a team clinic overrides the
hold or declines the referral. The parties see that answer from the hub, without the team's
clinic, member or reason; the answering clinic gets its own whole copy. Any other clinic
still gets the answer an unused referral id gets. Pure functions, as the intake runs them.
"""

from __future__ import annotations

from collections.abc import Callable

from referral_hub.client import new_id
from referral_hub.contracts.codec import encode
from referral_hub.contracts.referrals import ReferralDecline, ReferralOverride, ReferralState, ReferralTransitioned
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.referrals import domain
from referral_hub.runtime.messaging.refusals import Refusal
from tests.test_screening_minimum_necessary import ACU, AT, CHIRO, CLINICS, MASSAGE, PATIENT, PT, RIVERSIDE, SLA, refer

REASON = "Cleared by phone with Dr Ames: INR 2.1 this morning"
TEAM = (ACU, PT, "raj.patel", "ben.okafor", REASON)


def override(clinic: str, referral: domain.Referral) -> ReferralOverride:
    return ReferralOverride(
        message_id=new_id(), occurred_at=AT, sender_clinic=clinic, actor="raj.patel", correlation_id=new_id(),
        referral_id=referral.referral_id, patient_ref=PATIENT, reason=REASON,
    )  # fmt: skip


def answered_by_the_team(
    answer: Callable[[domain.Referral], ReferralOverride | ReferralDecline],
) -> tuple[domain.Changed, dict[str, list[str]]]:
    """The held referral, the team's answer to it decided, and what each clinic is told of it (as JSON)."""
    held = refer(CHIRO, MASSAGE)
    assert held.referral.state is ReferralState.NEEDS_REVIEW
    answered = domain.decide(answer(held.referral), held.referral, CLINICS.get, AT, SLA)
    assert isinstance(answered, domain.Changed), answered
    told: dict[str, list[str]] = {}
    for item in domain.announcements(answered.referral, answered.step):
        assert isinstance(item.event, ReferralTransitioned)
        for clinic in item.clinics:
            told.setdefault(clinic, []).append(encode(item.event).decode())
    return answered, told


def test_a_care_team_clinic_overrides_the_hold_and_the_parties_see_only_that_it_was_released() -> None:
    answered, told = answered_by_the_team(lambda referral: override(ACU, referral))

    assert answered.referral.state is ReferralState.REQUESTED
    assert set(told) == {CHIRO, MASSAGE, ACU}
    for party in (CHIRO, MASSAGE):
        [event] = told[party]
        assert [word for word in TEAM if word in event] == [], party
        assert '"transition":"override"' in event
        assert '"sender_clinic":"hub"' in event
    assert REASON in told[ACU][0]


def decline(referral: domain.Referral) -> ReferralDecline:
    return ReferralDecline(
        message_id=new_id(), occurred_at=AT, sender_clinic=PT, actor="ben.okafor", correlation_id=new_id(),
        referral_id=referral.referral_id, patient_ref=PATIENT, reason_code="contraindicated", reason_text=REASON,
    )  # fmt: skip


def test_a_care_team_clinic_declines_the_referral_for_the_parties() -> None:
    answered, told = answered_by_the_team(decline)

    assert answered.referral.state is ReferralState.DECLINED
    assert [word for party in (CHIRO, MASSAGE) for event in told[party] for word in TEAM if word in event] == []


def test_a_clinic_neither_party_nor_on_the_team_gets_the_answer_an_unused_id_gets() -> None:
    held = refer(CHIRO, MASSAGE)
    probe = override(RIVERSIDE, held.referral)
    unused = domain.decide(probe, None, CLINICS.get, AT, SLA)

    answer = domain.decide(probe, held.referral, CLINICS.get, AT, SLA)

    assert isinstance(answer, Refusal)
    assert answer == unused
    assert answer.code is RejectionCode.UNKNOWN_REFERRAL
