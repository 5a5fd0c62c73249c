"""Delivery to clinic inboxes with per-clinic, gap-free event numbers.

Each inbox message carries ``event_number``: 1, 2, 3 ... per clinic, with no gaps, as FHIR
topic-based subscriptions' ``eventsSinceSubscriptionStart`` does, so a clinic can detect a
missed message and replay from a number.

The server enforces it. A delivery is published with
``Nats-Expected-Last-Subject-Sequence`` checked against ``clinic.<id>.in.>`` (the
``...-Subject`` header): if anything reached that inbox since we read its head, JetStream
refuses, and we re-read and renumber. Two replicas can therefore never hand out one
number twice or skip one. A redelivered command's copy is refused as a duplicate by its
``Nats-Msg-Id`` and keeps its original number.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypedDict
from uuid import UUID

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from referral_hub.contracts.base import Message
from referral_hub.contracts.codec import encode
from referral_hub.errors import HubError
from referral_hub.runtime import subjects, topology
from referral_hub.runtime.batching import WRONG_LAST_SEQUENCE
from referral_hub.runtime.ids import derived_id

MAX_ATTEMPTS: Final = 50
BACKOFF_SECONDS: Final = 0.002
EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_FILTER: Final = "Nats-Expected-Last-Subject-Sequence-Subject"


class _Numbered(msgspec.Struct):
    event_number: int = 0


_numbered: Final = msgspec.json.Decoder(_Numbered)


class InboxContentionError(HubError):
    """Other writers kept winning the race for one inbox; the input is redelivered later."""


@dataclass(frozen=True)
class Outgoing:
    """A message a handler wants published, with the id JetStream de-duplicates it by."""

    subject: str
    payload: bytes
    msg_id: str


@dataclass(frozen=True)
class InboxDelivery:
    """A message for one clinic's inbox; the writer fills in ``event_number``."""

    clinic: str
    message_type: str
    message: Message
    msg_id: str


class InboxWriter:
    """Serialises deliveries per clinic and numbers them; different clinics proceed in parallel."""

    def __init__(self, js: JetStreamContext) -> None:
        """Heads are read lazily and cached; a refusal by the server refreshes them."""
        self._js = js
        self._heads: dict[str, tuple[int, int]] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def head(self, clinic: str) -> tuple[int, int]:
        """(stream sequence, event number) of the newest message in ``clinic``'s inbox."""
        try:
            last = await self._js.get_last_msg(topology.CLINIC_IN, subjects.clinic_inbox(clinic))
        except NotFoundError:
            return 0, 0
        return last.seq or 0, _numbered.decode(last.data or b"{}").event_number

    async def deliver(self, delivery: InboxDelivery) -> int:
        """Store the message as the clinic's next event; returns its event number (0 if a duplicate)."""
        clinic = delivery.clinic
        async with self._locks[clinic]:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                sequence, number = self._heads.get(clinic) or await self.head(clinic)
                numbered = msgspec.structs.replace(delivery.message, event_number=number + 1)
                try:
                    ack = await self._js.publish(
                        subjects.clinic_in(clinic, delivery.message_type),
                        encode(numbered),
                        headers={
                            "Nats-Msg-Id": delivery.msg_id,
                            EXPECTED_LAST_SUBJECT_SEQUENCE: str(sequence),
                            EXPECTED_LAST_SUBJECT_FILTER: subjects.clinic_inbox(clinic),
                        },
                    )
                except APIError as exc:
                    if exc.err_code != WRONG_LAST_SEQUENCE:
                        raise
                    self._heads.pop(clinic, None)
                    await asyncio.sleep(random.uniform(0, BACKOFF_SECONDS * attempt))  # noqa: S311 - jitter, not security
                    continue
                if ack.duplicate:
                    self._heads.pop(clinic, None)
                    return 0
                self._heads[clinic] = (ack.seq, number + 1)
                return number + 1
        msg = f"could not deliver to {clinic}'s inbox after {MAX_ATTEMPTS} attempts"
        raise InboxContentionError(msg)


class Echo(TypedDict):
    """The envelope of an event that a command caused."""

    message_id: UUID
    occurred_at: datetime
    sender_clinic: str
    actor: str
    correlation_id: UUID
    causation_id: UUID | None


def echo(command: Message, role: str) -> Echo:
    """Same sender, actor, time and correlation as ``command``; caused by it; an id derived per ``role``.

    Deriving the id makes the event identical however often it is derived, so a redelivered
    command's events are de-duplicated by JetStream.
    """
    return {
        "message_id": derived_id(str(command.message_id), role),
        "occurred_at": command.occurred_at,
        "sender_clinic": command.sender_clinic,
        "actor": command.actor,
        "correlation_id": command.correlation_id,
        "causation_id": command.message_id,
    }


@dataclass(frozen=True)
class Announcement:
    """An event, recorded once as a domain event and delivered to each clinic's inbox."""

    event: Message
    event_type: str
    clinics: tuple[str, ...]


def announce(announcements: list[Announcement]) -> list[Outgoing | InboxDelivery]:
    """The domain event plus one numbered inbox copy per clinic, for each announcement.

    Each stored copy has its own ``Nats-Msg-Id``: copies in one stream sharing an id would
    be de-duplicated into a single message, silently starving all but one inbox.
    """
    outputs: list[Outgoing | InboxDelivery] = []
    for item in announcements:
        event_id = str(item.event.message_id)
        outputs.append(Outgoing(subjects.domain_event(item.event_type), encode(item.event), f"{event_id}/event"))
        outputs.extend(
            InboxDelivery(clinic, item.event_type, item.event, f"{event_id}/inbox/{clinic}") for clinic in item.clinics
        )
    return outputs
