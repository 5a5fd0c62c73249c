"""The portal's pure rules: buttons per party and state, lockout, idle expiry, usernames, forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from referral_hub.contracts.referrals import ReferralRequest, ReferralSchedule, ReferralState
from referral_hub.portal import domain, forms
from referral_hub.portal.domain import MemberAccount, PortalRole, Session

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
ACTOR = forms.Actor("kneadwell-massage", "sam.lee", "America/Chicago")


@pytest.mark.parametrize(
    ("state", "role", "expected"),
    [
        (ReferralState.REQUESTED, PortalRole.RECIPIENT, ["accept", "decline", "cancel", "forward"]),
        (ReferralState.REQUESTED, PortalRole.REFERRER, ["cancel"]),
        (ReferralState.NEEDS_REVIEW, PortalRole.RECIPIENT, ["override", "decline", "cancel"]),
        (ReferralState.SCHEDULED, PortalRole.RECIPIENT, ["schedule", "interim_note", "no_show", "complete", "cancel"]),
        (ReferralState.COMPLETED, PortalRole.REFERRER, ["close"]),
        (ReferralState.COMPLETED, PortalRole.RECIPIENT, []),
        (ReferralState.CANCEL_REQUESTED, PortalRole.REFERRER, []),
        (ReferralState.CANCEL_REQUESTED, PortalRole.RECIPIENT, ["interim_note", "cancel", "cancel_confirm"]),
        (ReferralState.CLOSED, PortalRole.REFERRER, []),
    ],
)
def test_buttons_are_the_hubs_own_transitions_for_this_party_now(
    state: ReferralState, role: PortalRole, expected: list[str]
) -> None:
    assert domain.permitted_transitions(state, role) == expected


def _account() -> MemberAccount:
    return MemberAccount(clinic="c", member="m", password_hash="h", totp_secret="s", enrolled_at=NOW)  # noqa: S106 - placeholders; no hashing here


def test_the_fifth_failure_locks_for_fifteen_minutes_and_a_success_clears_the_count() -> None:
    account = _account()
    for _ in range(domain.MAX_FAILED_LOGINS - 1):
        account = domain.after_failure(account, NOW)
        assert not domain.locked(account, NOW)
    account = domain.after_failure(account, NOW)
    assert domain.locked(account, NOW + timedelta(minutes=14))
    assert not domain.locked(account, NOW + timedelta(minutes=16))
    assert domain.after_success(domain.after_failure(_account(), NOW), 7).failed_logins == 0


def test_a_session_expires_after_the_idle_timeout_only() -> None:
    session = Session(clinic="c", member="m", created_at=NOW, last_seen=NOW)
    assert not domain.session_expired(session, NOW + domain.IDLE_TIMEOUT)
    assert domain.session_expired(session, NOW + domain.IDLE_TIMEOUT + timedelta(seconds=1))


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [
        ("sam.lee@kneadwell-massage", ("kneadwell-massage", "sam.lee")),
        ("  Sam.Lee@Kneadwell-Massage ", ("kneadwell-massage", "sam.lee")),
        ("sam.lee", None),
        ("a@b@c", None),
        ("<script>@x", None),
    ],
)
def test_usernames_are_member_at_clinic(typed: str, parsed: tuple[str, str] | None) -> None:
    assert domain.parse_username(typed) == parsed


def test_a_new_referral_form_with_bad_fields_names_each_field() -> None:
    result = forms.new_referral(
        {"recipient": "nowhere|massage", "patient_ref": "Jane Doe", "reason": "", "icd10_codes": "M54.5, pain"},
        ACTOR,
        {"harbor-pt": ("physical_therapy",)},
    )
    assert result.message is None
    assert set(result.errors) == {"recipient", "patient_ref", "reason", "icd10_codes"}
    assert "PAIN" in result.errors["icd10_codes"]


def test_a_good_new_referral_form_is_the_contract_message() -> None:
    result = forms.new_referral(
        {
            "recipient": "harbor-pt|physical_therapy",
            "patient_ref": "pt-0001",
            "reason": "Low back pain",
            "icd10_codes": "m54.5",
            "medications": "apixaban",
        },
        ACTOR,
        {"harbor-pt": ("physical_therapy",)},
    )
    assert isinstance(result.message, ReferralRequest)
    assert result.message.icd10_codes == ("M54.5",)
    assert result.message.clinical_flags.medications == ("apixaban",)
    assert result.message.sender_clinic == "kneadwell-massage"


def test_an_appointment_is_read_in_the_clinics_time_zone() -> None:
    referral_id = __import__("uuid").uuid4()
    result = forms.transition("schedule", {"appointment_at": "2026-12-03T10:30"}, ACTOR, referral_id, "pt-0001")
    assert isinstance(result.message, ReferralSchedule)
    assert result.message.appointment_at == datetime(2026, 12, 3, 16, 30, tzinfo=UTC)
