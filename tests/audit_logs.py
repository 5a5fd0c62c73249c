"""Audit logs for tests: chained entries, built by hand, and stored as an insider with the disk would."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import nats

from referral_hub.audit.domain import GENESIS_HASH, chain
from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.jetstream.provision import provision

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def chained(count: int, *, clinic: str = "harbor-pt", start: int = 1, prev: str = GENESIS_HASH) -> list[AuditEntry]:
    """``count`` entries chained from index ``start`` on, after an entry whose hash is ``prev``."""
    made = []
    for index in range(start, start + count):
        entry = AuditEntry(
            index=0,
            recorded_at=AT,
            occurred_at=AT,
            service="clinic",
            action="submit",
            message_type="referral.request",
            subject=f"clinic.{clinic}.out.referral.request",
            clinic=clinic,
            source_message_id=f"m{index}",
            source_stream="CLINIC_OUT",
            source_sequence=index,
            payload_sha256="0" * 64,
            prev_hash="",
        )
        made.append(chain(entry, index, prev))
        prev = made[-1].entry_hash
    return made


async def store(url: str, entries: list[AuditEntry], checkpoints: list[AuditCheckpoint]) -> None:
    """Write a log straight into a server's audit streams (provisioning them first)."""
    connection = await nats.connect(url)
    try:
        js = connection.jetstream()
        await provision(js)
        for entry in entries:
            await js.publish(subjects.AUDIT_ENTRY, msgspec.json.encode(entry))
        for checkpoint in checkpoints:
            await js.publish(subjects.AUDIT_CHECKPOINT, msgspec.json.encode(checkpoint))
    finally:
        await connection.drain()
