"""The portal's pure rules: buttons per party and state, lockout, idle expiry, usernames, forms."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

import msgspec
import pytest

from referral_hub.audit.checkpoints import load_key, make_checkpoint, new_key_seed, receipt_fault
from referral_hub.audit.domain import GENESIS_HASH, chain
from referral_hub.client import InboxItem
from referral_hub.contracts.audit import AuditEntry
from referral_hub.contracts.base import Message, Modality
from referral_hub.contracts.plans import CareTeamChanged, PlanUpdate, PlanUpdated
from referral_hub.contracts.referrals import ReferralRequest, ReferralSchedule, ReferralState
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.documents import domain as documents
from referral_hub.portal import document_views, domain, forms, patient_views, referral_views
from referral_hub.portal.domain import MemberAccount, PortalRole, Session
from referral_hub.portal.receipts import ReceiptUnavailableError, choose_receipt

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
    assert referral_views.permitted_transitions(state, role) == expected


def _account() -> MemberAccount:
    return MemberAccount(clinic="c", member="m", password_hash="h", totp_secret="s", enrolled_at=NOW)  # noqa: S106 - placeholders; no hashing here


def test_a_success_spends_the_codes_step_and_nothing_else_changes() -> None:
    assert domain.after_success(_account(), 7) == msgspec.structs.replace(_account(), last_totp_step=7)


def test_failure_budgets_are_per_address_and_per_address_and_username_never_per_account_alone() -> None:
    source, pair = domain.failure_keys("198.51.100.7", "Sam.Lee@kneadwell-massage ")
    other_source, other_pair = domain.failure_keys("203.0.113.9", "sam.lee@kneadwell-massage")
    assert pair == domain.failure_keys("198.51.100.7", "sam.lee@kneadwell-massage")[1]
    assert (source, pair) != (other_source, other_pair)
    assert other_pair != pair
    assert "198.51.100.7" not in source + pair
    assert "sam.lee" not in pair


@pytest.mark.parametrize(
    ("source", "pair", "over"),
    [
        (domain.MAX_SOURCE_FAILURES, domain.MAX_PAIR_FAILURES, False),
        (domain.MAX_SOURCE_FAILURES + 1, 1, True),
        (1, domain.MAX_PAIR_FAILURES + 1, True),
    ],
)
def test_an_attempt_past_either_budget_is_over(source: int, pair: int, over: bool) -> None:  # noqa: FBT001 - a parameter
    assert domain.over_budget(source, pair) is over


def test_a_form_is_bound_to_the_csrf_cookie_its_session_was_given() -> None:
    session = Session(clinic="c", member="m", created_at=NOW, last_seen=NOW, csrf=domain.csrf_digest("cookie-a"))
    assert domain.csrf_bound(session, "cookie-a")
    assert not domain.csrf_bound(session, "cookie-b")
    assert not domain.csrf_bound(msgspec.structs.replace(session, csrf=""), "")


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


def _delivered(number: int, message: Message) -> InboxItem:
    return InboxItem(number, "clinic.harbor-pt.in.x", message)


def _envelope(clinic: str, at: datetime) -> dict[str, object]:
    return {
        "message_id": uuid4(),
        "occurred_at": at,
        "sender_clinic": clinic,
        "actor": "m",
        "correlation_id": uuid4(),
    }


def _plan(version: int, at: datetime) -> PlanUpdated:
    return PlanUpdated(
        **_envelope("kneadwell-massage", at),  # type: ignore[arg-type]
        patient_ref="pt-0001",
        plan_clinic="kneadwell-massage",
        modality=Modality.MASSAGE,
        plan_version=version,
        goals=(f"goal {version}",),
        effective_date=date(2026, 12, 1),
    )


def _joined(
    clinic: str, modality: Modality, change: str, at: datetime, since: datetime | None = None
) -> CareTeamChanged:
    return CareTeamChanged(
        **_envelope(clinic, at),  # type: ignore[arg-type]
        patient_ref="pt-0001",
        clinic=clinic,
        change=change,
        modality=modality,
        since=since,
    )


def test_the_patient_page_shows_the_team_with_since_dates_and_plans_newest_version_first() -> None:
    items = [
        _delivered(1, _joined("harbor-pt", Modality.PHYSICAL_THERAPY, "joined", NOW)),
        _delivered(2, _joined("kneadwell-massage", Modality.MASSAGE, "joined", NOW)),
        _delivered(3, _plan(1, NOW)),
        _delivered(4, _plan(2, NOW + timedelta(days=1))),
        _delivered(5, _joined("kneadwell-massage", Modality.MASSAGE, "left", NOW + timedelta(days=2))),
        # An existing member, as the hub announces it to a clinic joining later: since is when it joined.
        _delivered(6, _joined("lotus-acu", Modality.ACUPUNCTURE, "joined", NOW + timedelta(days=3), NOW)),
    ]
    view = patient_views.patient_view(items, "pt-0001", "UTC", "harbor-pt")
    assert view is not None
    assert [(m.clinic, m.modality, m.since, m.left) for m in view.team] == [
        ("harbor-pt", "physical_therapy", "2026-11-28 09:00 UTC", ""),
        ("kneadwell-massage", "massage", "2026-11-28 09:00 UTC", "2026-11-30 09:00 UTC"),
        ("lotus-acu", "acupuncture", "2026-11-28 09:00 UTC", ""),
    ]
    assert [v.version for v in view.plans[0].versions] == [2, 1]
    assert view.own_modality == "physical_therapy"
    assert patient_views.patient_view(items, "pt-0001", "UTC", "kneadwell-massage").own_modality == ""  # type: ignore[union-attr]
    assert patient_views.patient_view(items, "pt-other", "UTC", "harbor-pt") is None


def test_a_refusal_without_a_referral_state_is_worded_and_a_stale_plan_names_the_next_version() -> None:
    stale = Rejection(
        **_envelope("hub", NOW),  # type: ignore[arg-type]
        code=RejectionCode.STALE_PLAN_VERSION,
        reason="plan_version 2 does not follow the current version 2",
        offending_message_id="x",
        offending_subject="clinic.harbor-pt.out.plan.update",
        current_version=2,
    )
    words = domain.rejection_words(stale)
    assert "The hub holds version 2; send version 3." in words
    assert words.endswith("The hub said: plan_version 2 does not follow the current version 2")


def test_a_plan_form_names_each_bad_field_and_a_good_one_is_the_contract_message() -> None:
    bad = forms.plan_update({"plan_version": "0", "effective_date": "soon", "goals": " "}, ACTOR, "pt-0001", "massage")
    assert bad.message is None
    assert set(bad.errors) == {"form", "effective_date", "goals"}
    good = forms.plan_update(
        {"plan_version": "3", "effective_date": "2026-12-01", "goals": "Sleep through\nLift grandchild"},
        ACTOR,
        "pt-0001",
        "massage",
    )
    assert isinstance(good.message, PlanUpdate)
    assert (good.message.plan_version, good.message.goals) == (3, ("Sleep through", "Lift grandchild"))


def _log(count: int, delivered: dict[int, tuple[str, UUID]]) -> list[AuditEntry]:
    """A chained log; entry ``i`` in ``delivered`` records the delivery of a message id to a clinic's inbox."""
    chained, prev = [], GENESIS_HASH
    for index in range(1, count + 1):
        clinic, message_id = delivered.get(index, ("", uuid4()))
        entry = AuditEntry(
            index=0,
            recorded_at=NOW,
            occurred_at=NOW,
            service="hub",
            action="deliver" if clinic else "event",
            message_type="referral.requested",
            subject=f"clinic.{clinic}.in.referral.requested" if clinic else "hub.event.referral.requested",
            clinic=clinic,
            source_message_id=str(message_id),
            source_stream="CLINIC_IN" if clinic else "HUB_EVENTS",
            source_sequence=index,
            payload_sha256="0" * 64,
            prev_hash="",
        )
        chained.append(chain(entry, index, prev))
        prev = chained[-1].entry_hash
    return chained


def test_a_receipt_is_cut_for_this_clinics_delivery_against_the_first_trusted_checkpoint_covering_it() -> None:
    key = load_key(new_key_seed()).current
    message_id = uuid4()
    log = _log(6, {2: ("lotus-acu", message_id), 5: ("harbor-pt", message_id)})
    first = make_checkpoint(log[:3], None, key, NOW)
    second = make_checkpoint(log[3:6], first, key, NOW)

    receipt = choose_receipt(log, [first, second], "harbor-pt", message_id, key.verifier)
    assert (receipt.entry.index, receipt.checkpoint.checkpoint_index) == (5, 2)
    assert receipt_fault(receipt, key.verifier) == ""
    assert choose_receipt(log, [first, second], "lotus-acu", message_id, key.verifier).checkpoint == first

    with pytest.raises(ReceiptUnavailableError, match="No signed audit checkpoint covers"):
        choose_receipt(log, [first], "harbor-pt", message_id, key.verifier)
    with pytest.raises(ReceiptUnavailableError, match="No signed audit checkpoint covers"):
        choose_receipt(log, [first, second], "kneadwell-massage", message_id, key.verifier)
    other = load_key(new_key_seed()).current.verifier
    with pytest.raises(ReceiptUnavailableError, match="not signed by the hub's pinned key"):
        choose_receipt(log, [first, second], "harbor-pt", message_id, other)


def _refusal(number: int, code: RejectionCode) -> InboxItem:
    message = Rejection(
        **_envelope("hub", NOW),  # type: ignore[arg-type]
        code=code,
        reason="r",
        offending_message_id="x",
        offending_subject="clinic.harbor-pt.out.x",
        event_number=number,
    )
    return _delivered(number, message)


def test_an_unfiltered_inbox_page_is_the_same_slice_a_filter_matching_everything_gives() -> None:
    items = [_refusal(number, RejectionCode.STALE_PLAN_VERSION) for number in range(1, 121)]
    read = frozenset({120, 3})
    every = domain.InboxQuery(kind="rejection")
    for page in (0, 1, 2, 3, 9):
        plain = domain.inbox_rows(items, "UTC", read, domain.InboxQuery(page=page))
        assert plain == domain.inbox_rows(items, "UTC", read, domain.InboxQuery(kind="rejection", page=page))
    first, pages = domain.inbox_rows(items, "UTC", read, every)
    last, _ = domain.inbox_rows(items, "UTC", read, domain.InboxQuery(page=3))
    assert pages == 3
    assert [row.event_number for row in first] == list(range(120, 70, -1))
    assert [row.event_number for row in last] == list(range(20, 0, -1))
    assert [row.unread for row in first[:2]] == [False, True]
    assert domain.inbox_rows([], "UTC", read, domain.InboxQuery(page=2)) == ([], 1)


# --- Documents ---------------------------------------------------------------------------------


def test_an_empty_file_input_is_no_attachment_but_an_empty_or_oversized_file_is_named() -> None:
    nothing_chosen = forms.Attachment("", "application/octet-stream", b"")
    letter = forms.Attachment("letter.pdf", "application/pdf", b"%PDF")
    assert forms.attachments([nothing_chosen], 10) == ([], "")
    assert forms.attachments([nothing_chosen, letter], 10) == ([letter], "")
    assert forms.attachments([forms.Attachment("scan.png", "image/png", b"")], 10) == (
        [],
        "scan.png is empty: choose the file again.",
    )
    files, problem = forms.attachments(
        [forms.Attachment("big.tif", "image/tiff", b"x" * 3 * 1024 * 1024)], 2 * 1024 * 1024
    )
    assert files == []
    assert problem == "big.tif is 3.0 MiB; each file may be at most 2 MiB."
    assert forms.attachments([letter] * (forms.MAX_ATTACHMENTS + 1), 10)[1].startswith("Attach at most")


@pytest.mark.parametrize(
    ("declared", "served"),
    [
        ("application/pdf", "application/pdf"),
        ("TEXT/PLAIN; charset=utf-8", "text/plain"),
        ("text/html", "application/octet-stream"),
        ("image/svg+xml", "application/octet-stream"),
        ("application/xhtml+xml", "application/octet-stream"),
        ("", "application/octet-stream"),
    ],
)
def test_a_download_keeps_its_type_only_when_it_cannot_run_script(declared: str, served: str) -> None:
    assert document_views.download_type(declared) == served


def test_a_download_name_is_plain_ascii_and_document_rows_are_in_clinic_time() -> None:
    assert document_views.download_name('../../"evil"\r\n.html') == "_..__evil___.html"
    assert document_views.download_name("Überweisung.pdf") == "_berweisung.pdf"
    assert document_views.download_name("...") == "document"
    created = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    meta = documents.describe(
        data=b"%PDF-1.7" * 200,
        referral_id=uuid4(),
        patient_ref="pt-0001",
        title="letter.pdf",
        content_type="application/pdf",
        author="kneadwell-massage",
        created=created,
        max_bytes=1024 * 1024,
    )
    (row,) = document_views.document_rows([meta], "America/New_York")
    assert (row.title, row.size, row.author) == ("letter.pdf", "2 KiB", "kneadwell-massage")
    assert row.when == "2026-11-28 10:00 EST"
    assert document_views.size_words(812) == "812 bytes"
    assert document_views.size_words(3 * 1024 * 1024 + 200 * 1024) == "3.2 MiB"
