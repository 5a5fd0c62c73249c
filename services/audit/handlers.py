"""What the audit service does with each stored message: describe it, chain it."""

from __future__ import annotations

from datetime import UTC, datetime

from referral_hub.audit import domain
from referral_hub.audit.adapters import ChainWriter
from referral_hub.runtime.hosting.metrics import AUDIT_APPEND_LAG, AUDIT_ENTRIES
from referral_hub.runtime.messaging.ack_policy import Handled
from referral_hub.runtime.messaging.incoming import Incoming


class AuditHandler:
    """Records one message; returns no outgoing messages of its own."""

    def __init__(self, writer: ChainWriter) -> None:
        """Append through ``writer``."""
        self._writer = writer

    async def __call__(self, delivery: Incoming) -> Handled:
        """Append the entry; a NATS failure propagates so the message is redelivered."""
        now = datetime.now(UTC)
        stored = await self._writer.append(domain.describe(delivery, now), dedupe_key=delivery.source_key)
        AUDIT_ENTRIES.inc()
        AUDIT_APPEND_LAG.set(max((now - delivery.stored_at).total_seconds(), 0.0))
        return Handled(
            outcome="recorded",
            log_fields={
                "audit_index": stored.index,
                "audited_stream": delivery.stream,
                "audited_type": stored.message_type,
            },
        )
