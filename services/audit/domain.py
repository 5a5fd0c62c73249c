"""Pure audit rules: what an entry says about a stored message, and how the chain hashes.

``entry_hash = sha256(canonical JSON of the entry with entry_hash empty)``; the entry
contains ``prev_hash`` and ``index``, so changing, dropping or reordering any entry breaks
every hash after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec

from referral_hub.contracts.audit import AuditEntry, AuditOutcome
from referral_hub.runtime import topology
from referral_hub.runtime.handling import Delivery
from referral_hub.runtime.subjects import parse_clinic_out

GENESIS_HASH: Final = "0" * 64
_encoder: Final = msgspec.json.Encoder()

ACTION_BY_STREAM: Final = {
    topology.CLINIC_OUT: "submit",
    topology.CLINIC_IN: "deliver",
    topology.HUB_EVENTS: "event",
    topology.HUB_DEADLETTER: "deadletter",
}


class _Facts(msgspec.Struct):
    """Every field an entry may quote, read leniently: a refused message may lack any of them."""

    type: str = ""
    message_id: str = ""
    sender_clinic: str = ""
    actor: str = ""
    member: str = ""
    referral_id: str = ""
    patient_ref: str = ""
    alert_id: str = ""
    correlation_id: str = ""
    occurred_at: datetime | None = None
    code: str = ""
    service: str = ""
    original_subject: str = ""
    offending_message_id: str = ""


@dataclass(frozen=True)
class Unchained:
    """An entry before it has a place in the chain."""

    entry: AuditEntry


def _facts(data: bytes) -> _Facts:
    try:
        return msgspec.json.decode(data, type=_Facts)
    except msgspec.DecodeError:
        return _Facts()


def _subject_clinic(subject: str) -> str:
    tokens = subject.split(".")
    return tokens[1] if len(tokens) > 1 and tokens[0] == "clinic" else ""


def describe(delivery: Delivery, recorded_at: datetime) -> AuditEntry:
    """The audit entry for one stored message, not yet chained (index 0, no hashes)."""
    facts = _facts(delivery.data)
    stream = delivery.stream
    rejected = facts.type in {"rejection", "dead_letter"}
    if stream == topology.HUB_DEADLETTER:
        clinic = _subject_clinic(facts.original_subject)
        service = facts.service
    elif stream == topology.CLINIC_OUT:
        out = parse_clinic_out(delivery.subject)
        clinic = out.clinic_id if out is not None else ""
        service = "clinic"
    else:
        clinic = _subject_clinic(delivery.subject) or facts.sender_clinic
        service = "hub"
    message_type = facts.type or (parse_clinic_out(delivery.subject) or ("", "unknown"))[1]
    return AuditEntry(
        index=0,
        recorded_at=recorded_at,
        occurred_at=facts.occurred_at or delivery.stored_at,
        service=service,
        action=ACTION_BY_STREAM.get(stream, "observe"),
        message_type=message_type,
        subject=delivery.subject,
        clinic=clinic,
        member=facts.member or facts.actor,
        referral_id=facts.referral_id,
        patient_ref=facts.patient_ref,
        alert_id=facts.alert_id,
        outcome=AuditOutcome.REJECTED if rejected else AuditOutcome.SUCCESS,
        rejection_code=facts.code if rejected else "",
        source_message_id=facts.offending_message_id if stream == topology.HUB_DEADLETTER else facts.message_id,
        source_stream=stream,
        source_sequence=delivery.sequence,
        correlation_id=facts.correlation_id,
        payload_sha256=hashlib.sha256(delivery.data).hexdigest(),
        prev_hash="",
    )


def entry_hash(entry: AuditEntry) -> str:
    """The hash an entry must carry, computed over everything but the hash itself."""
    return hashlib.sha256(_encoder.encode(msgspec.structs.replace(entry, entry_hash=""))).hexdigest()


def chain(entry: AuditEntry, index: int, prev_hash: str) -> AuditEntry:
    """Place ``entry`` at ``index`` after an entry whose hash is ``prev_hash``, and seal it."""
    placed = msgspec.structs.replace(entry, index=index, prev_hash=prev_hash, entry_hash="")
    return msgspec.structs.replace(placed, entry_hash=entry_hash(placed))


@dataclass(frozen=True)
class ChainFault:
    """The first entry that does not verify, and why."""

    index: int
    reason: str


def verify(entries: Iterable[AuditEntry]) -> tuple[int, ChainFault | None]:
    """Recompute the chain; returns how many entries verified and the first fault, if any."""
    expected_prev = GENESIS_HASH
    count = 0
    for position, entry in enumerate(entries, start=1):
        if entry.index != position:
            return count, ChainFault(position, f"entry claims index {entry.index} at position {position}")
        if entry.prev_hash != expected_prev:
            return count, ChainFault(position, "prev_hash does not match the previous entry's hash")
        if entry.entry_hash != entry_hash(entry):
            return count, ChainFault(position, "entry_hash does not match the entry's content")
        expected_prev = entry.entry_hash
        count += 1
    return count, None
