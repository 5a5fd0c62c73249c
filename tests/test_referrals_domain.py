"""The referrals domain core as plain functions: no NATS, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from referral_hub.client import new_id, utc_now
from referral_hub.contracts.codec import encode
from referral_hub.contracts.referrals import (
    ReferralForward,
    ReferralRequested,
    ReferralState,
    ReferralTransitioned,
    Urgency,
)
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.referrals import domain, lifecycle
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from referral_hub.runtime.messaging.refusals import Refusal

from .helpers import referral_request
from .lifecycle_model import TERMINAL, TRANSITIONS, command, model_step

CLINICS = {clinic.id: clinic for clinic in load_registry_file().clinics}
RECEIVED = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
SLA = domain.SlaPolicy()
SENDER, RECIPIENT = "harbor-pt", "lotus-acu"


def lookup(clinic_id: str) -> Clinic | None:
    return CLINICS.get(clinic_id)


def created(**overrides: object) -> domain.Referral:
    decision = domain.decide(referral_request(**overrides), None, lookup, RECEIVED, SLA)
    assert isinstance(decision, domain.Changed)
    return decision.referral


def apply(referral: domain.Referral, transition: str, clinic: str, **overrides: object) -> domain.Decision:
    built = command(transition, clinic, referral.referral_id, str(overrides.get("patient_ref", referral.patient_ref)))
    return domain.decide(built, referral, lookup, RECEIVED, SLA)


def walk(*steps: tuple[str, str]) -> domain.Referral:
    referral = created()
    for transition, clinic in steps:
        decision = apply(referral, transition, clinic)
        assert isinstance(decision, domain.Changed), decision
        referral = decision.referral
    return referral


def test_admit_accepts_a_valid_request() -> None:
    request = referral_request()

    admitted = domain.admit("clinic.harbor-pt.out.referral.request", encode(request), lookup)

    assert isinstance(admitted, domain.Admitted)
    assert admitted.command == request


def test_admit_refuses_a_subject_that_is_not_an_out_subject() -> None:
    refusal = domain.admit("clinic.harbor-pt.in.referral.request", encode(referral_request()), lookup)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.INVALID_SUBJECT


def test_admit_trusts_the_subject_not_the_payload_for_identity() -> None:
    refusal = domain.admit("clinic.lotus-acu.out.referral.request", encode(referral_request()), lookup)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.SENDER_MISMATCH


def test_request_creates_a_referral_due_within_its_urgency_window() -> None:
    referral = created(urgency=Urgency.URGENT)

    assert referral.state == ReferralState.REQUESTED
    assert referral.due_by == RECEIVED + timedelta(hours=24)


def test_the_same_command_again_is_already_applied() -> None:
    request = referral_request()
    first = domain.decide(request, None, lookup, RECEIVED, SLA)
    assert isinstance(first, domain.Changed)

    again = domain.decide(request, first.referral, lookup, RECEIVED, SLA)

    assert again == domain.AlreadyApplied(first.referral, first.step)


def test_another_request_with_the_same_referral_id_names_the_state() -> None:
    referral = created()

    clash = domain.decide(referral_request(referral_id=referral.referral_id), referral, lookup, RECEIVED, SLA)

    assert isinstance(clash, Refusal)
    assert clash.code == RejectionCode.DUPLICATE_REFERRAL_ID
    assert clash.current_state == "requested"


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([("accept", RECIPIENT)], "accepted"),
        ([("decline", RECIPIENT)], "declined"),
        ([("accept", RECIPIENT), ("schedule", RECIPIENT)], "scheduled"),
        ([("accept", RECIPIENT), ("schedule", RECIPIENT), ("schedule", RECIPIENT)], "scheduled"),
        (
            [("accept", RECIPIENT), ("schedule", RECIPIENT), ("no_show", RECIPIENT), ("schedule", RECIPIENT)],
            "scheduled",
        ),
        ([("accept", RECIPIENT), ("schedule", RECIPIENT), ("complete", RECIPIENT), ("close", SENDER)], "closed"),
        ([("accept", RECIPIENT), ("interim_note", RECIPIENT), ("interim_note", RECIPIENT)], "accepted"),
        ([("cancel", SENDER)], "cancelled"),
        ([("accept", RECIPIENT), ("cancel", RECIPIENT)], "cancelled"),
        ([("accept", RECIPIENT), ("schedule", RECIPIENT), ("cancel", SENDER)], "cancel_requested"),
        (
            [("accept", RECIPIENT), ("schedule", RECIPIENT), ("cancel", SENDER), ("cancel_confirm", RECIPIENT)],
            "cancelled",
        ),
    ],
)
def test_allowed_paths_reach_their_state(steps: list[tuple[str, str]], expected: str) -> None:
    assert walk(*steps).state == expected


@pytest.mark.parametrize(
    ("steps", "transition", "clinic", "code"),
    [
        ([], "accept", SENDER, RejectionCode.WRONG_PARTY),
        ([], "close", SENDER, RejectionCode.INVALID_TRANSITION),
        ([("accept", RECIPIENT)], "complete", RECIPIENT, RejectionCode.INVALID_TRANSITION),
        (
            [("accept", RECIPIENT), ("schedule", RECIPIENT), ("complete", RECIPIENT)],
            "close",
            RECIPIENT,
            RejectionCode.WRONG_PARTY,
        ),
        (
            [("accept", RECIPIENT), ("schedule", RECIPIENT), ("cancel", SENDER)],
            "cancel",
            SENDER,
            RejectionCode.INVALID_TRANSITION,
        ),
        (
            [("accept", RECIPIENT), ("schedule", RECIPIENT), ("complete", RECIPIENT), ("close", SENDER)],
            "interim_note",
            RECIPIENT,
            RejectionCode.REFERRAL_CLOSED,
        ),
        ([("decline", RECIPIENT)], "accept", RECIPIENT, RejectionCode.REFERRAL_CLOSED),
        ([], "accept", "kneadwell-massage", RejectionCode.UNKNOWN_REFERRAL),
    ],
)
def test_refused_transitions_name_the_current_state(
    steps: list[tuple[str, str]], transition: str, clinic: str, code: RejectionCode
) -> None:
    referral = walk(*steps)

    refusal = apply(referral, transition, clinic)

    assert isinstance(refusal, Refusal)
    assert refusal.code == code
    if code != RejectionCode.UNKNOWN_REFERRAL:
        assert refusal.current_state == referral.state


def test_a_response_to_an_unknown_referral_is_refused() -> None:
    refusal = domain.decide(command("accept", RECIPIENT, referral_request().referral_id), None, lookup, RECEIVED, SLA)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.UNKNOWN_REFERRAL


def test_the_right_referral_with_another_patient_is_refused() -> None:
    refusal = apply(created(), "accept", RECIPIENT, patient_ref="pt-9999")

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.PATIENT_MISMATCH


def test_every_state_maps_to_bser_and_fhir() -> None:
    assert {state: lifecycle.STATUS[state].bser_code for state in ReferralState} == {
        "needs_review": "2.0",
        "requested": "2.0",
        "accepted": "3.0",
        "declined": "4.0",
        "scheduled": "5.1.1",
        "no_show": "5.1.2",
        "completed": "5.1.4",
        "cancel_requested": "5.2",
        "cancelled": "6.0",
        "closed": "7.0",
    }
    assert lifecycle.STATUS[ReferralState.DECLINED].fhir_task_status == "rejected"


def test_cancelling_a_scheduled_referral_reports_scheduled_event_cancelled() -> None:
    referral = walk(("accept", RECIPIENT), ("schedule", RECIPIENT), ("cancel", RECIPIENT))

    [announcement] = domain.announcements(referral, referral.history[-1])

    assert isinstance(announcement.event, ReferralTransitioned)
    assert announcement.event.bser_status == "5.1.3"


def test_forward_hands_the_referral_to_a_third_clinic_and_informs_the_sender() -> None:
    referral = walk(("accept", RECIPIENT))
    forward_cmd = ReferralForward(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=RECIPIENT,
        actor="raj.patel",
        correlation_id=new_id(),
        referral_id=referral.referral_id,
        patient_ref=referral.patient_ref,
        to_clinic="riverside-wellness",
        reason="Closer to the patient's home",
    )

    decision = domain.decide(forward_cmd, referral, lookup, RECEIVED, SLA)

    assert isinstance(decision, domain.Changed)
    assert decision.referral.recipient_clinic == "riverside-wellness"
    assert decision.referral.state == ReferralState.REQUESTED
    requested, transitioned = domain.announcements(decision.referral, decision.step)
    assert isinstance(requested.event, ReferralRequested)
    assert requested.clinics == ("riverside-wellness",)
    assert set(transitioned.clinics) == {SENDER, RECIPIENT}


def test_overdue_fires_once_after_the_window() -> None:
    referral = created(urgency=Urgency.ROUTINE)

    assert domain.due_timer(referral, RECEIVED + timedelta(hours=71), SLA) is None
    fired = domain.due_timer(referral, RECEIVED + timedelta(hours=72), SLA)
    assert fired is not None
    assert fired.announcement.event_type == "referral.overdue"
    assert set(fired.announcement.clinics) == {SENDER, RECIPIENT}
    assert domain.due_timer(fired.referral, RECEIVED + timedelta(hours=100), SLA) is None


def test_close_reminder_fires_for_a_completed_referral_not_closed() -> None:
    referral = walk(("accept", RECIPIENT), ("schedule", RECIPIENT), ("complete", RECIPIENT))

    assert domain.due_timer(referral, RECEIVED + timedelta(days=6), SLA) is None
    fired = domain.due_timer(referral, RECEIVED + timedelta(days=7), SLA)
    assert fired is not None
    assert fired.announcement.event_type == "referral.close_reminder"
    assert fired.announcement.clinics == (SENDER,)


def test_an_accepted_referral_is_not_overdue() -> None:
    assert domain.due_timer(walk(("accept", RECIPIENT)), RECEIVED + timedelta(days=30), SLA) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TRANSITIONS), st.sampled_from(["S", "R"])), max_size=12))
def test_state_machine_matches_the_reference_model(steps: list[tuple[str, str]]) -> None:
    referral = created()
    model = "requested"
    for transition, party in steps:
        clinic = SENDER if party == "S" else RECIPIENT
        decision = apply(referral, transition, clinic)
        expected = model_step(model, transition, party)
        if expected is None:
            assert isinstance(decision, Refusal), (model, transition, party)
            allowed = (
                {RejectionCode.REFERRAL_CLOSED}
                if model in TERMINAL
                else {RejectionCode.WRONG_PARTY, RejectionCode.INVALID_TRANSITION}
            )
            assert decision.code in allowed
            continue
        assert isinstance(decision, domain.Changed), (model, transition, party, decision)
        referral, model = decision.referral, expected
        assert referral.state == model
        [announcement] = domain.announcements(referral, decision.step)
        other = RECIPIENT if party == "S" else SENDER
        assert announcement.clinics.count(other) == 1


REANNOUNCED_AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def test_an_applied_command_is_reannounced_while_its_outputs_are_still_deduplicated():
    assert domain.reannounce(REANNOUNCED_AT, REANNOUNCED_AT + timedelta(minutes=49), attempt=1) is True


def test_a_first_delivery_long_after_the_command_applied_is_a_resend_without_effects():
    assert domain.reannounce(REANNOUNCED_AT, REANNOUNCED_AT + timedelta(minutes=51), attempt=1) is False


def test_a_redelivery_is_reannounced_however_late():
    assert domain.reannounce(REANNOUNCED_AT, REANNOUNCED_AT + timedelta(days=2), attempt=2) is True
