"""Inbox bookkeeping messages, in the manner of FHIR topic-based subscriptions."""

from __future__ import annotations

from referral_hub.contracts.base import ClinicId, Message


class InboxHeartbeat(Message, frozen=True, kw_only=True, tag="inbox.heartbeat"):
    """Sent periodically on ``clinic.<id>.heartbeat`` (not stored).

    ``last_event_number`` is the newest inbox event number the hub has assigned to the
    clinic; a client that holds a smaller one has missed messages and replays with
    ``hubctl inbox --since``.
    """

    clinic: ClinicId
    last_event_number: int
