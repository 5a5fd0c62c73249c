"""Inbox bookkeeping messages, in the manner of FHIR topic-based subscriptions."""

from __future__ import annotations

import msgspec

from referral_hub.contracts.base import ClinicId, Message


class InboxHeartbeat(Message, frozen=True, kw_only=True, tag="inbox.heartbeat"):
    """Sent periodically on ``clinic.<id>.heartbeat`` (not stored).

    ``last_event_number`` is the newest inbox event number the hub has assigned to the
    clinic; a client that holds a smaller one has missed messages and replays with
    ``hubctl inbox --since``.
    """

    clinic: ClinicId
    last_event_number: int


class InboxRead(msgspec.Struct, frozen=True, kw_only=True):
    """A clinic's request on ``hub.inbox.<id>.read``: its stored messages numbered above ``after``.

    Request-reply on core NATS; the answer is an :class:`InboxPage`. Replay from an event
    number (``hubctl inbox --since N`` asks with ``after = N - 1``) without a consumer.
    """

    after: int = 0
    limit: int = 100


class InboxStored(msgspec.Struct, frozen=True, kw_only=True):
    """One stored inbox message: where it is in the hub's inbox stream, and its JSON exactly as stored."""

    sequence: int
    message: msgspec.Raw
    """A ``HubMessage``, with its ``event_number``."""


class InboxPage(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to an :class:`InboxRead`: up to ``limit`` stored inbox messages, oldest first.

    ``last_event_number`` is the newest number in the inbox now: ask again with the last
    message's number while it is larger. ``error`` says why a request was not understood.
    """

    last_event_number: int
    messages: tuple[InboxStored, ...] = ()
    error: str = ""
