"""The audit entry: one per message that crossed the hub, hash-chained."""

from __future__ import annotations

import enum

import msgspec

from referral_hub.contracts.base import UtcDatetime


class AuditOutcome(enum.StrEnum):
    """Whether the recorded message was a success or a refusal."""

    SUCCESS = "success"
    REJECTED = "rejected"


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="audit.entry"):
    """Who did what, to which entities, when, with what outcome.

    ``index`` is the entry's position in the chain and equals its sequence in the audit
    stream; ``entry_hash`` is SHA-256 over ``prev_hash`` and the entry's other fields, so
    any edit to a stored entry breaks every hash after it. Entity ids are kept as strings
    because a rejected message may carry ids that are not valid UUIDs.
    """

    index: int
    recorded_at: UtcDatetime
    occurred_at: UtcDatetime
    service: str
    action: str
    message_type: str
    subject: str
    clinic: str = ""
    member: str = ""
    referral_id: str = ""
    patient_ref: str = ""
    alert_id: str = ""
    outcome: AuditOutcome = AuditOutcome.SUCCESS
    rejection_code: str = ""
    source_message_id: str
    source_stream: str
    source_sequence: int
    correlation_id: str = ""
    payload_sha256: str
    prev_hash: str
    entry_hash: str = ""
