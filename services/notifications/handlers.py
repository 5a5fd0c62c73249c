"""What the notifications service does with one domain event."""

from __future__ import annotations

from referral_hub.contracts.codec import SchemaViolationError, decode_hub_message, encode
from referral_hub.notifications.domain import route
from referral_hub.runtime import subjects
from referral_hub.runtime.handling import Delivery, Handled
from referral_hub.runtime.inbox import Outgoing


async def handle_event(delivery: Delivery) -> Handled:
    """Route the event; events that notify nobody are acknowledged as ``ignored``.

    Domain events are written by the hub itself, so one that fails to decode is a hub bug:
    it is acknowledged as ``undecodable`` (and visible in metrics and the audit log, which
    records the same stored message) rather than redelivered forever.
    """
    try:
        event = decode_hub_message(delivery.data)
    except SchemaViolationError as exc:
        return Handled(outcome="undecodable", log_fields={"error": str(exc)[:300]})
    notifications = route(event, delivery.stored_at)
    if not notifications:
        return Handled(outcome="ignored")
    return Handled(
        outcome="notified",
        outgoing=[
            Outgoing(subjects.domain_event("notification.queued"), encode(n), str(n.message_id)) for n in notifications
        ],
        log_fields={
            "notified_clinics": ",".join(n.clinic for n in notifications),
            "topic": notifications[0].topic,
        },
    )
