"""Wiring of the audit service: one durable consumer per audited stream, one chain writer."""

from __future__ import annotations

from nats.aio.client import Client

from referral_hub.audit.adapters import ChainWriter
from referral_hub.audit.handlers import AuditHandler
from referral_hub.runtime import natsmonitor, topology
from referral_hub.runtime.handling import Effects, LateHandler, subscriber
from referral_hub.runtime.service import ServiceApp, attach, lazy_jetstream, new_broker

SERVICE = "audit"


def create_app(nats_url: str, *, nats_monitor_url: str = "") -> ServiceApp:
    """The audit service; it also reports every hub stream's depth and, given its monitoring URL, NATS itself."""
    broker = new_broker(nats_url, SERVICE)
    handler = LateHandler(SERVICE)

    effects = Effects(lazy_jetstream(broker))

    async def prepare(connection: Client) -> None:
        handler.bind(AuditHandler(ChainWriter(connection.jetstream())))

    for spec in topology.AUDIT_CONSUMERS:
        attach(
            broker,
            spec,
            subscriber(SERVICE, spec.durable, effects, handler),
            f"Every message stored in {spec.stream}, recorded in the audit chain.",
        )
    monitor = natsmonitor.watch(nats_monitor_url) if nats_monitor_url else None
    return ServiceApp(
        name=SERVICE,
        broker=broker,
        consumers=topology.AUDIT_CONSUMERS,
        before_start=(prepare,),
        background=(monitor.poll_forever,) if monitor is not None else (),
        watched_streams=tuple(config.name for config in topology.stream_configs() if config.name),
    )
