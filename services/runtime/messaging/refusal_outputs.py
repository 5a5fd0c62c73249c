"""Turning a refusal into a typed rejection for the sender and a dead letter for operators.

Both land in streams the audit service records, so a refusal reaches the sender's inbox,
the dead-letter subject and the audit log: never a crash, never a silent drop.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from referral_hub.contracts.codec import encode, lenient_decode
from referral_hub.contracts.rejections import DeadLetter, Rejection
from referral_hub.runtime.hosting.metrics import REJECTIONS
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER
from referral_hub.runtime.messaging.ack_policy import Handled
from referral_hub.runtime.messaging.ids import derived_id
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.outgoing import Outgoing, ToInbox
from referral_hub.runtime.messaging.refusals import HUB_SENDER, Refusal


@dataclass(frozen=True)
class Offender:
    """What is known of the refused message's origin, however little decoded."""

    sender_clinic: str | None
    message_id: str
    correlation_id: uuid.UUID | None = None
    referral_id: str = ""


def refusal_outputs(service: str, delivery: Incoming, refusal: Refusal, offender: Offender) -> list[Outgoing | ToInbox]:
    """The rejection for the sender's inbox (when the sender is a known clinic) and the dead letter."""
    seed = delivery.source_key
    outputs: list[Outgoing | ToInbox] = []
    if offender.sender_clinic is not None:
        rejection = Rejection(
            message_id=derived_id(seed, "rejection"),
            occurred_at=delivery.stored_at,
            sender_clinic=HUB_SENDER,
            actor=service,
            correlation_id=offender.correlation_id or derived_id(seed, "correlation"),
            causation_id=_as_uuid(offender.message_id),
            code=refusal.code,
            reason=refusal.reason[:1000],
            offending_message_id=offender.message_id[:200],
            offending_subject=delivery.subject[:200],
            current_state=refusal.current_state,
            current_version=refusal.current_version,
            offending_referral_id=offender.referral_id[:200],
        )
        outputs.append(ToInbox(offender.sender_clinic, "rejection", rejection, str(rejection.message_id)))
    dead_letter = DeadLetter(
        code=refusal.code,
        reason=refusal.reason[:1000],
        service=service,
        original_subject=delivery.subject,
        original_stream=delivery.stream,
        original_sequence=delivery.sequence,
        original_headers=dict(delivery.headers),
        payload=delivery.data,
        offending_message_id=offender.message_id[:200],
    )
    outputs.append(Outgoing(subjects.deadletter(service), encode(dead_letter), f"{seed}/deadletter"))
    return outputs


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def offending_message_id(delivery: Incoming, payload_message_id: str | None) -> str:
    """The best available id of a refused message: payload, then header, then stream position."""
    return payload_message_id or delivery.headers.get(MSG_ID_HEADER) or delivery.source_key


class _Identity(msgspec.Struct):
    """The envelope ids we try to read even from a message that failed validation."""

    message_id: str = ""
    correlation_id: str = ""
    referral_id: object = ""
    """Any type: a non-string here must not cost the two ids above."""


def offender_of(delivery: Incoming, sender_clinic: str | None, message_id: uuid.UUID | None = None) -> Offender:
    """What is known of a refused message's origin, its ids read leniently from the payload.

    ``message_id`` is the decoded id when the message passed validation; otherwise the
    payload's ``message_id`` is used if it is there, then the header, then the stream position.
    """
    identity = lenient_decode(delivery.data, _Identity) or _Identity()
    return Offender(
        sender_clinic=sender_clinic,
        message_id=offending_message_id(delivery, str(message_id) if message_id else identity.message_id),
        correlation_id=_as_uuid(identity.correlation_id),
        referral_id=identity.referral_id if isinstance(identity.referral_id, str) else "",
    )


def refuse(
    service: str, delivery: Incoming, refusal: Refusal, message_id: uuid.UUID | None, registered: Callable[[str], bool]
) -> Handled:
    """The outcome of refusing a clinic submission: rejection, dead letter, metric and log fields.

    Only a registered sender gets an inbox rejection; anyone else's message is dead-lettered.
    """
    REJECTIONS.labels(service, refusal.code).inc()
    out = subjects.parse_clinic_out(delivery.subject)
    sender = out.clinic_id if out is not None and registered(out.clinic_id) else None
    return Handled(
        outcome="rejected",
        outgoing=refusal_outputs(service, delivery, refusal, offender_of(delivery, sender, message_id)),
        log_fields={"rejection_code": str(refusal.code), "reason": refusal.reason[:300]},
    )
