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
from referral_hub.runtime import subjects, topology
from referral_hub.runtime.handling import Effects, LateHandler, subscriber
from referral_hub.runtime.registry import RegistryCache
from referral_hub.runtime.rejecting import HUB_SENDER, derived_id
from referral_hub.runtime.service import ServiceApp, attach, lazy_jetstream, new_broker

REGISTRY_LOAD_SECONDS: Final = 10.0
TIMER_INTERVAL_SECONDS: Final = 30.0
HEARTBEAT_INTERVAL_SECONDS: Final = 15.0


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
    """The referrals service: every clinic submission, SLA timers and inbox heartbeats."""
    policy = sla or SlaPolicy()
    broker = new_broker(nats_url, SERVICE)
    registry = RegistryCache()
    handler = LateHandler(SERVICE)
    effects = Effects(lazy_jetstream(broker))

    async def follow_registry(connection: Client) -> None:
        await registry.follow(connection.jetstream())

    async def prepare(connection: Client) -> None:
        try:
            await asyncio.wait_for(registry.loaded.wait(), REGISTRY_LOAD_SECONDS)
        except TimeoutError as exc:
            msg = "the clinic registry did not load; is the hub provisioned (hubctl provision)?"
            raise HubError(msg) from exc
        js = connection.jetstream()
        handler.bind(IntakeHandler(await referral_store(js), await careteam_store(js), registry, policy))

    async def fire_timers(connection: Client) -> None:
        sweeper = TimerSweeper(await referral_store(connection.jetstream()), effects, policy, clock)
        while True:
            await asyncio.sleep(timer_interval)
            await sweeper.sweep_once()

    async def heartbeats(connection: Client) -> None:
        while True:
            await asyncio.sleep(heartbeat_interval)
            await send_heartbeats(connection, registry, effects, clock())

    attach(
        broker,
        topology.REFERRALS_INTAKE,
        subscriber(SERVICE, "intake", effects, handler),
        "Clinic submissions (the ClinicCommand union): referral lifecycle, plans, alerts, page acks.",
    )
    return ServiceApp(
        name=SERVICE,
        broker=broker,
        consumers=(topology.REFERRALS_INTAKE,),
        background=(follow_registry, fire_timers, heartbeats),
        before_start=(prepare,),
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
