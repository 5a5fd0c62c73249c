"""Wiring of the referrals service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from nats.aio.client import Client

from referral_hub.referrals.adapters import careteam_store, referral_store
from referral_hub.referrals.domain import SlaPolicy
from referral_hub.referrals.handlers import SERVICE, IntakeHandler, TimerSweeper, heartbeat_forever
from referral_hub.runtime.hosting import metrics
from referral_hub.runtime.hosting.service import ServiceApp, new_broker
from referral_hub.runtime.jetstream import topology
from referral_hub.runtime.jetstream.registry_cache import RegistryCache
from referral_hub.runtime.messaging.ack_policy import Effects
from referral_hub.runtime.messaging.inbox_reads import serve_inbox_reads
from referral_hub.runtime.messaging.max_deliveries import MaxDeliveriesHandler
from referral_hub.runtime.messaging.pull_loop import Job, PullConsumer, order_by_referral, unordered

REGISTRY_LOAD_SECONDS: Final = 10.0
TIMER_INTERVAL_SECONDS: Final = 30.0
HEARTBEAT_INTERVAL_SECONDS: Final = 15.0
INTAKE: Final = "intake"
EXHAUSTED: Final = "exhausted"
"""The handlers' names in metrics and logs."""
REFERRAL_CACHE: Final = 50_000
"""Referrals remembered with their KV revision, to skip the read before each write."""


def utc_now() -> datetime:
    """The production clock."""
    return datetime.now(UTC)


def create_app(
    nats_url: str,
    *,
    sla: SlaPolicy | None = None,
    timer_interval: float = TIMER_INTERVAL_SECONDS,
    heartbeat_interval: float = HEARTBEAT_INTERVAL_SECONDS,
    clock: Callable[[], datetime] = utc_now,
) -> ServiceApp:
    """The referrals service: every clinic submission, dead letters, SLA timers and inbox heartbeats."""
    policy = sla or SlaPolicy()
    registry = RegistryCache()

    async def follow_registry(connection: Client) -> None:
        await registry.follow(connection.jetstream())

    async def build(connection: Client) -> list[Job]:
        await registry.wait_loaded(REGISTRY_LOAD_SECONDS)
        js, effects = connection.jetstream(), Effects(connection)
        referrals, careteams = await referral_store(js, REFERRAL_CACHE), await careteam_store(js, REFERRAL_CACHE)
        sweeper = TimerSweeper(await referral_store(js), effects, policy, clock)

        async def sla_timers(_connection: Client) -> None:
            await sweeper.sweep_forever(timer_interval)

        async def heartbeats(_connection: Client) -> None:
            await heartbeat_forever(connection, registry, effects, clock, heartbeat_interval)

        return [
            PullConsumer(SERVICE, INTAKE, topology.REFERRALS_INTAKE, order_by_referral).job(
                effects, IntakeHandler(referrals, careteams, registry, policy)
            ),
            PullConsumer(SERVICE, EXHAUSTED, topology.EXHAUSTED, unordered).job(
                effects, MaxDeliveriesHandler(js, lambda clinic: registry.get(clinic) is not None)
            ),
            sla_timers,
            heartbeats,
            serve_inbox_reads,
        ]

    metrics.expose_service(SERVICE, handlers=(INTAKE, EXHAUSTED))
    return ServiceApp(
        name=SERVICE,
        broker=new_broker(nats_url, SERVICE),
        consumers=(topology.REFERRALS_INTAKE, topology.EXHAUSTED),
        build=build,
        follow=follow_registry,
    )
