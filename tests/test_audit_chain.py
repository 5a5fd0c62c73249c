"""The audit hash chain as plain functions: sealing, verifying, and detecting tampering."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from referral_hub.audit.domain import GENESIS_HASH, ChainFault, chain, describe, verify
from referral_hub.contracts.audit import AuditEntry, AuditOutcome
from referral_hub.runtime.messaging.incoming import Incoming

AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def delivery(
    data: bytes, subject: str = "clinic.harbor-pt.out.referral.request", stream: str = "CLINIC_OUT", seq: int = 1
) -> Incoming:
    return Incoming(subject=subject, data=data, headers={}, stream=stream, sequence=seq, stored_at=AT, attempt=1)


def build_chain(length: int) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    prev = GENESIS_HASH
    for index in range(1, length + 1):
        entry = chain(describe(delivery(b'{"n": %d}' % index, seq=index), AT), index, prev)
        entries.append(entry)
        prev = entry.entry_hash
    return entries


def test_an_untouched_chain_verifies() -> None:
    assert verify(build_chain(5)) == (5, None)


def test_an_edited_entry_is_named() -> None:
    entries = build_chain(5)
    entries[2] = msgspec.structs.replace(entries[2], clinic="someone-else")

    assert verify(entries) == (2, ChainFault(3, "entry_hash does not match the entry's content"))


def test_an_edited_entry_with_a_recomputed_hash_breaks_the_next_link() -> None:
    entries = build_chain(5)
    forged = msgspec.structs.replace(entries[2], clinic="someone-else")
    entries[2] = chain(forged, forged.index, forged.prev_hash)

    assert verify(entries) == (3, ChainFault(4, "prev_hash does not match the previous entry's hash"))


def test_a_dropped_entry_is_detected() -> None:
    entries = build_chain(5)
    del entries[1]

    count, fault = verify(entries)

    assert count == 1
    assert fault is not None
    assert fault.index == 2


def test_describe_reads_what_it_can_from_malformed_input() -> None:
    entry = describe(delivery(b'{"message_id": "m-1", "patient_ref": 42, "occurred_at": "2026-01-01T00:00:00"}'), AT)

    assert entry.source_message_id == "m-1"
    assert entry.patient_ref == ""
    assert entry.occurred_at == AT
    assert entry.clinic == "harbor-pt"
    assert entry.action == "submit"


def test_describe_marks_dead_letters_as_rejections_with_their_code() -> None:
    data = (
        b'{"type": "dead_letter", "code": "sender_mismatch", "service": "referrals",'
        b' "original_subject": "clinic.harbor-pt.out.x", "offending_message_id": "m-2"}'
    )

    entry = describe(delivery(data, subject="hub.deadletter.referrals", stream="HUB_DEADLETTER"), AT)

    assert entry.outcome == AuditOutcome.REJECTED
    assert entry.rejection_code == "sender_mismatch"
    assert entry.clinic == "harbor-pt"
    assert entry.source_message_id == "m-2"
    assert entry.service == "referrals"
