"""Idempotent creation and upgrade of the hub's streams, KV buckets and consumers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import nats
import nats.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, ServiceUnavailableError

from referral_hub.contracts.registry import Registry
from referral_hub.errors import HubError
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.jetstream import topology
from referral_hub.runtime.jetstream.registry_cache import store_registry
from referral_hub.runtime.jetstream.streams import AUDIT_STREAMS

NO_SUITABLE_PEERS: Final = 10005
"""'no suitable peers for placement': a new cluster whose meta leader has not met every peer yet."""
STREAM_NAME_IN_USE = 10058
"""JetStream's error code for 'stream name already in use with a different configuration'."""

T = TypeVar("T")
PATIENCE_SECONDS: Final = 60.0
"""How long provisioning retries a JetStream API that does not answer yet."""
RETRY_PAUSE_SECONDS: Final = 0.5
LEADER_POLLS: Final = 20

log = structlog.get_logger(__name__)


class ProvisionError(HubError):
    """A stream exists with another configuration, and this run may not change it."""


async def provision(  # noqa: PLR0913 - keyword options of one operation, each independent
    js: JetStreamContext,
    replicas: int = 1,
    budgets: Mapping[str, int] | None = None,
    patience: float = PATIENCE_SECONDS,
    *,
    audit_js: JetStreamContext | None = None,
    upgrade: bool = False,
) -> None:
    """Create what is missing; with ``upgrade``, bring what exists up to the declared configuration.

    Running it twice changes nothing. The everyday operator key may only create: changing
    an existing stream (new limits, a budget) is an ``upgrade``, which needs the break-glass
    key (``hubctl provision --break-glass``). Under authorization the audit streams live in
    their own account and are created through ``audit_js`` (the ``auditor`` key); without,
    ``js`` serves both. The audit stream's deny-delete and deny-purge flags are fixed at
    creation, which is the point: no later provisioning run can weaken them.

    A cluster that has just (re)started reports healthy before its streams have elected
    leaders, and the first API requests time out meanwhile (five seconds, measured on a
    restarted 3-node cluster); a new one may not place R3 streams until its meta leader has
    met every peer. Since every step is idempotent, the whole run is retried
    for up to ``patience`` seconds.
    """
    await while_settling(lambda: _provision_once(js, audit_js or js, replicas, budgets, upgrade=upgrade), patience)


async def while_settling(operation: Callable[[], Awaitable[T]], patience: float = PATIENCE_SECONDS) -> T:
    """Run an idempotent JetStream request, again and again while the server is still settling.

    Timeouts, "no responders", "no leader", a stream without a leader yet and "no suitable
    peers" are what a starting or restarting cluster answers for a few seconds; anything
    else, or any of them after ``patience`` seconds, is raised.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            return await operation()
        except (
            nats.errors.TimeoutError,
            ServiceUnavailableError,
            nats.errors.NoRespondersError,
            NoLeaderError,
            BadRequestError,
        ) as exc:
            if isinstance(exc, BadRequestError) and exc.err_code != NO_SUITABLE_PEERS:
                raise
            if time.monotonic() > deadline:
                raise
            log.warning("JetStream not answering yet; asking again", error=type(exc).__name__)
            await asyncio.sleep(RETRY_PAUSE_SECONDS)


class NoLeaderError(HubError):
    """A replicated stream has not elected a leader; it cannot take writes yet."""


async def _wait_for_leaders(js: JetStreamContext, streams: list[str]) -> None:
    """Return once every stream (and bucket) has an elected leader.

    A new R3 stream answers its first writes with "no responders" until its replicas have
    elected a leader, so services started right after provisioning would fail their first
    messages (seen in tests). Raises :class:`NoLeaderError`, which the caller retries.
    """
    for _ in range(LEADER_POLLS):
        leaderless = [name for name in streams if not await _has_leader(js, name)]
        if not leaderless:
            return
        await asyncio.sleep(RETRY_PAUSE_SECONDS)
    msg = f"no leader elected yet for {', '.join(leaderless)}"
    raise NoLeaderError(msg)


async def _has_leader(js: JetStreamContext, stream: str) -> bool:
    cluster = (await js.stream_info(stream)).cluster
    return cluster is not None and bool(cluster.leader)


async def _ensure_stream(js: JetStreamContext, config: api.StreamConfig, *, upgrade: bool) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:
            raise
        if not upgrade:
            msg = (
                f"stream {config.name} exists with another configuration; changing it needs the "
                "break-glass key: hubctl provision --break-glass"
            )
            raise ProvisionError(msg) from exc
        await js.update_stream(config)


async def _ensure_object_store(js: JetStreamContext, config: api.ObjectStoreConfig, *, upgrade: bool) -> None:
    """As :func:`_ensure_stream`, for an object store: a changed limit (``max_bytes``) is an upgrade."""
    try:
        # nats-py sets config.bucket from its first argument, so the name is passed twice.
        await js.create_object_store(config.bucket or "", config=config)
    except BadRequestError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:
            raise
        name = f"OBJ_{config.bucket}"
        if not upgrade:
            msg = (
                f"stream {name} exists with another configuration; changing it needs the "
                "break-glass key: hubctl provision --break-glass"
            )
            raise ProvisionError(msg) from exc
        current = (await js.stream_info(name)).config
        current.max_bytes = config.max_bytes or -1
        await js.update_stream(current)


async def _provision_once(
    js: JetStreamContext,
    audit_js: JetStreamContext,
    replicas: int,
    budgets: Mapping[str, int] | None,
    *,
    upgrade: bool,
) -> None:
    streams = topology.stream_configs(replicas, budgets)
    for config in streams:
        target = audit_js if config.name in AUDIT_STREAMS else js
        await _ensure_stream(target, config, upgrade=upgrade)
    for kv_config in topology.kv_configs(replicas):
        await js.create_key_value(config=kv_config)
    for object_config in topology.gateway_object_configs(replicas, budgets):
        await _ensure_object_store(js, object_config, upgrade=upgrade)
    for spec in topology.CONSUMERS:
        await js.add_consumer(spec.stream, config=spec.config())
    if replicas > 1:
        hub_streams = [config.name or "" for config in streams if config.name not in AUDIT_STREAMS]
        await _wait_for_leaders(js, [*hub_streams, *(f"KV_{config.bucket}" for config in topology.kv_configs())])
        await _wait_for_leaders(audit_js, list(AUDIT_STREAMS))
    log.info(
        "provisioned",
        streams=len(streams),
        consumers=len(topology.CONSUMERS),
        replicas=replicas,
    )


async def _silent(_error: Exception) -> None:
    """nats-py logs each failed attempt with a traceback; the caller gets the one exception instead."""


async def _connect_once(nats_url: str, options: dict[str, Any]) -> Client:
    """Connect for a one-off operation, failing in seconds when nobody answers or the key is refused.

    nats-py's defaults retry a first connection 60 times, 2 s apart: minutes of silence before
    an operator learns that the server is down or the credentials are missing.
    """
    return await nats.connect(
        server_urls(nats_url),
        connect_timeout=5,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.5,
        error_cb=_silent,
        **options,
    )


async def provision_as_operator(
    nats_url: str,
    replicas: int = 1,
    budgets: Mapping[str, int] | None = None,
    *,
    registry: Registry | None = None,
    break_glass: bool = False,
) -> None:
    """Provision a hub at ``nats_url`` with the operator's keys, and store ``registry`` if given.

    The hub account through ``admin`` and the audit account through ``auditor``: both may
    only create. With ``break_glass`` the two break-glass keys are used instead, and existing
    streams are brought up to the declared configuration (new limits, budgets).
    """
    hub_user = credentials.for_break_glass() if break_glass else credentials.for_hub_user(permissions.ADMIN)
    audit_user = (
        credentials.for_break_glass(permissions.AUDIT_BREAK_GLASS)
        if break_glass
        else credentials.for_hub_user(permissions.AUDITOR)
    )
    hub = await _connect_once(nats_url, hub_user.connect_options())
    try:
        audit = await _connect_once(nats_url, audit_user.connect_options())
        try:
            await provision(
                hub.jetstream(), replicas, budgets, audit_js=audit.jetstream(), upgrade=break_glass or bool(budgets)
            )
            if registry is not None:
                await store_registry(hub.jetstream(), registry)
        finally:
            await audit.drain()
    finally:
        await hub.drain()
