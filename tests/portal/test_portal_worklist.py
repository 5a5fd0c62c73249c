"""The work list ("Needs you now") and the Activity wording, from inbox messages alone. Pure."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from referral_hub.client import InboxItem
from referral_hub.contracts.alerts import AlertAcknowledged, AlertRaised, Severity, TriggerKind
from referral_hub.contracts.base import Message, Modality, message_type
from referral_hub.contracts.codec import HubMessage
from referral_hub.contracts.paging import PageAcknowledged
from referral_hub.contracts.plans import CareTeamChanged
from referral_hub.contracts.referrals import (
    ReferralOverdue,
    ReferralRequested,
    ReferralState,
    ReferralTransitioned,
    Urgency,
)
from referral_hub.notifications.page_rules import page_id_for
from referral_hub.portal import domain, worklist
from referral_hub.portal.domain import InboxQuery

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
HERE, THERE = "harbor-pt", "kneadwell-massage"


def _envelope(clinic: str, at: datetime) -> dict[str, typing.Any]:
    return {"message_id": uuid4(), "occurred_at": at, "sender_clinic": clinic, "actor": "m", "correlation_id": uuid4()}


def _requested(referral: UUID, *, to: str = HERE, urgency: Urgency = Urgency.ROUTINE, ago: int = 60) -> Message:
    return ReferralRequested(
        **_envelope(THERE if to == HERE else HERE, NOW - timedelta(minutes=ago)),
        referral_id=referral,
        patient_ref=f"pt-{str(referral)[:8]}",
        state=ReferralState.REQUESTED,
        referring_clinic=THERE if to == HERE else HERE,
        recipient_clinic=to,
        modality=Modality.PHYSICAL_THERAPY,
        urgency=urgency,
        reason="Low back pain",
    )


def _moved(request: Message, state: ReferralState, transition: str, *, ago: int = 10) -> Message:
    assert isinstance(request, ReferralRequested)
    return ReferralTransitioned(
        **_envelope(request.recipient_clinic, NOW - timedelta(minutes=ago)),
        referral_id=request.referral_id,
        patient_ref=request.patient_ref,
        state=state,
        referring_clinic=request.referring_clinic,
        recipient_clinic=request.recipient_clinic,
        transition=transition,
    )


def _alert(severity: Severity, *, by: str = THERE) -> AlertRaised:
    return AlertRaised(
        **_envelope(by, NOW - timedelta(hours=3)),
        alert_id=uuid4(),
        patient_ref="pt-alert-1",
        raised_by=by,
        trigger_kind=TriggerKind.CONDITION,
        trigger="acute DVT",
        modalities=(Modality.MASSAGE,),
        severity=severity,
    )


def _rows(*messages: Message) -> list[worklist.WorkRow]:
    return worklist.work_rows([InboxItem(n, "x", m) for n, m in enumerate(messages, 1)], HERE, NOW)


def test_a_received_referral_asks_to_accept_with_patient_urgency_direction_and_age() -> None:
    [row] = _rows(_requested(uuid4(), urgency=Urgency.URGENT, ago=90))
    assert (row.what, row.action, row.urgency, row.direction, row.age) == (
        "New referral",
        "Accept or decline",
        "urgent",
        "received",
        "1 h",
    )
    assert row.patient_ref.startswith("pt-")


def test_a_referral_leaves_the_list_once_its_step_is_done_and_comes_back_when_the_next_one_is_ours() -> None:
    request = _requested(uuid4())
    accepted = _moved(request, ReferralState.ACCEPTED, "accept")
    scheduled = _moved(request, ReferralState.SCHEDULED, "schedule", ago=5)
    assert [row.action for row in _rows(request, accepted)] == ["Schedule the first visit"]
    assert _rows(request, accepted, scheduled) == []


def test_a_sent_referral_waits_on_the_other_clinic_until_it_is_overdue_or_completed() -> None:
    request = _requested(uuid4(), to=THERE)
    assert isinstance(request, ReferralRequested)
    overdue = ReferralOverdue(
        **_envelope(HERE, NOW - timedelta(minutes=1)),
        referral_id=request.referral_id,
        patient_ref=request.patient_ref,
        state=ReferralState.REQUESTED,
        referring_clinic=HERE,
        recipient_clinic=THERE,
        due_by=NOW - timedelta(minutes=2),
    )
    completed = _moved(request, ReferralState.COMPLETED, "complete", ago=0)
    assert _rows(request) == []
    [late] = _rows(request, overdue)
    assert (late.direction, late.overdue, late.action) == ("sent", True, "Chase the other clinic, or cancel")
    [done] = _rows(request, overdue, completed)
    assert (done.action, done.overdue) == ("Read the outcome and close the loop", False)


def test_a_held_screening_is_on_the_list_for_both_sides() -> None:
    received, sent = _requested(uuid4()), _requested(uuid4(), to=THERE)
    rows = _rows(
        received,
        _moved(received, ReferralState.NEEDS_REVIEW, "hold"),
        sent,
        _moved(sent, ReferralState.NEEDS_REVIEW, "hold"),
    )
    assert sorted(row.action for row in rows) == [
        "Dispute a match or wait for the other clinic",
        "Review the hold: override or decline",
    ]


def test_a_paging_alert_is_a_page_to_acknowledge_until_its_page_is_acknowledged() -> None:
    alert = _alert(Severity.ABSOLUTE)
    page_id = page_id_for(f"alert:{alert.alert_id}:{HERE}")
    ack = PageAcknowledged(
        **_envelope(HERE, NOW), page_id=page_id, member="ana.ruiz", member_clinic=HERE, dedup_key="k", paged_clinic=HERE
    )
    [row] = _rows(alert)
    assert (row.action, row.href, row.urgency, row.direction) == (
        "Acknowledge the page",
        "/pages",
        "absolute",
        f"from {THERE}",
    )
    assert _rows(alert, ack) == []


def test_a_caution_alert_waits_for_any_member_of_this_clinic_to_acknowledge_it_and_our_own_never_does() -> None:
    alert = _alert(Severity.CAUTION)
    ack = AlertAcknowledged(
        **_envelope(HERE, NOW), alert_id=alert.alert_id, patient_ref=alert.patient_ref, member="ben", member_clinic=HERE
    )
    assert [row.action for row in _rows(alert)] == ["Read and acknowledge the alert"]
    assert _rows(alert, ack) == []
    assert _rows(_alert(Severity.ABSOLUTE, by=HERE)) == []


def test_pages_come_first_then_overdue_then_urgent_then_the_oldest() -> None:
    routine_old, routine_new = _requested(uuid4(), ago=300), _requested(uuid4(), ago=5)
    urgent = _requested(uuid4(), urgency=Urgency.URGENT, ago=1)
    rows = _rows(routine_new, urgent, routine_old, _alert(Severity.RELATIVE))
    assert [(row.urgency, row.age) for row in rows] == [
        ("relative", "3 h"),
        ("urgent", "1 min"),
        ("routine", "5 h"),
        ("routine", "5 min"),
    ]


def test_every_kind_the_hub_delivers_has_a_name_in_activity() -> None:
    kinds = {message_type(kind) for kind in typing.get_args(HubMessage)}
    assert kinds - set(domain.LABELS) == set()


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (
            CareTeamChanged(
                **_envelope(THERE, NOW),
                patient_ref="pt-0001",
                clinic=THERE,
                change="joined",
                modality=Modality.MASSAGE,
            ),
            "kneadwell-massage joined the care team (massage)",
        ),
        (_requested(UUID(int=1), to=THERE), "routine physical therapy referral sent to kneadwell-massage"),
        (_requested(UUID(int=2)), "routine physical therapy referral from kneadwell-massage"),
    ],
)
def test_an_activity_row_says_what_it_is_about_from_this_clinics_side(message: Message, words: str) -> None:
    [row], _ = domain.inbox_rows([InboxItem(1, "x", message)], "UTC", frozenset(), InboxQuery(), HERE)
    assert row.summary == words
