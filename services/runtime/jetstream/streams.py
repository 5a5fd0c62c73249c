"""The hub's JetStream streams by name, and the window their outputs are de-duplicated in.

Plain names, no client library: the pure core (the audit log's description of a stored
message, the referral domain's re-announcement window) reads them without importing nats;
``runtime.jetstream.topology`` builds the stream configurations from them.
"""

from __future__ import annotations

from typing import Final

CLINIC_OUT: Final = "CLINIC_OUT"
CLINIC_IN: Final = "CLINIC_IN"
HUB_EVENTS: Final = "HUB_EVENTS"
HUB_DEADLETTER: Final = "HUB_DEADLETTER"
AUDIT: Final = "AUDIT"
AUDIT_CHECKPOINTS: Final = "AUDIT_CHECKPOINTS"
HUB_ADVISORIES: Final = "HUB_ADVISORIES"
AUDIT_STREAMS: Final = (AUDIT, AUDIT_CHECKPOINTS)
"""The streams of the audit account (``runtime.broker.permissions.AUDIT_ACCOUNT``)."""

MSG_ID_HEADER: Final = "Nats-Msg-Id"
"""The header JetStream de-duplicates a stored message by, within its stream's window."""

OUTPUT_DEDUPE_SECONDS: Final = 3600.0
"""The de-duplication window of the streams handlers publish to (inbox, events, dead letters)."""
