"""Bad input gets a typed rejection: sender's inbox, dead-letter subject, audit log.

Each case publishes on a public out subject exactly as a clinic on plain NATS could, then
checks all three places, and that the intake still accepts a good referral afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from referral_hub.audit.domain import SECURITY_ALERT
from referral_hub.client import new_id, utc_now
from referral_hub.contracts.alerts import AlertRaise, Severity, TriggerKind
from referral_hub.contracts.audit import AuditOutcome
from referral_hub.contracts.base import Modality
from referral_hub.contracts.codec import encode
from referral_hub.contracts.paging import PageAck
from referral_hub.contracts.referrals import ReferralAccept, ReferralRequested
from referral_hub.contracts.rejections import SECURITY_CODES, Rejection, RejectionCode

from .helpers import RunningHub, audit_entries, dead_letters, referral_request, wait_idle


@dataclass(frozen=True)
class BadInput:
    clinic: str
    tokens: str
    payload: bytes
    code: RejectionCode
    sender_inbox: bool = True


def _json(**changes: object) -> bytes:
    document = json.loads(encode(referral_request()))
    document.update(changes)
    return json.dumps(document).encode()


def _accept() -> ReferralAccept:
    return ReferralAccept(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic="lotus-acu",
        actor="raj.patel",
        correlation_id=new_id(),
        referral_id=new_id(),
        patient_ref="pt-0001",
    )


def _alert() -> AlertRaise:
    return AlertRaise(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic="lotus-acu",
        actor="raj.patel",
        correlation_id=new_id(),
        alert_id=new_id(),
        patient_ref="pt-0001",
        trigger_kind=TriggerKind.MEDICATION,
        trigger="warfarin",
        modalities=(Modality.MASSAGE,),
        severity=Severity.RELATIVE,
    )


def _page_ack() -> PageAck:
    return PageAck(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic="lotus-acu",
        actor="raj.patel",
        correlation_id=new_id(),
        page_id=new_id(),
        member="raj.patel",
    )


def _without(field: str) -> bytes:
    document = json.loads(encode(referral_request()))
    del document[field]
    return json.dumps(document).encode()


CASES: dict[str, Callable[[], BadInput]] = {
    "malformed_json": lambda: BadInput(
        "harbor-pt", "referral.request", b'{"type": "referral.request", ', RejectionCode.MALFORMED_JSON
    ),
    "not_an_object": lambda: BadInput("harbor-pt", "referral.request", b"[1, 2, 3]", RejectionCode.SCHEMA_VIOLATION),
    "wrong_type": lambda: BadInput(
        "harbor-pt", "referral.request", _json(patient_ref=42), RejectionCode.SCHEMA_VIOLATION
    ),
    "deeply_nested": lambda: BadInput(
        "harbor-pt",
        "referral.request",
        encode(referral_request()).replace(b'"reason":', b'"deep":' + b"[" * 5000 + b"]" * 5000 + b',"reason":'),
        RejectionCode.SCHEMA_VIOLATION,
    ),
    "invalid_utf8_in_a_string": lambda: BadInput(
        "harbor-pt",
        "referral.request",
        encode(referral_request()).replace(b'"reason":"', b'"reason":"\xed\xa0\x80'),
        RejectionCode.MALFORMED_JSON,
    ),
    "missing_field": lambda: BadInput(
        "harbor-pt", "referral.request", _without("reason"), RejectionCode.SCHEMA_VIOLATION
    ),
    "naive_timestamp": lambda: BadInput(
        "harbor-pt", "referral.request", _json(occurred_at="2026-11-25T10:00:00"), RejectionCode.SCHEMA_VIOLATION
    ),
    "unknown_type": lambda: BadInput(
        "harbor-pt", "referral.teleport", _json(type="referral.teleport"), RejectionCode.UNKNOWN_MESSAGE_TYPE
    ),
    "future_version": lambda: BadInput(
        "harbor-pt", "referral.request", _json(schema_version=2), RejectionCode.UNSUPPORTED_VERSION
    ),
    "subject_type_mismatch": lambda: BadInput(
        "harbor-pt", "referral.accept", _json(), RejectionCode.SUBJECT_TYPE_MISMATCH
    ),
    "sender_mismatch": lambda: BadInput(
        "harbor-pt", "referral.request", _json(sender_clinic="lotus-acu"), RejectionCode.SENDER_MISMATCH
    ),
    "unknown_sender_clinic": lambda: BadInput(
        "ghost-clinic",
        "referral.request",
        _json(sender_clinic="ghost-clinic"),
        RejectionCode.UNKNOWN_CLINIC,
        sender_inbox=False,
    ),
    "unknown_recipient_clinic": lambda: BadInput(
        "harbor-pt", "referral.request", _json(recipient_clinic="ghost-clinic"), RejectionCode.UNKNOWN_CLINIC
    ),
    "unknown_member": lambda: BadInput(
        "harbor-pt", "referral.request", _json(actor="mei.chen"), RejectionCode.UNKNOWN_MEMBER
    ),
    "self_referral": lambda: BadInput(
        "harbor-pt",
        "referral.request",
        _json(recipient_clinic="harbor-pt", modality="physical_therapy"),
        RejectionCode.INVALID_RECIPIENT,
    ),
    "modality_not_offered": lambda: BadInput(
        "harbor-pt", "referral.request", _json(modality="chiropractic"), RejectionCode.INVALID_RECIPIENT
    ),
    "unknown_referral": lambda: BadInput(
        "lotus-acu", "referral.accept", encode(_accept()), RejectionCode.UNKNOWN_REFERRAL
    ),
    "malformed_alert": lambda: BadInput(
        "lotus-acu",
        "alert.raise",
        encode(_alert()).replace(b'"relative"', b'"fatal"'),
        RejectionCode.SCHEMA_VIOLATION,
    ),
    "alert_without_care_team": lambda: BadInput(
        "lotus-acu", "alert.raise", encode(_alert()), RejectionCode.NO_CARE_TEAM
    ),
    "unknown_page": lambda: BadInput("lotus-acu", "page.ack", encode(_page_ack()), RejectionCode.UNKNOWN_PAGE),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_bad_input_is_rejected_everywhere_and_the_service_keeps_going(hub: RunningHub, case: str) -> None:
    bad = CASES[case]()
    publisher = await hub.clinic(bad.clinic)

    receipt = await publisher.publish_raw(bad.tokens, bad.payload, msg_id=f"bad-{case}")
    await wait_idle(hub.connection)

    [dead] = await dead_letters(hub.connection)
    assert dead.code == bad.code
    assert dead.payload == bad.payload
    assert dead.original_sequence == receipt.sequence
    rejections = [item.message async for item in publisher.inbox() if isinstance(item.message, Rejection)]
    if bad.sender_inbox:
        assert [r.code for r in rejections] == [bad.code]
        assert rejections[0].reason
        assert rejections[0].offending_subject == f"clinic.{bad.clinic}.out.{bad.tokens}"
    else:
        assert rejections == []
    audited = [e for e in await audit_entries(hub.connection) if e.outcome == AuditOutcome.REJECTED]
    assert {e.rejection_code for e in audited} == {str(bad.code)}
    assert {e.action for e in audited} >= {SECURITY_ALERT if bad.code in SECURITY_CODES else "deadletter"}

    good = referral_request()
    answer = await (await hub.clinic("harbor-pt")).send_and_confirm(good)
    assert isinstance(answer.message, ReferralRequested)


async def test_second_referral_with_an_existing_id_is_rejected_naming_the_state(hub: RunningHub) -> None:
    sender = await hub.clinic("harbor-pt")
    first = referral_request()
    await sender.send_and_confirm(first)
    clash = referral_request(referral_id=first.referral_id)

    answer = await sender.send_and_confirm(clash)

    assert isinstance(answer.message, Rejection)
    assert answer.message.code == RejectionCode.DUPLICATE_REFERRAL_ID
    assert answer.message.current_state == "requested"
    assert answer.message.offending_message_id == str(clash.message_id)
