"""Running one service: connect, start handlers, serve metrics and health, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.security import NatsNKey, NatsSecurity
from nats.aio.client import Client
from nats.js import JetStreamContext

from referral_hub.runtime import credentials
from referral_hub.runtime.health import HealthServer, refresh_readiness
from referral_hub.runtime.servers import server_urls
from referral_hub.runtime.topology import ConsumerSpec

PULL_BATCH: Final = 32
"""Messages per fetch. faststream's pull subscriber handles a fetched batch concurrently
(an anyio task group), not in stream order, and fetches again only when the whole batch
is done, so only the cold consumers use it (page acks, max-deliveries advisories). The
hot ones (referrals intake, notifications events, audit) use ``runtime.pulling``."""
PULL_LINGER_SECONDS: Final = 0.05
"""How long one fetch may wait. nats-py's fetch(batch>1), when nothing is waiting, sends a
lingering pull that keeps collecting until this timeout, so it bounds idle latency.

Two traps decided here, both verified against a real server:
- faststream's batch mode (``PullSub(batch=True)``) keeps fetching until the batch is full
  or the timeout passes, so every lightly loaded message waited the full timeout;
- nats-py 2.16 raises a plain ``asyncio.TimeoutError`` when a fetch's deadline runs out
  before its lingering pull is sent, while faststream 0.7.8 suppresses only
  ``nats.errors.TimeoutError``. In batch mode the escaping error dropped messages already
  fetched (they came back only after ack_wait); in per-message mode it is raised only
  when nothing was fetched, and faststream's supervisor restarts the loop, losing
  nothing (one logged traceback)."""
GRACEFUL_SECONDS: Final = 10.0
SUPERVISOR_RESTART_SECONDS: Final = 1.0
CANCEL_AGAIN_SECONDS: Final = 1.0
"""How long a cancelled background task may take to end before it is cancelled again."""
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ServiceSettings:
    """Where a service connects and where it serves ``/metrics`` and ``/health``."""

    nats_url: str
    metrics_port: int
    metrics_host: str = "127.0.0.1"


@dataclass
class ServiceApp:
    """A service's wiring: its broker, the consumers it needs, and its start-up work."""

    name: str
    broker: NatsBroker
    consumers: tuple[ConsumerSpec, ...]
    background: Sequence[Callable[[Client], Coroutine[Any, Any, None]]] = ()
    """Long-running jobs (registry watch, timers), started as soon as NATS is connected."""
    before_start: Sequence[Callable[[Client], Awaitable[None]]] = ()
    """Run after the background jobs start and before any handler receives a message."""
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

    Here and not in ``runtime.credentials``: only service processes load faststream, and every
    ``hubctl`` command reads credentials.
    """
    options: dict[str, Any] = {"inbox_prefix": creds.inbox_prefix}
    seed, context = creds.seed_file(), creds.tls_context()
    if seed is not None:
        options["security"] = NatsNKey(seed, ssl_context=context)
    elif context is not None:
        options["security"] = NatsSecurity(ssl_context=context)
    return options


def lazy_connection(broker: NatsBroker) -> Callable[[], Client]:
    """A connection getter for objects built before the broker connects."""

    def connection() -> Client:
        return broker.connection

    return connection


def lazy_jetstream(broker: NatsBroker) -> Callable[[], JetStreamContext]:
    """A JetStream context getter for objects built before the broker connects."""

    def jetstream() -> JetStreamContext:
        return broker.connection.jetstream()

    return jetstream


async def undecoded(message: NatsMessage) -> bytes:
    """A stand-in for faststream's decoder: the handlers read the raw message themselves.

    faststream decodes every JSON body with Python's ``json`` before the handler runs, and a
    document nested a few thousand levels deep makes that raise ``RecursionError`` outside our
    handler: the message was never acknowledged and came back until MAX_DELIVER, unaudited
    meanwhile (found by the hostile-input fuzz test). Our handlers decode with the contracts'
    codec, which refuses such a document with a typed rejection.
    """
    return message.body


def attach(
    service: str,
    broker: NatsBroker,
    spec: ConsumerSpec,
    callback: Callable[[NatsMessage], Awaitable[None]],
    description: str,
) -> None:
    """Bind ``callback`` to the durable pull consumer ``spec`` with manual acknowledgement.

    ``declare=False``: streams are provisioned by ``hubctl provision``, never implicitly by a
    service with whatever defaults faststream would choose. ``inbox_prefix``: faststream
    passes nats-py the default ``_INBOX.`` for pull replies instead of the connection's own
    prefix, and a hub user may subscribe only under its own (``runtime.natsauth``).
    """
    broker.subscriber(
        spec.filter_subject,
        stream=JStream(spec.stream, declare=False),
        durable=spec.durable,
        config=spec.config(),
        pull_sub=PullSub(batch_size=PULL_BATCH, timeout=PULL_LINGER_SECONDS),
        ack_policy=AckPolicy.MANUAL,
        decoder=undecoded,
        inbox_prefix=f"{credentials.for_hub_user(service).inbox_prefix}.".encode(),
        title=spec.durable,
        description=description,
    )(callback)


async def supervise(job: Callable[[Client], Coroutine[Any, Any, None]], connection: Client) -> None:
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


async def cancel_and_wait(tasks: Sequence[asyncio.Task[Any]]) -> list[BaseException]:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again any that swallowed it.

    Returns what the tasks that had failed raised; the caller decides whether that is news.

    Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives as its inner future
    completes (CPython gh-86296, fixed in 3.12), and nats-py's requests use it: a readiness
    loop cancelled mid-request went on looping, and the service's shutdown waited for it
    forever (a rare hang of the crashed-audit test, seen under CPU contention).
    """
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_SECONDS)
        for task in pending:
            task.cancel()
    return [failure for task in tasks if not task.cancelled() and (failure := task.exception()) is not None]


async def serve(app: ServiceApp, settings: ServiceSettings, stop: asyncio.Event) -> None:
    """Run ``app`` until ``stop`` is set, then drain in-flight messages and shut down."""
    health = HealthServer(settings.metrics_port, settings.metrics_host)
    health.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        connection = await app.broker.connect()
        tasks.extend(asyncio.create_task(supervise(job, connection)) for job in app.background)
        for prepare in app.before_start:
            await prepare(connection)
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
