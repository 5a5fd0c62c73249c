"""Wiring of the notifications service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Final

from nats.aio.client import Client

from referral_hub.notifications import adapters, handlers, metrics
from referral_hub.notifications.channels import Channels, ChannelSettings
from referral_hub.notifications.dispatch import Dispatcher
from referral_hub.notifications.domain import SERVICE
from referral_hub.notifications.page_rules import EscalationPolicy
from referral_hub.notifications.sweeping import Sweeper
from referral_hub.runtime.hosting.service import ServiceApp, new_broker
from referral_hub.runtime.jetstream import topology
from referral_hub.runtime.jetstream.registry_cache import RegistryCache
from referral_hub.runtime.messaging.ack_policy import Effects
from referral_hub.runtime.messaging.pull_loop import Job, PullConsumer, order_by_patient, unordered

SWEEP_INTERVAL_SECONDS: Final = 5.0
LOAD_SECONDS: Final = 10.0


def utc_now() -> datetime:
    """The production clock."""
    return datetime.now(UTC)


def create_app(
    nats_url: str,
    *,
    policy: EscalationPolicy | None = None,
    channels: ChannelSettings | None = None,
    clock: Callable[[], datetime] = utc_now,
    sweep_interval: float = SWEEP_INTERVAL_SECONDS,
) -> ServiceApp:
    """The notifications service: domain events in, pages and notifications out, acks, escalation.

    Events are handled in order per patient (an alert before its resolution); page acks in any order.
    """
    timing = handlers.Timing(policy or EscalationPolicy(), clock)
    registry, views = RegistryCache(), adapters.Views()

    async def follow(connection: Client) -> None:
        await asyncio.gather(registry.follow(connection.jetstream()), views.follow(connection.jetstream()))

    async def build(connection: Client) -> list[Job]:
        await adapters.wait_loaded(registry, views, LOAD_SECONDS)
        effects = Effects(connection)
        stores = await adapters.open_stores(connection.jetstream(), views)
        settings = channels or ChannelSettings.from_env()
        deliverer = Dispatcher(stores.pages, registry, Channels(settings), effects, clock)
        hub = handlers.Hub(stores, registry, deliverer, timing)
        sweeper = Sweeper(hub, settings.working_kinds())

        async def sweep(_connection: Client) -> None:
            while True:
                await asyncio.sleep(sweep_interval)
                await sweeper.sweep_once()

        return [
            PullConsumer(SERVICE, metrics.EVENTS, topology.NOTIFICATIONS_EVENTS, order_by_patient).job(
                effects, partial(handlers.on_event, hub)
            ),
            PullConsumer(SERVICE, metrics.PAGE_ACKS, topology.NOTIFICATIONS_ACKS, unordered).job(
                effects, partial(handlers.on_ack, hub)
            ),
            sweep,
        ]

    metrics.expose(timing.policy)
    return ServiceApp(
        name=SERVICE,
        broker=new_broker(nats_url, SERVICE),
        consumers=(topology.NOTIFICATIONS_EVENTS, topology.NOTIFICATIONS_ACKS),
        build=build,
        follow=follow,
    )
