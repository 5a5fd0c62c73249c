"""A refused submission files under its referral in the audit log, and ``audit query`` says it was refused."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from referral_hub.audit.audit_event import to_audit_event
from referral_hub.audit.domain import chain, describe
from referral_hub.audit.index import AuditFilter, AuditIndex
from referral_hub.cli.audit_query import submission_outcome
from referral_hub.client import new_id, utc_now
from referral_hub.contracts.referrals import ReferralAccept
from referral_hub.contracts.rejections import Rejection
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.refusal_outputs import offender_of, refusal_outputs
from referral_hub.runtime.messaging.refusals import Refusal

from .helpers import RunningHub, hubctl, referral_request, wait_idle

AT = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
REFERRAL = "6f1c9a52-3b1e-4c1e-9d53-2a9f4f0e7b11"
SUBMITTED = f'{{"type": "referral.accept", "message_id": "m-9", "referral_id": "{REFERRAL}", "actor": "sam.lee"}}'


def delivery(data: bytes, subject: str, stream: str, seq: int = 1) -> Incoming:
    return Incoming(subject=subject, data=data, headers={}, stream=stream, sequence=seq, stored_at=AT, attempt=1)


def dead_letter(payload: bytes) -> bytes:
    return json.dumps(
        {
            "type": "dead_letter",
            "code": "wrong_party",
            "service": "referrals",
            "original_subject": "clinic.harbor-pt.out.referral.accept",
            "offending_message_id": "m-9",
            "payload": base64.b64encode(payload).decode(),
        }
    ).encode()


def test_a_dead_letter_entry_names_the_referral_and_member_of_the_refused_message() -> None:
    entry = describe(delivery(dead_letter(SUBMITTED.encode()), "hub.deadletter.referrals", "HUB_DEADLETTER"), AT)

    assert (entry.referral_id, entry.member, entry.rejection_code) == (REFERRAL, "sam.lee", "wrong_party")


def test_a_dead_letter_of_bytes_that_are_not_json_still_records_the_refusal() -> None:
    entry = describe(delivery(dead_letter(b"\xff not json"), "hub.deadletter.referrals", "HUB_DEADLETTER"), AT)

    assert (entry.referral_id, entry.rejection_code) == ("", "wrong_party")


def test_the_senders_rejection_carries_the_referral_id_it_sent() -> None:
    refused = delivery(SUBMITTED.encode(), "clinic.harbor-pt.out.referral.accept", "CLINIC_OUT")
    outputs = refusal_outputs("referrals", refused, Refusal("wrong_party", "no"), offender_of(refused, "harbor-pt"))  # type: ignore[arg-type]
    rejection = next(o.message for o in outputs if hasattr(o, "message"))
    assert isinstance(rejection, Rejection)

    stored = msgspec.json.encode(rejection)
    entry = describe(delivery(stored, "clinic.harbor-pt.in.rejection", "CLINIC_IN"), AT)

    assert (rejection.offending_referral_id, entry.referral_id) == (REFERRAL, REFERRAL)


def test_a_referral_id_of_the_wrong_type_costs_no_other_id() -> None:
    data = b'{"message_id": "m-3", "correlation_id": "6f1c9a52-3b1e-4c1e-9d53-2a9f4f0e7b12", "referral_id": 7}'
    refused = delivery(data, "clinic.harbor-pt.out.referral.accept", "CLINIC_OUT")

    offender = offender_of(refused, "harbor-pt")

    assert (offender.message_id, offender.referral_id) == ("m-3", "")
    assert offender.correlation_id is not None


def _indexed(tmp_path: Path) -> AuditIndex:
    submitted = describe(delivery(SUBMITTED.encode(), "clinic.harbor-pt.out.referral.accept", "CLINIC_OUT"), AT)
    refused = describe(delivery(dead_letter(SUBMITTED.encode()), "hub.deadletter.referrals", "HUB_DEADLETTER"), AT)
    other = describe(
        delivery(
            SUBMITTED.replace("6f1c", "7f1c").replace("m-9", "m-10").encode(), "clinic.harbor-pt.out.x", "CLINIC_OUT"
        ),
        AT,
    )
    index = AuditIndex(tmp_path / "index.sqlite")
    index.add([chain(submitted, 1, ""), chain(refused, 2, ""), chain(other, 3, "")])
    return index


def test_a_short_referral_id_selects_every_entry_of_that_referral_and_no_other(tmp_path: Path) -> None:
    index = _indexed(tmp_path)

    found = list(index.query(AuditFilter(referral_id=REFERRAL[:8])))

    assert [(e.index, e.referral_id) for e in found] == [(1, REFERRAL), (2, REFERRAL)]


def test_a_refused_submission_reads_refused_with_its_code(tmp_path: Path) -> None:
    index = _indexed(tmp_path)
    found = list(index.query(AuditFilter()))
    refused = index.refusals(e.source_message_id for e in found)

    assert [submission_outcome(e, refused) for e in found] == ["refused:wrong_party", "rejected:wrong_party", "success"]


def test_the_fhir_export_of_a_refused_submission_says_it_failed(tmp_path: Path) -> None:
    index = _indexed(tmp_path)
    submitted = next(index.query(AuditFilter(referral_id=REFERRAL)))
    refused = index.refusals([submitted.source_message_id])

    event = to_audit_event(submitted, refused.get(submitted.source_message_id, ""))

    assert (event["outcome"], event["outcomeDesc"]) == ("4", "refused:wrong_party")


def test_an_index_of_an_older_layout_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    AuditIndex(path).close()
    import sqlite3  # noqa: PLC0415 - only this test writes the file behind the index's back

    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 1")
    reopened = AuditIndex(path)

    assert reopened.last_index() == 0
    reopened.add([])


async def test_audit_query_by_short_id_shows_a_refused_step_as_refused(hub: RunningHub, tmp_path: Path) -> None:
    sender = await hub.clinic("harbor-pt")
    request = referral_request()
    await sender.send_and_confirm(request)
    # The sender may not accept its own referral: refused as wrong_party.
    accept = ReferralAccept(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic="harbor-pt",
        actor="ben.okafor",
        correlation_id=request.correlation_id,
        referral_id=request.referral_id,
        patient_ref=request.patient_ref,
    )
    await sender.send_and_confirm(accept)
    await wait_idle(hub.connection)
    short = str(request.referral_id)[:8]

    result = await hubctl(
        "audit", "query", "--referral", short, "--index", str(tmp_path / "i.sqlite"), "--nats-url", hub.url
    )

    assert result.status == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("submit" in line and "referral.accept" in line and "refused:wrong_party" in line for line in lines)
    assert any("dead_letter" in line and "rejected:wrong_party" in line for line in lines)
    assert any("rejection" in line and "rejected:wrong_party" in line for line in lines)


async def test_a_strangers_rejection_echoes_only_the_id_it_sent(hub: RunningHub) -> None:
    """A clinic naming another clinic's referral learns nothing an unused id would not tell it."""
    request = referral_request()
    await (await hub.clinic("harbor-pt")).send_and_confirm(request)
    stranger = await hub.clinic("summit-chiro")

    def accept(referral_id: uuid.UUID) -> ReferralAccept:
        return ReferralAccept(
            message_id=new_id(),
            occurred_at=utc_now(),
            sender_clinic="summit-chiro",
            actor="tom.nguyen",
            correlation_id=new_id(),
            referral_id=referral_id,
            patient_ref=request.patient_ref,
        )

    answers = []
    for referral_id in (request.referral_id, new_id()):
        sent = accept(referral_id)
        answer = (await stranger.send_and_confirm(sent)).message
        assert isinstance(answer, Rejection)
        assert answer.offending_referral_id == str(referral_id)
        answers.append((answer, sent))

    def without_ids(answer: Rejection, sent: ReferralAccept) -> dict[str, object]:
        fields = msgspec.structs.asdict(answer)
        for name in ("message_id", "occurred_at", "correlation_id", "causation_id", "event_number"):
            fields.pop(name)
        fields["reason"] = answer.reason.replace(str(sent.referral_id), "ID")
        fields["offending_message_id"] = fields["offending_referral_id"] = ""
        return fields

    assert without_ids(*answers[0]) == without_ids(*answers[1])
