"""Wiring of the referrals service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from nats.aio.client import Client

from referral_hub.contracts.codec import encode
from referral_hub.contracts.inbox import InboxHeartbeat
from referral_hub.errors import HubError
from referral_hub.referrals.adapters import careteam_store, referral_store
from referral_hub.referrals.domain import SlaPolicy
from referral_hub.referrals.handlers import SERVICE, IntakeHandler, TimerSweeper
from referral_hub.runtime.hosting import metrics
from referral_hub.runtime.hosting.service import ServiceApp, new_broker
from referral_hub.runtime.jetstream import subjects, topology
from referral_hub.runtime.jetstream.registry_cache import RegistryCache
from referral_hub.runtime.messaging.ack_policy import Effects
from referral_hub.runtime.messaging.ids import derived_id
from referral_hub.runtime.messaging.inbox_reads import serve_inbox_reads
from referral_hub.runtime.messaging.max_deliveries import MaxDeliveriesHandler
from referral_hub.runtime.messaging.pull_loop import Job, PullConsumer, order_by_referral, unordered
from referral_hub.runtime.messaging.refusals import HUB_SENDER

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
        try:
            await asyncio.wait_for(registry.loaded.wait(), REGISTRY_LOAD_SECONDS)
        except TimeoutError as exc:
            msg = "the clinic registry did not load; is the hub provisioned (hubctl provision)?"
            raise HubError(msg) from exc
        js, effects = connection.jetstream(), Effects(connection)
        referrals, careteams = await referral_store(js, REFERRAL_CACHE), await careteam_store(js, REFERRAL_CACHE)
        sweeper = TimerSweeper(await referral_store(js), effects, policy, clock)

        async def fire_timers(_connection: Client) -> None:
            while True:
                await sweeper.sweep_once()
                await asyncio.sleep(timer_interval)

        async def heartbeats(_connection: Client) -> None:
            while True:
                await asyncio.sleep(heartbeat_interval)
                await send_heartbeats(connection, registry, effects, clock())

        return [
            PullConsumer(SERVICE, INTAKE, topology.REFERRALS_INTAKE, order_by_referral).job(
                effects, IntakeHandler(referrals, careteams, registry, policy)
            ),
            PullConsumer(SERVICE, EXHAUSTED, topology.EXHAUSTED, unordered).job(
                effects, MaxDeliveriesHandler(js, lambda clinic: registry.get(clinic) is not None)
            ),
            fire_timers,
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


async def send_heartbeats(connection: Client, registry: RegistryCache, effects: Effects, now: datetime) -> None:
    """Tell every clinic its newest inbox event number, so it can spot a gap and replay."""
    for clinic in registry.clinics():
        _, last = await effects.inbox.head(clinic.id)
        beat = InboxHeartbeat(
            message_id=derived_id(f"{clinic.id}/{now.isoformat()}", "heartbeat"),
            occurred_at=now,
            sender_clinic=HUB_SENDER,
            actor=SERVICE,
            correlation_id=derived_id(clinic.id, "heartbeat"),
            clinic=clinic.id,
            last_event_number=last,
        )
        await connection.publish(subjects.clinic_heartbeat(clinic.id), encode(beat))
