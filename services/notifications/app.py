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
from referral_hub.notifications.delivery import Deliverer
from referral_hub.notifications.domain import SERVICE
from referral_hub.notifications.paging import EscalationPolicy
from referral_hub.notifications.sweeping import Sweeper
from referral_hub.runtime import topology
from referral_hub.runtime.handling import Effects, LateHandler, subscriber
from referral_hub.runtime.pulling import Pulled, order_by_patient
from referral_hub.runtime.registry import RegistryCache
from referral_hub.runtime.service import ServiceApp, attach, lazy_connection, new_broker

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

    The events run on ``runtime.pulling`` (a batch pull loop, in order per patient): the hot
    path of the alert-to-page chain, where faststream's per-message subscriber costs most.
    """
    timing = handlers.Timing(policy or EscalationPolicy(), clock)
    broker = new_broker(nats_url, SERVICE)
    effects = Effects(lazy_connection(broker))
    registry, views = RegistryCache(), adapters.Views()
    events, acks = LateHandler(SERVICE), LateHandler(SERVICE)
    sweepers: list[Sweeper] = []
    started = asyncio.Event()

    async def follow(connection: Client) -> None:
        await asyncio.gather(registry.follow(connection.jetstream()), views.follow(connection.jetstream()))

    async def prepare(connection: Client) -> None:
        await adapters.wait_loaded(registry, views, LOAD_SECONDS)
        stores = await adapters.open_stores(connection.jetstream(), views)
        deliverer = Deliverer(stores.pages, registry, Channels(channels or ChannelSettings.from_env()), effects, clock)
        hub = handlers.Hub(stores, registry, deliverer, timing)
        events.bind(partial(handlers.on_event, hub))
        acks.bind(partial(handlers.on_ack, hub))
        sweepers.append(Sweeper(hub))
        started.set()

    async def sweep(_connection: Client) -> None:
        await started.wait()
        while True:
            await asyncio.sleep(sweep_interval)
            await sweepers[0].sweep_once()

    metrics.expose(timing.policy)
    attach(
        SERVICE,
        broker,
        topology.NOTIFICATIONS_ACKS,
        subscriber(SERVICE, metrics.PAGE_ACKS, effects, acks),
        "Members acknowledge pages (page.ack); escalation stops and the care team is told who.",
    )
    return ServiceApp(
        name=SERVICE,
        broker=broker,
        consumers=(topology.NOTIFICATIONS_EVENTS, topology.NOTIFICATIONS_ACKS),
        background=(
            follow,
            Pulled(SERVICE, metrics.EVENTS, topology.NOTIFICATIONS_EVENTS, order_by_patient).job(
                effects, events, started
            ),
            sweep,
        ),
        before_start=(prepare,),
    )
