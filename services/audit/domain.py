"""Pure audit rules: what an entry says about a stored message, and how the chain hashes.

``entry_hash = sha256(canonical JSON of the entry with entry_hash empty)``; the entry
contains ``prev_hash`` and ``index``, so changing, dropping or reordering any entry breaks
every hash after it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec

from referral_hub.contracts.audit import AuditEntry, AuditOutcome
from referral_hub.contracts.codec import lenient_decode
from referral_hub.contracts.rejections import SECURITY_CODES
from referral_hub.runtime.jetstream import streams
from referral_hub.runtime.jetstream.subjects import parse_clinic_out
from referral_hub.runtime.messaging.incoming import Incoming

GENESIS_HASH: Final = "0" * 64
_encoder: Final = msgspec.json.Encoder()

ACTION_BY_STREAM: Final = {
    streams.CLINIC_OUT: "submit",
    streams.CLINIC_IN: "deliver",
    streams.HUB_EVENTS: "event",
    streams.HUB_DEADLETTER: "deadletter",
}
SECURITY_ALERT: Final = "security_alert"
"""The action of a dead letter whose refusal says something about the sender's identity or
intent (``rejections.SECURITY_CODES``): a spoofed sender, an unregistered clinic, a flood."""


@dataclass(frozen=True)
class _Facts:
    """Every field an entry may quote, read leniently.

    A refused message may lack any of them, or carry them with the wrong type, and the
    entry must still record what can be read.
    """

    strings: dict[str, str]
    occurred_at: datetime | None

    def get(self, name: str) -> str:
        """The field's value if the message had it as a string, else empty."""
        return self.strings.get(name, "")


QUOTED_FROM_ORIGINAL: Final = ("referral_id", "patient_ref", "alert_id", "member", "actor", "correlation_id")
"""What a dead letter's entry quotes from the refused message it holds, so the refusal files
under the referral, patient and member it was about."""


def _strings(data: bytes) -> dict[str, str] | None:
    document = lenient_decode(data, dict[str, Any])
    if document is None:
        return None
    return {key: value for key, value in document.items() if isinstance(key, str) and isinstance(value, str)}


def _facts(data: bytes) -> _Facts:
    strings = _strings(data)
    if strings is None:
        return _Facts({}, None)
    if strings.get("type") == "dead_letter":
        original = _strings(_base64_or_empty(strings.get("payload", ""))) or {}
        strings |= {key: original[key] for key in QUOTED_FROM_ORIGINAL if key in original and key not in strings}
    elif strings.get("type") == "rejection" and "referral_id" not in strings:
        strings["referral_id"] = strings.get("offending_referral_id", "")
    return _Facts(strings, _utc_or_none(strings.get("occurred_at", "")))


def _base64_or_empty(text: str) -> bytes:
    """A dead letter's payload bytes (base64 in JSON); empty when they are not valid base64."""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""


def _utc_or_none(text: str) -> datetime | None:
    """A timezone-aware timestamp, or ``None``: a naive or garbled one must not enter the log."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _subject_clinic(subject: str) -> str:
    tokens = subject.split(".")
    return tokens[1] if len(tokens) > 1 and tokens[0] == "clinic" else ""


def _action(stream: str, rejection_code: str) -> str:
    if stream == streams.HUB_DEADLETTER and rejection_code in SECURITY_CODES:
        return SECURITY_ALERT
    return ACTION_BY_STREAM.get(stream, "observe")


def describe(delivery: Incoming, recorded_at: datetime) -> AuditEntry:
    """The audit entry for one stored message, not yet chained (index 0, no hashes)."""
    facts = _facts(delivery.data)
    stream = delivery.stream
    kind = facts.get("type")
    rejected = kind in {"rejection", "dead_letter"}
    out = parse_clinic_out(delivery.subject)
    if stream == streams.HUB_DEADLETTER:
        clinic, service = _subject_clinic(facts.get("original_subject")), facts.get("service")
        source_message_id = facts.get("offending_message_id")
    elif stream == streams.CLINIC_OUT:
        clinic, service = (out.clinic_id if out is not None else ""), "clinic"
        source_message_id = facts.get("message_id")
    else:
        clinic, service = _subject_clinic(delivery.subject) or facts.get("sender_clinic"), "hub"
        source_message_id = facts.get("message_id")
    return AuditEntry(
        index=0,
        recorded_at=recorded_at,
        occurred_at=facts.occurred_at or delivery.stored_at,
        service=service,
        action=_action(stream, facts.get("code")),
        message_type=kind or (out.message_type if out is not None else "unknown"),
        subject=delivery.subject,
        clinic=clinic,
        member=facts.get("member") or facts.get("actor"),
        referral_id=facts.get("referral_id"),
        patient_ref=facts.get("patient_ref"),
        alert_id=facts.get("alert_id"),
        outcome=AuditOutcome.REJECTED if rejected else AuditOutcome.SUCCESS,
        rejection_code=facts.get("code") if rejected else "",
        source_message_id=source_message_id,
        source_stream=stream,
        source_sequence=delivery.sequence,
        correlation_id=facts.get("correlation_id"),
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


class ChainVerifier:
    """Checks entries one at a time, in order, holding only the previous hash.

    Streaming keeps verification of a long log at read speed: no list of a million entries
    for the garbage collector to walk.
    """

    def __init__(self) -> None:
        """Expect entry 1, chained to the genesis hash."""
        self.count = 0
        self._expected_prev = GENESIS_HASH

    def add(self, entry: AuditEntry) -> ChainFault | None:
        """The fault at this entry, if any; after a fault the verifier must not be fed again."""
        position = self.count + 1
        if entry.index != position:
            return ChainFault(position, f"entry claims index {entry.index} at position {position}")
        if entry.prev_hash != self._expected_prev:
            return ChainFault(position, "prev_hash does not match the previous entry's hash")
        if entry.entry_hash != entry_hash(entry):
            return ChainFault(position, "entry_hash does not match the entry's content")
        self._expected_prev = entry.entry_hash
        self.count = position
        return None


def verify(entries: Iterable[AuditEntry]) -> tuple[int, ChainFault | None]:
    """Recompute the chain; returns how many entries verified and the first fault, if any."""
    verifier = ChainVerifier()
    for entry in entries:
        fault = verifier.add(entry)
        if fault is not None:
            return verifier.count, fault
    return verifier.count, None
