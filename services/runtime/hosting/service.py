"""Running one service: connect, build it, start its jobs, serve metrics and health, stop cleanly.

faststream's broker holds the connection (credentials, reconnects, graceful stop). Every
durable consumer is read by the hub's own pull loop (``runtime.messaging.pull_loop``), not by a faststream
subscriber: decision 0005 gives the measurements and the traps that decided it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from faststream.nats import NatsBroker
from faststream.nats.security import NatsNKey, NatsSecurity
from nats.aio.client import Client

from referral_hub.runtime.broker import credentials
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.hosting.health import HealthServer, refresh_readiness
from referral_hub.runtime.hosting.tasks import cancel_and_wait
from referral_hub.runtime.jetstream.topology import ConsumerSpec
from referral_hub.runtime.messaging.pull_loop import Job

GRACEFUL_SECONDS: Final = 10.0
SUPERVISOR_RESTART_SECONDS: Final = 1.0
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ServiceSettings:
    """Where a service connects and where it serves ``/metrics`` and ``/health``."""

    nats_url: str
    metrics_port: int
    metrics_host: str = "127.0.0.1"


async def _nothing_to_follow(_connection: Client) -> None:
    return None


@dataclass
class ServiceApp:
    """A service's wiring: its broker, the consumers it pulls, and how it is built once connected.

    ``build`` runs after the connection exists, so handlers, stores and writers are built with
    it and never hold a placeholder; it returns the jobs that run the service (each consumer's
    pull loop among them), which start only then. ``follow`` starts first, for what ``build``
    waits on (the registry watch that must have read its bucket before a handler may use it).
    """

    name: str
    broker: NatsBroker
    consumers: tuple[ConsumerSpec, ...]
    """The durable consumers the service pulls (``hubctl provision`` creates them); readiness checks them."""
    build: Callable[[Client], Awaitable[Sequence[Job]]]
    follow: Job = _nothing_to_follow
    watched_streams: tuple[str, ...] = ()
    """Streams whose depth this service reports (one service reports each, so series don't repeat)."""


def new_broker(nats_url: str, service: str) -> NatsBroker:
    """A broker whose own log lines go through stdlib logging at WARNING and up.

    Our handlers log one structured line per message; faststream's own per-message and
    shutdown chatter would duplicate them in another format.
    """
    return NatsBroker(
        server_urls(nats_url),
        name=f"hub-{service}",
        logger=logging.getLogger(f"referral_hub.faststream.{service}"),
        log_level=logging.DEBUG,
        graceful_timeout=GRACEFUL_SECONDS,
        max_reconnect_attempts=-1,
        **broker_options(credentials.for_hub_user(service)),
    )


def broker_options(creds: credentials.NatsCredentials) -> dict[str, Any]:
    """Keyword arguments for faststream's ``NatsBroker``, which takes credentials as ``security=``.

    Here and not in ``runtime.broker.credentials``: only service processes load faststream, and every
    ``hubctl`` command reads credentials.
    """
    options: dict[str, Any] = {"inbox_prefix": creds.inbox_prefix}
    seed, context = creds.seed_file(), creds.tls_context()
    if seed is not None:
        options["security"] = NatsNKey(seed, ssl_context=context)
    elif context is not None:
        options["security"] = NatsSecurity(ssl_context=context)
    return options


async def supervise(job: Job, connection: Client) -> None:
    """Run a background job forever: if it fails, log it and start it again after a pause.

    Without this a transient NATS error would end the timer sweep or the registry watch
    for the life of the process, silently.
    """
    while True:
        try:
            await job(connection)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background job failed; restarting", job=getattr(job, "__name__", repr(job)))
            await asyncio.sleep(SUPERVISOR_RESTART_SECONDS)
        else:
            return


async def serve(app: ServiceApp, settings: ServiceSettings, stop: asyncio.Event) -> None:
    """Run ``app`` until ``stop`` is set, then drain in-flight messages and shut down."""
    health = HealthServer(settings.metrics_port, settings.metrics_host)
    health.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        connection = await app.broker.connect()
        tasks.append(asyncio.create_task(supervise(app.follow, connection)))
        tasks.extend(asyncio.create_task(supervise(job, connection)) for job in await app.build(connection))
        await app.broker.start()
        tasks.append(
            asyncio.create_task(refresh_readiness(health, app.name, connection, app.consumers, app.watched_streams))
        )
        base = f"http://{settings.metrics_host}:{health.port}"
        log.info("service started", metrics_url=f"{base}/metrics", health_url=f"{base}/health")
        await stop.wait()
    finally:
        for failure in await cancel_and_wait(tasks):
            log.warning("background task had failed before stopping", error=repr(failure))
        await app.broker.stop()
        health.stop()
        log.info("service stopped")


def run_until_signalled(app: ServiceApp, settings: ServiceSettings) -> None:
    """Entry point for ``hubctl run``: SIGINT or SIGTERM stops the service gracefully."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(app, settings, stop)

    asyncio.run(main())
