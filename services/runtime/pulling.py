"""An ordered batch pull loop for the hot path: concurrent across keys, in order within one.

Used where a handler needs both throughput and per-key order (the referrals intake:
one referral's commands must apply in the order they were stored). faststream could not
give both, as verified against a real server (see ``service.PULL_LINGER_SECONDS``):
its batch mode waits out the whole fetch timeout under light load and drops fetched
messages when nats-py raises a plain ``asyncio.TimeoutError``; its per-message mode runs
a fetched batch as tasks whose order is not the stream's. This loop sees the whole batch
before dispatching it, so ordering is decided on stream sequence, not on scheduling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from referral_hub.contracts.codec import lenient_decode
from referral_hub.runtime.handling import Delivery, nak_delay
from referral_hub.runtime.topology import ConsumerSpec

FIRST_WAIT_SECONDS: Final = 5.0
"""How long one pull waits for the first message; it returns as soon as one arrives."""
SWEEP_SECONDS: Final = 0.005
"""How long to wait for more once one arrived: only what is already there is taken."""
BATCH: Final = 64

HandleOne = Callable[[Msg], Awaitable[bool]]


class _About(msgspec.Struct):
    """What a message is about, read leniently to keep related messages in order."""

    referral_id: str = ""
    patient_ref: str = ""


def _about(delivery: Delivery) -> _About | None:
    return lenient_decode(delivery.data, _About)


def order_by_referral(delivery: Delivery) -> str:
    """Commands about one referral (or, failing that, one patient) are handled in order."""
    about = _about(delivery)
    if about is not None and about.referral_id:
        return f"referral:{about.referral_id}"
    if about is not None and about.patient_ref:
        return f"patient:{about.patient_ref}"
    return delivery.source_key


def order_by_patient(delivery: Delivery) -> str:
    """Events about one patient (an alert and its resolution) are handled in order."""
    about = _about(delivery)
    return f"patient:{about.patient_ref}" if about is not None and about.patient_ref else delivery.source_key


async def dispatch(messages: list[Msg], handle_one: HandleOne, order_key: Callable[[Delivery], str]) -> None:
    """Handle a batch: groups by key run concurrently, each group in stream order.

    If a message fails (it was nak'ed for redelivery), the later messages of its key in
    this batch are nak'ed too, so none of them overtakes it.
    """
    groups: dict[str, list[Msg]] = {}
    for raw in sorted(messages, key=lambda m: m.metadata.sequence.stream):
        groups.setdefault(order_key(Delivery.from_nats(raw)), []).append(raw)

    async def in_order(group: list[Msg]) -> None:
        for position, raw in enumerate(group):
            if not await handle_one(raw):
                for later in group[position + 1 :]:
                    await later.nak(delay=nak_delay(later.metadata.num_delivered))
                return

    await asyncio.gather(*(in_order(group) for group in groups.values()))


async def pull_forever(
    js: JetStreamContext,
    spec: ConsumerSpec,
    handle_one: HandleOne,
    order_key: Callable[[Delivery], str],
) -> None:
    """Bind to the provisioned durable consumer and dispatch what it delivers, forever."""
    subscription = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
    try:
        while True:
            try:
                batch = await subscription.fetch(1, timeout=FIRST_WAIT_SECONDS)
            except TimeoutError:  # nats.errors.TimeoutError subclasses it; nats-py raises both kinds
                continue
            with contextlib.suppress(TimeoutError):
                batch += await subscription.fetch(BATCH - 1, timeout=SWEEP_SECONDS)
            await dispatch(batch, handle_one, order_key)
    finally:
        await subscription.unsubscribe()
