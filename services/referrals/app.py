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
from referral_hub.runtime import metrics, subjects, topology
from referral_hub.runtime.exhausted import ExhaustedHandler
from referral_hub.runtime.handling import Effects, LateHandler, subscriber
from referral_hub.runtime.ids import derived_id
from referral_hub.runtime.inboxread import serve_inbox_reads
from referral_hub.runtime.pulling import Pulled, order_by_referral
from referral_hub.runtime.refusals import HUB_SENDER
from referral_hub.runtime.registry import RegistryCache
from referral_hub.runtime.service import ServiceApp, attach, lazy_connection, lazy_jetstream, new_broker

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
    """The referrals service: every clinic submission, SLA timers and inbox heartbeats.

    The intake runs on ``runtime.pulling`` rather than a faststream subscriber, for
    per-referral order with concurrency across referrals (see that module).
    """
    policy = sla or SlaPolicy()
    broker = new_broker(nats_url, SERVICE)
    registry = RegistryCache()
    handler = LateHandler(SERVICE)
    effects = Effects(lazy_connection(broker))
    started = asyncio.Event()

    async def follow_registry(connection: Client) -> None:
        await registry.follow(connection.jetstream())

    async def prepare(connection: Client) -> None:
        try:
            await asyncio.wait_for(registry.loaded.wait(), REGISTRY_LOAD_SECONDS)
        except TimeoutError as exc:
            msg = "the clinic registry did not load; is the hub provisioned (hubctl provision)?"
            raise HubError(msg) from exc
        js = connection.jetstream()
        handler.bind(
            IntakeHandler(
                await referral_store(js, REFERRAL_CACHE), await careteam_store(js, REFERRAL_CACHE), registry, policy
            )
        )
        started.set()

    async def fire_timers(connection: Client) -> None:
        sweeper = TimerSweeper(await referral_store(connection.jetstream()), effects, policy, clock)
        while True:
            await sweeper.sweep_once()
            await asyncio.sleep(timer_interval)

    async def heartbeats(connection: Client) -> None:
        while True:
            await asyncio.sleep(heartbeat_interval)
            await send_heartbeats(connection, registry, effects, clock())

    metrics.expose_service(SERVICE, handlers=(INTAKE, EXHAUSTED))
    attach(
        SERVICE,
        broker,
        topology.EXHAUSTED,
        subscriber(
            SERVICE,
            EXHAUSTED,
            effects,
            ExhaustedHandler(lazy_jetstream(broker), lambda c: registry.get(c) is not None),
        ),
        "MAX_DELIVERIES advisories: the named message becomes a processing_failed dead letter.",
    )
    return ServiceApp(
        name=SERVICE,
        broker=broker,
        consumers=(topology.REFERRALS_INTAKE, topology.EXHAUSTED),
        background=(
            follow_registry,
            Pulled(SERVICE, INTAKE, topology.REFERRALS_INTAKE, order_by_referral).job(effects, handler, started),
            fire_timers,
            heartbeats,
            serve_inbox_reads,
        ),
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
