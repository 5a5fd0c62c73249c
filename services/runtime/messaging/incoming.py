"""One stored message as a handler sees it, as plain data.

The pure core (the audit log's description of a message, admission) reads deliveries, so
the record lives apart from the client library; ``runtime.messaging.ack_policy.incoming_from_nats``
builds one from a JetStream message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Incoming:
    """One stored message, as a handler sees it: bytes, where it was stored, and when."""

    subject: str
    data: bytes
    headers: Mapping[str, str]
    stream: str
    sequence: int
    stored_at: datetime
    attempt: int

    @property
    def source_key(self) -> str:
        """Stable identity of this stored message, the same on every redelivery."""
        return f"{self.stream}:{self.sequence}"
