"""Wiring of the notifications service."""

from __future__ import annotations

from referral_hub.notifications.domain import SERVICE
from referral_hub.notifications.handlers import handle_event
from referral_hub.runtime import topology
from referral_hub.runtime.handling import Effects, subscriber
from referral_hub.runtime.service import ServiceApp, attach, lazy_jetstream, new_broker


def create_app(nats_url: str) -> ServiceApp:
    """The notifications service: one durable consumer over the domain events."""
    broker = new_broker(nats_url, SERVICE)

    effects = Effects(lazy_jetstream(broker))

    attach(
        broker,
        topology.NOTIFICATIONS_EVENTS,
        subscriber(SERVICE, "events", effects, handle_event),
        "Domain events (HubMessage union) that may notify or page care-team members.",
    )
    return ServiceApp(name=SERVICE, broker=broker, consumers=(topology.NOTIFICATIONS_EVENTS,))
