"""Idempotent creation and upgrade of the hub's streams, KV buckets and consumers."""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError

from referral_hub.runtime import topology

STREAM_NAME_IN_USE = 10058
"""JetStream's error code for 'stream name already in use with a different configuration'."""

log = structlog.get_logger(__name__)


async def provision(js: JetStreamContext, replicas: int = 1) -> None:
    """Create what is missing and bring what exists up to the declared configuration.

    Running it twice changes nothing; running it after an upgrade applies the new limits.
    The audit stream's deny-delete and deny-purge flags are fixed at creation, which is
    the point: no later provisioning run can weaken them.
    """
    for config in topology.stream_configs(replicas):
        try:
            await js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            await js.update_stream(config)
    for kv_config in topology.kv_configs(replicas):
        await js.create_key_value(config=kv_config)
    for spec in topology.CONSUMERS:
        await js.add_consumer(spec.stream, config=spec.config())
    log.info(
        "provisioned",
        streams=len(topology.stream_configs(replicas)),
        consumers=len(topology.CONSUMERS),
        replicas=replicas,
    )
