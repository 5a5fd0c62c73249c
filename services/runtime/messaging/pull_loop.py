"""How every durable consumer is read: a pipelined pull loop, concurrent across keys, in order within one.

Every service consumer runs on it (decision 0005), the hot ones for throughput with per-key
order (one referral's commands apply in the order they were stored), the cold ones (page
acks, max-deliveries advisories) because one path is one acknowledgement policy to reason
about. faststream's pull subscriber could not give both, as verified against a real server:
its batch mode waits out the whole fetch timeout under light load and drops fetched
messages when nats-py raises a plain ``asyncio.TimeoutError``; its per-message mode runs
a fetched batch as tasks whose order is not the stream's. This loop sees the whole batch
before dispatching it, so ordering is decided on stream sequence, not on scheduling, and
it keeps fetching while earlier messages are still being handled (:class:`KeyedPipeline`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from referral_hub.contracts.codec import lenient_decode
from referral_hub.runtime.broker import credentials
from referral_hub.runtime.jetstream.topology import ConsumerSpec
from referral_hub.runtime.messaging.ack_policy import Effects, Handled, handle_one, incoming_from_nats, nak_delay
from referral_hub.runtime.messaging.incoming import Incoming

FIRST_WAIT_SECONDS: Final = 5.0
"""How long one pull waits for the first message; it returns as soon as one arrives."""
SWEEP_SECONDS: Final = 0.005
"""How long to wait for more once one arrived: only what is already there is taken."""
BATCH: Final = 64
IN_FLIGHT: Final = 256
"""Messages being handled at once; below the consumers' ``max_ack_pending`` (1000)."""

HandleOne = Callable[[Msg], Awaitable[bool]]
Job = Callable[[Client], Coroutine[Any, Any, None]]
"""A long-running piece of a service (a pull loop, a timer, a watch), given the connection."""
Item = TypeVar("Item")


class _About(msgspec.Struct):
    """What a message is about, read leniently to keep related messages in order."""

    referral_id: str = ""
    patient_ref: str = ""


def _about(delivery: Incoming) -> _About | None:
    return lenient_decode(delivery.data, _About)


def order_by_referral(delivery: Incoming) -> str:
    """Commands about one referral (or, failing that, one patient) are handled in order."""
    about = _about(delivery)
    if about is not None and about.referral_id:
        return f"referral:{about.referral_id}"
    if about is not None and about.patient_ref:
        return f"patient:{about.patient_ref}"
    return delivery.source_key


def unordered(delivery: Incoming) -> str:
    """Every message on its own (the audit chain orders its entries itself)."""
    return delivery.source_key


def order_by_patient(delivery: Incoming) -> str:
    """Events about one patient (an alert and its resolution) are handled in order."""
    about = _about(delivery)
    return f"patient:{about.patient_ref}" if about is not None and about.patient_ref else delivery.source_key


class KeyedPipeline(Generic[Item]):
    """Handles items as they arrive: concurrently across keys, strictly in order within one key.

    Each item's task waits for the previous item of its key, so fetching never waits for a
    slow batch to finish (a whole-batch barrier capped the intake at its slowest message).
    If an item fails (``handle`` returned False: it was nak'ed for redelivery), every later
    item of its key is handed to ``hold_back`` instead, so none overtakes it. At most
    ``limit`` items are in flight; :meth:`submit` waits for a free slot.
    """

    def __init__(
        self,
        handle: Callable[[Item], Awaitable[bool]],
        hold_back: Callable[[Item], Awaitable[None]],
        limit: int,
    ) -> None:
        """Nothing runs until the first :meth:`submit`."""
        self._handle = handle
        self._hold_back = hold_back
        self._slots = asyncio.Semaphore(limit)
        self._tails: dict[str, asyncio.Task[bool]] = {}
        self._running: set[asyncio.Task[bool]] = set()

    async def submit(self, key: str, item: Item) -> None:
        """Start ``item`` after its key's previous item; returns once it is under way."""
        await self._slots.acquire()
        task = asyncio.create_task(self._after(self._tails.get(key), item))
        self._tails[key] = task
        self._running.add(task)
        task.add_done_callback(lambda done: self._finished(key, done))

    async def _after(self, previous: asyncio.Task[bool] | None, item: Item) -> bool:
        if previous is not None and not await previous:
            await self._hold_back(item)
            return False
        return await self._handle(item)

    def _finished(self, key: str, task: asyncio.Task[bool]) -> None:
        self._slots.release()
        self._running.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]

    async def drain(self) -> None:
        """Wait until everything submitted so far has finished."""
        while self._running:
            await asyncio.wait(set(self._running))

    async def cancel(self) -> None:
        """Stop everything in flight (unacknowledged messages come back after the ack wait)."""
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


async def _hold_back(raw: Msg) -> None:
    await raw.nak(delay=nak_delay(raw.metadata.num_delivered))


async def pull_forever(
    js: JetStreamContext,
    spec: ConsumerSpec,
    handle_one: HandleOne,
    order_key: Callable[[Incoming], str],
) -> None:
    """Bind to the provisioned durable consumer and pipe what it delivers through a :class:`KeyedPipeline`."""
    subscription = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
    pipeline: KeyedPipeline[Msg] = KeyedPipeline(handle_one, _hold_back, IN_FLIGHT)
    try:
        while True:
            try:
                first = await subscription.fetch(1, timeout=FIRST_WAIT_SECONDS)
            except TimeoutError:  # nats.errors.TimeoutError subclasses it; nats-py raises both kinds
                continue
            for raw in first:  # under way before the sweep, which waits SWEEP_SECONDS when nothing follows
                await pipeline.submit(order_key(incoming_from_nats(raw)), raw)
            batch = []
            with contextlib.suppress(TimeoutError):
                batch = await subscription.fetch(BATCH - 1, timeout=SWEEP_SECONDS)
            for raw in sorted(batch, key=lambda m: m.metadata.sequence.stream):
                await pipeline.submit(order_key(incoming_from_nats(raw)), raw)
    finally:
        await pipeline.cancel()
        await subscription.unsubscribe()


@dataclass(frozen=True)
class PullConsumer:
    """A durable consumer a service pulls itself, named for its metrics and logs, and its order."""

    service: str
    handler: str
    spec: ConsumerSpec
    order_key: Callable[[Incoming], str]

    def job(self, effects: Effects, process: Callable[[Incoming], Awaitable[Handled]]) -> Job:
        """A service job that pulls forever, every message under ``ack_policy.handle_one``'s acknowledgement policy."""

        async def one(raw: Msg) -> bool:
            return await handle_one(self.service, self.handler, effects, process, raw)

        async def pull(connection: Client) -> None:
            js = connection.jetstream(prefix=credentials.hub_api_prefix(self.service))
            await pull_forever(js, self.spec, one, self.order_key)

        pull.__name__ = f"pull {self.spec.durable}"
        return pull
