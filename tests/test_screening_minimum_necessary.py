"""Screening a referral from outside the patient's care team, as pure functions: minimum necessary.

Lotus Acupuncture and Harbor PT treat the patient; Lotus raised an absolute alert against
massage, with a note that holds a lab value and a phone number, and the team's record lists
an anticoagulant. Summit Chiropractic, not on the team, refers the same patient_ref to
Kneadwell Massage, not on it either. Screening must still hold the referral; Summit and
Kneadwell must learn only that the team holds a contraindication and its severity; the team must
be told.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from referral_hub.client import new_id
from referral_hub.contracts.alerts import Severity, TriggerKind
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.codec import encode
from referral_hub.contracts.referrals import ReferralForward, ReferralState
from referral_hub.contracts.registry import Clinic, Member
from referral_hub.contracts.screening import FlagAudience, ScreeningFlagged
from referral_hub.notifications.domain import NotifyIntent, route
from referral_hub.notifications.page_rules import PageIntent
from referral_hub.referrals import alerting, careteam, domain, screening
from referral_hub.referrals.careteam import CareTeam, TeamChanged
from referral_hub.runtime.messaging.outgoing import Announcement
from referral_hub.screening.rules import load_rules

from .helpers import alert_raise, referral_request

AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
PATIENT = "pt-outside"
PACK = load_rules()
SLA = domain.SlaPolicy()
PT, ACU, MASSAGE, CHIRO, RIVERSIDE = "harbor-pt", "lotus-acu", "kneadwell-massage", "summit-chiro", "riverside-wellness"
TRIGGER = "apixaban"
NOTE = "INR 3.4 on 12 Nov; call Dr Ames on 555-0142 before any deep work"
BODY_SITE = "left calf DVT"
TEAM_MEDICATION = "apixaban 5 mg twice daily (Harbor intake)"
SECRETS = (TRIGGER, NOTE, "555-0142", "INR 3.4", BODY_SITE, TEAM_MEDICATION, "raj.patel", "Raj Patel")
"""The team's free text, trigger, medication and member names: none may reach a clinic off the team."""
REQUESTER_TEXT = ("Summit says: patient mentions easy bruising", "Low back pain after a fall, per Summit")


def clinic(clinic_id: str, modality: Modality, member: str) -> Clinic:
    return Clinic(
        id=clinic_id,
        name=clinic_id,
        modalities=(modality,),
        members=(Member(id=member, name=member, role="therapist"),),
    )


CLINICS = {
    PT: clinic(PT, Modality.PHYSICAL_THERAPY, "ben.okafor"),
    ACU: clinic(ACU, Modality.ACUPUNCTURE, "raj.patel"),
    MASSAGE: clinic(MASSAGE, Modality.MASSAGE, "sam.lee"),
    CHIRO: clinic(CHIRO, Modality.CHIROPRACTIC, "tom.nguyen"),
    RIVERSIDE: Clinic(
        id=RIVERSIDE,
        name=RIVERSIDE,
        modalities=(Modality.MASSAGE, Modality.ACUPUNCTURE),
        members=(Member(id="kai.wong", name="Kai Wong", role="therapist"),),
    ),
}


def the_team() -> CareTeam:
    """Harbor and Lotus on the team, an anticoagulant on record, Lotus's absolute alert against massage."""
    team, _ = careteam.join(
        None, PATIENT, [(PT, Modality.PHYSICAL_THERAPY), (ACU, Modality.ACUPUNCTURE)], AT - timedelta(days=3), new_id()
    )
    team = careteam.with_clinical_flags(team, ClinicalFlags(medications=(TEAM_MEDICATION,)))
    raised = alerting.raise_alert(
        team,
        alert_raise(
            ACU,
            PATIENT,
            occurred_at=AT - timedelta(days=1),
            trigger=TRIGGER,
            trigger_kind=TriggerKind.MEDICATION,
            modalities=(Modality.MASSAGE,),
            techniques=(),
            severity=Severity.ABSOLUTE,
            body_site=BODY_SITE,
            note=NOTE,
        ),
        AT - timedelta(days=1),
    )
    assert isinstance(raised, TeamChanged), raised
    return raised.team


def refer(sender: str, recipient: str, **overrides: object) -> domain.Changed:
    """``sender`` refers the patient to ``recipient``; decided and screened as the intake does."""
    fields: dict[str, object] = {
        "actor": {PT: "ben.okafor", CHIRO: "tom.nguyen"}[sender],
        "patient_ref": PATIENT,
        "modality": Modality.MASSAGE,
        "reason": REQUESTER_TEXT[1],
        "note": REQUESTER_TEXT[0],
        **overrides,
    }
    request = referral_request(sender=sender, recipient=recipient, **fields)
    decision = domain.screened(
        domain.decide(request, None, CLINICS.get, AT, SLA), screening.screen_referral(PACK, request, the_team(), AT)
    )
    assert isinstance(decision, domain.Changed), decision
    return decision


def flags_to(announcements: list[Announcement]) -> dict[str, ScreeningFlagged]:
    """The screening flag each clinic's inbox gets; a clinic never gets two."""
    got: dict[str, ScreeningFlagged] = {}
    for item in announcements:
        if isinstance(item.event, ScreeningFlagged):
            for clinic_id in item.clinics:
                assert clinic_id not in got, f"{clinic_id} got two flags"
                got[clinic_id] = item.event
    return got


def announced(decision: domain.Changed) -> dict[str, ScreeningFlagged]:
    return flags_to(domain.announcements(decision.referral, decision.step))


def leaked(message: msgspec.Struct, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    text = encode(message).decode()
    return [secret for secret in secrets if secret in text]


def test_a_referral_from_outside_the_team_is_still_held_by_the_teams_absolute_alert() -> None:
    decision = refer(CHIRO, MASSAGE)

    flag = decision.referral.screening
    assert flag is not None
    assert decision.referral.state == ReferralState.NEEDS_REVIEW
    assert flag.held
    assert flag.highest_severity == Severity.ABSOLUTE
    alert_ids = [m.alert_id for m in flag.matches if m.alert_id is not None]
    assert len(alert_ids) == 1
    assert {m.rule_id for m in flag.matches} == {f"alert:{alert_ids[0]}", "anticoag-deep-massage"}


def test_the_outside_requester_and_recipient_learn_only_that_the_team_holds_a_contraindication_and_its_severity() -> (
    None
):
    decision = refer(CHIRO, MASSAGE)
    flag = decision.referral.screening
    assert flag is not None

    got = announced(decision)

    assert set(got) == {CHIRO, MASSAGE, PT, ACU}
    for outsider in (CHIRO, MASSAGE):
        copy = got[outsider]
        assert leaked(copy) == [], outsider
        assert copy.audience is FlagAudience.OUTSIDE_CARE_TEAM
        assert copy.care_team == ()
        assert copy.recipients == (MASSAGE, CHIRO)
        assert (copy.referral_id, copy.modality, copy.held, copy.highest_severity, copy.care_team_severity) == (
            flag.referral_id,
            Modality.MASSAGE,
            True,
            Severity.ABSOLUTE,
            Severity.ABSOLUTE,
        )
        assert copy.matches == ()


def test_the_care_team_is_told_who_referred_to_whom_and_which_rules_matched() -> None:
    decision = refer(CHIRO, MASSAGE)
    flag = decision.referral.screening
    assert flag is not None

    got = announced(decision)

    for member in (PT, ACU):
        notice = got[member]
        assert notice.audience is FlagAudience.CARE_TEAM
        assert (notice.referring_clinic, notice.recipient_clinic) == (CHIRO, MASSAGE)
        assert notice.recipients == (PT, ACU)
        assert {m.rule_id for m in notice.matches} == {m.rule_id for m in flag.matches}
        assert notice.held
        assert all(m.finding == "" for m in notice.matches)
        assert leaked(notice, REQUESTER_TEXT) == []


def test_a_care_team_party_keeps_the_whole_flag_while_the_outside_recipient_gets_the_minimal_one() -> None:
    decision = refer(PT, MASSAGE)

    got = announced(decision)

    assert set(got) == {PT, MASSAGE, ACU}
    whole = got[PT]
    assert whole.audience is FlagAudience.PARTIES
    assert whole.recipients == (PT,)
    assert {TRIGGER, NOTE, BODY_SITE, TEAM_MEDICATION} <= set(leaked(whole))
    assert got[MASSAGE].audience is FlagAudience.OUTSIDE_CARE_TEAM
    assert leaked(got[MASSAGE]) == []
    assert got[ACU].audience is FlagAudience.CARE_TEAM
    assert (got[ACU].referring_clinic, got[ACU].recipient_clinic) == (PT, MASSAGE)


def test_the_requesters_own_findings_stay_whole_for_the_outside_recipient_but_not_in_the_teams_notice() -> None:
    own = "on warfarin per Summit's intake form"
    decision = refer(CHIRO, MASSAGE, clinical_flags=ClinicalFlags(medications=(own,)))

    got = announced(decision)

    [theirs] = [m for m in got[MASSAGE].matches if m.rule_id == "anticoag-deep-massage"]
    assert (theirs.finding, theirs.contact_clinics) == (own, ())
    assert leaked(got[MASSAGE]) == []
    assert leaked(got[ACU], (own,)) == []


def test_without_anything_from_a_care_team_both_parties_get_the_whole_flag_as_before() -> None:
    request = referral_request(
        sender=PT, recipient=MASSAGE, actor="ben.okafor", patient_ref="pt-no-team", modality=Modality.MASSAGE,
        clinical_flags=ClinicalFlags(medications=("warfarin",)),
    )  # fmt: skip
    decision = domain.screened(
        domain.decide(request, None, CLINICS.get, AT, SLA), screening.screen_referral(PACK, request, None, AT)
    )
    assert isinstance(decision, domain.Changed)

    [announcement] = [
        a for a in domain.announcements(decision.referral, decision.step) if a.event_type != "referral.requested"
    ]

    assert announcement.event == decision.referral.screening
    assert announcement.clinics == (MASSAGE, PT)


def test_forwarding_to_a_clinic_off_the_team_hands_on_only_the_minimal_flag() -> None:
    held = refer(PT, MASSAGE)
    released = domain.decide(
        ReferralForward(
            message_id=new_id(), occurred_at=AT, sender_clinic=MASSAGE, actor="sam.lee", correlation_id=new_id(),
            referral_id=held.referral.referral_id, patient_ref=PATIENT, to_clinic=RIVERSIDE,
        ),
        msgspec.structs.replace(held.referral, state=ReferralState.REQUESTED),
        CLINICS.get, AT, SLA,
    )  # fmt: skip
    assert isinstance(released, domain.Changed), released

    got = flags_to(domain.announcements(released.referral, released.step))

    assert set(got) == {RIVERSIDE}
    assert got[RIVERSIDE].audience is FlagAudience.OUTSIDE_CARE_TEAM
    assert leaked(got[RIVERSIDE]) == []


def test_clinics_off_the_team_are_not_paged_with_the_teams_matches_and_their_notifications_carry_no_phi() -> None:
    decision = refer(CHIRO, MASSAGE)
    got = announced(decision)

    intents = [intent for clinic_id in (CHIRO, MASSAGE) for intent in route(got[clinic_id])]

    assert not [i for i in intents if isinstance(i, PageIntent)]
    assert {i.clinic for i in intents if isinstance(i, NotifyIntent)} == {CHIRO, MASSAGE}
    for intent in intents:
        assert isinstance(intent, NotifyIntent)
        assert [s for s in SECRETS if s in intent.summary] == []
        assert "anticoag" not in intent.summary
        assert "alert:" not in intent.summary
        assert "HELD" in intent.summary


def test_the_care_team_member_party_is_still_paged_for_the_absolute_match() -> None:
    got = announced(refer(PT, MASSAGE))

    pages = [i for i in route(got[PT]) if isinstance(i, PageIntent)]
    notices = route(got[ACU])

    assert [(p.clinic, p.severity) for p in pages] == [(PT, Severity.ABSOLUTE)]
    assert [n.clinic for n in notices if isinstance(n, NotifyIntent)] == [ACU]
    assert len(notices) == 1


def test_the_referrals_own_absolute_match_still_pages_its_parties_without_the_teams_detail() -> None:
    got = announced(refer(CHIRO, MASSAGE, clinical_flags=ClinicalFlags(conditions=("acute infection",))))

    pages = [i for i in route(got[MASSAGE]) if isinstance(i, PageIntent)]

    assert [(p.clinic, p.severity) for p in pages] == [(MASSAGE, Severity.ABSOLUTE), (CHIRO, Severity.ABSOLUTE)]
    assert "infection-massage (absolute)" in pages[0].summary
    assert "care team holds a contraindication relevant to massage (severity absolute)" in pages[0].summary
    assert [s for s in SECRETS if s in pages[0].summary] == []
    assert "anticoag" not in pages[0].summary
    assert "alert:" not in pages[0].summary
