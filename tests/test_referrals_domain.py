"""The referrals domain core as plain functions: no NATS, no clock."""

from __future__ import annotations

from datetime import UTC, datetime

from referral_hub.contracts.codec import encode
from referral_hub.contracts.referrals import ReferralState
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.referrals import domain
from referral_hub.runtime.registry import load_registry_file
from referral_hub.runtime.rejecting import Refusal

from .helpers import referral_request

CLINICS = {clinic.id: clinic for clinic in load_registry_file().clinics}
RECEIVED = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)


def lookup(clinic_id: str) -> Clinic | None:
    return CLINICS.get(clinic_id)


def test_admit_accepts_a_valid_request() -> None:
    request = referral_request()

    admitted = domain.admit("clinic.harbor-pt.out.referral.request", encode(request), lookup)

    assert isinstance(admitted, domain.Admitted)
    assert admitted.command == request
    assert admitted.sender.id == "harbor-pt"


def test_admit_refuses_a_subject_that_is_not_an_out_subject() -> None:
    refusal = domain.admit("clinic.harbor-pt.in.referral.request", encode(referral_request()), lookup)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.INVALID_SUBJECT


def test_admit_trusts_the_subject_not_the_payload_for_identity() -> None:
    refusal = domain.admit("clinic.lotus-acu.out.referral.request", encode(referral_request()), lookup)

    assert isinstance(refusal, Refusal)
    assert refusal.code == RejectionCode.SENDER_MISMATCH
    assert "lotus-acu" in refusal.reason


def test_request_creates_a_referral_in_requested_state() -> None:
    request = referral_request()

    decision = domain.request(request, None, lookup, RECEIVED)

    assert isinstance(decision, domain.Created)
    assert decision.referral.state == ReferralState.REQUESTED
    assert decision.referral.history[0].at == RECEIVED
    assert decision.referral.applied(request.message_id)


def test_the_same_request_again_is_already_applied() -> None:
    request = referral_request()
    created = domain.request(request, None, lookup, RECEIVED)
    assert isinstance(created, domain.Created)

    again = domain.request(request, created.referral, lookup, RECEIVED)

    assert again == domain.AlreadyApplied(created.referral)


def test_another_request_with_the_same_referral_id_is_refused_with_the_state() -> None:
    first = referral_request()
    created = domain.request(first, None, lookup, RECEIVED)
    assert isinstance(created, domain.Created)

    clash = domain.request(referral_request(referral_id=first.referral_id), created.referral, lookup, RECEIVED)

    assert clash == Refusal(
        RejectionCode.DUPLICATE_REFERRAL_ID, f"referral {first.referral_id} already exists", "requested"
    )


def test_requested_event_is_identical_however_often_it_is_derived() -> None:
    created = domain.request(referral_request(), None, lookup, RECEIVED)
    assert isinstance(created, domain.Created)

    assert domain.requested_event(created.referral) == domain.requested_event(created.referral)
    assert domain.requested_event(created.referral).occurred_at == RECEIVED
