"""What a handler hands back to be published, as plain data, and how events become outputs.

A domain decides its events and announcements without I/O; ``runtime.messaging.ack_policy.Effects``
publishes these outputs and ``runtime.messaging.inbox_writer.InboxWriter`` numbers the inbox deliveries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict
from uuid import UUID

from referral_hub.contracts.base import Message
from referral_hub.contracts.codec import encode
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.messaging.ids import derived_id


@dataclass(frozen=True)
class Outgoing:
    """A message a handler wants published, with the id JetStream de-duplicates it by."""

    subject: str
    payload: bytes
    msg_id: str


@dataclass(frozen=True)
class ToInbox:
    """A message for one clinic's inbox; the writer fills in ``event_number``."""

    clinic: str
    message_type: str
    message: Message
    msg_id: str


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


def announce(announcements: list[Announcement]) -> list[Outgoing | ToInbox]:
    """The domain event plus one numbered inbox copy per clinic, for each announcement.

    Each stored copy has its own ``Nats-Msg-Id``: copies in one stream sharing an id would
    be de-duplicated into a single message, silently starving all but one inbox.
    """
    outputs: list[Outgoing | ToInbox] = []
    for item in announcements:
        event_id = str(item.event.message_id)
        outputs.append(Outgoing(subjects.domain_event(item.event_type), encode(item.event), f"{event_id}/event"))
        outputs.extend(
            ToInbox(clinic, item.event_type, item.event, f"{event_id}/inbox/{clinic}") for clinic in item.clinics
        )
    return outputs
