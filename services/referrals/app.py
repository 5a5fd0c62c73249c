"""Wiring of the referrals service."""

from __future__ import annotations

import asyncio
from typing import Final

from nats.aio.client import Client
from nats.js import JetStreamContext

from referral_hub.errors import HubError
from referral_hub.referrals.adapters import ReferralStore
from referral_hub.referrals.handlers import SERVICE, IntakeHandler
from referral_hub.runtime import topology
from referral_hub.runtime.handling import LateHandler, subscriber
from referral_hub.runtime.registry import RegistryCache
from referral_hub.runtime.service import ServiceApp, attach, new_broker

REGISTRY_LOAD_SECONDS: Final = 10.0


def create_app(nats_url: str) -> ServiceApp:
    """The referrals service: one durable consumer over every clinic submission."""
    broker = new_broker(nats_url, SERVICE)
    registry = RegistryCache()
    handler = LateHandler(SERVICE)

    def jetstream() -> JetStreamContext:
        return broker.connection.jetstream()

    async def follow_registry(connection: Client) -> None:
        await registry.follow(connection.jetstream())

    async def prepare(connection: Client) -> None:
        try:
            await asyncio.wait_for(registry.loaded.wait(), REGISTRY_LOAD_SECONDS)
        except TimeoutError as exc:
            msg = "the clinic registry did not load; is the hub provisioned (hubctl provision)?"
            raise HubError(msg) from exc
        handler.bind(IntakeHandler(await ReferralStore.open(connection.jetstream()), registry))

    attach(
        broker,
        topology.REFERRALS_INTAKE,
        subscriber(SERVICE, "intake", jetstream, handler),
        "Clinic submissions (the ClinicCommand union): referral lifecycle, plans, alerts, page acks.",
    )
    return ServiceApp(
        name=SERVICE,
        broker=broker,
        consumers=(topology.REFERRALS_INTAKE,),
        background=(follow_registry,),
        before_start=(prepare,),
    )
