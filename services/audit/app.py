"""Wiring of the audit service: one durable consumer per audited stream, one chain writer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from nats.aio.client import Client

from referral_hub.audit.adapters import ChainWriter, Checkpointer
from referral_hub.audit.checkpoints import load_key
from referral_hub.audit.handlers import AuditHandler
from referral_hub.audit.witnessing import InboxWitnesses
from referral_hub.runtime.hosting import metrics
from referral_hub.runtime.hosting.service import ServiceApp, new_broker
from referral_hub.runtime.jetstream import topology
from referral_hub.runtime.messaging.ack_policy import Effects
from referral_hub.runtime.messaging.pull_loop import Job, PullConsumer, unordered

SERVICE = "audit"
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CheckpointPolicy:
    """A checkpoint every ``entries`` entries or every ``seconds``, whichever comes first."""

    entries: int = 1000
    seconds: float = 60.0
    poll_seconds: float = 1.0


def create_app(
    nats_url: str,
    *,
    nats_monitor_url: str = "",
    signing_key: str = "",
    checkpoints: CheckpointPolicy | None = None,
    witness_inboxes: bool = False,
) -> ServiceApp:
    """The audit service.

    It also reports every hub stream's depth. With a signing key (an Ed25519 seed, hex) it
    publishes signed checkpoints; without one it says so at start and publishes none.
    NATS's own figures come from the NATS exporter (``runtime.broker.exporter``), not from here:
    ``nats_monitor_url`` is accepted for older command lines and only noted in the log.

    The signing key may also be a signed-note ``PRIVATE+KEY+...`` key; while rotating, it is
    the new key and then the old one, one per line (``checkpoints.load_key``). A malformed
    key stops the service at once. With ``witness_inboxes`` every checkpoint is also delivered
    to every clinic's inbox (``audit.witnessing``; from the audit account it uses the imports
    its ``NEEDED_FROM_HUB`` names, which ``runtime.broker.permissions`` grants). ``hubctl run audit``
    always witnesses.
    """
    policy = checkpoints or CheckpointPolicy()
    keys = load_key(signing_key) if signing_key else None

    async def checkpoint_forever(connection: Client) -> None:
        assert keys is not None  # noqa: S101 - only scheduled with a key
        witnesses = InboxWitnesses(connection) if witness_inboxes else None
        checkpointer = Checkpointer(connection.jetstream(), keys, policy.entries, policy.seconds, witnesses)
        while True:
            await checkpointer.run_once(datetime.now(UTC))
            await asyncio.sleep(policy.poll_seconds)

    if nats_monitor_url:
        log.warning(
            "NATS metrics come from the NATS exporter (python -m referral_hub.runtime.broker.exporter), "
            "not the audit service; its monitoring URL is not used here"
        )
    if keys is None:
        log.warning("no audit signing key (HUB_AUDIT_SIGNING_KEY_FILE): checkpoints are not published")

    async def build(connection: Client) -> list[Job]:
        effects, handler = Effects(connection), AuditHandler(ChainWriter(connection))
        jobs = [
            PullConsumer(SERVICE, spec.durable, spec, unordered).job(effects, handler)
            for spec in topology.AUDIT_CONSUMERS
        ]
        return [*jobs, checkpoint_forever] if keys is not None else jobs

    metrics.expose_service(SERVICE, handlers=[spec.durable for spec in topology.AUDIT_CONSUMERS])
    return ServiceApp(
        name=SERVICE,
        broker=new_broker(nats_url, SERVICE),
        consumers=topology.AUDIT_CONSUMERS,
        build=build,
        watched_streams=tuple(config.name for config in topology.stream_configs() if config.name),
    )
