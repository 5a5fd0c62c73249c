"""The safety path's chain built from plain nats-py: what ``hubctl bench pages`` compares the hub with.

The same three hops as the hub's alert-to-page path, and nothing else: a clinic publishes an
alert to a file-backed stream and waits for its acknowledgement; a fan-out process pulls it
from a durable consumer and stores one copy per other member of the patient's care team in a
second stream (waiting for each acknowledgement), then acknowledges the alert; a pager
process pulls each copy and POSTs it, signed as the hub signs its webhooks, to the receiver,
then acknowledges the copy. Same server, same ``sync_interval``, file storage, explicit
acknowledgements, ``Nats-Msg-Id`` de-duplication and the same consumer limits as the hub's
consumers, so what the hub adds (numbered inboxes, domain events, the audit, care-team and
inhibition rules, page records) is the difference between the two chains' figures.

Each hop runs as its own process (``python -m referral_hub.cli.raw_chain fanout|pager``), as
the hub's services do, and reads its consumer the way nats-py reads with low latency: one
long pull for the first message, then whatever else is already there, each handled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Final

import httpx
import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from referral_hub.notifications.webhooks import WebhookSecrets, signed_headers
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER
from referral_hub.runtime.jetstream.topology import ACK_WAIT_SECONDS, MAX_DELIVER

OUT_STREAM: Final = "BENCH_RAW_OUT"
IN_STREAM: Final = "BENCH_RAW_IN"
OUT_SUBJECTS: Final = "bench.raw.out.>"
IN_SUBJECTS: Final = "bench.raw.in.>"
FANOUT: Final = "bench-raw-fanout"
PAGER: Final = "bench-raw-pager"
BATCH: Final = 64
IN_FLIGHT: Final = 256
FIRST_WAIT_SECONDS: Final = 5.0
SWEEP_SECONDS: Final = 0.005
DEDUPE_SECONDS: Final = 120.0
HTTP_TIMEOUT_SECONDS: Final = 10.0


class RawAlert(msgspec.Struct, frozen=True):
    """The alert as the raw chain carries it: who raised it about whom."""

    alert_id: str
    patient_ref: str
    sender_clinic: str


class RawCopy(msgspec.Struct, frozen=True):
    """One team member's copy of an alert."""

    alert_id: str
    patient_ref: str
    clinic: str


class RawPage(msgspec.Struct, frozen=True):
    """The webhook body; ``dedup_key`` has the hub's shape, ``alert:<alert_id>:<clinic>``."""

    dedup_key: str
    patient_ref: str


def out_subject(clinic: str) -> str:
    """Where ``clinic`` publishes its alerts in the raw chain."""
    return f"bench.raw.out.{clinic}"


def in_subject(clinic: str) -> str:
    """Where the raw chain stores ``clinic``'s copy."""
    return f"bench.raw.in.{clinic}"


def copies(alert: RawAlert, teams: dict[str, list[str]]) -> list[RawCopy]:
    """One copy per clinic of the patient's team other than the raiser."""
    return [
        RawCopy(alert.alert_id, alert.patient_ref, clinic)
        for clinic in teams.get(alert.patient_ref, [])
        if clinic != alert.sender_clinic
    ]


async def provision(js: JetStreamContext) -> None:
    """The two streams and two durable consumers, with the hub's durability settings."""
    for name, subject in ((OUT_STREAM, OUT_SUBJECTS), (IN_STREAM, IN_SUBJECTS)):
        await js.add_stream(
            api.StreamConfig(
                name=name,
                subjects=[subject],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.NEW,
                duplicate_window=DEDUPE_SECONDS,
            )
        )
    for stream, durable in ((OUT_STREAM, FANOUT), (IN_STREAM, PAGER)):
        await js.add_consumer(
            stream,
            api.ConsumerConfig(
                durable_name=durable,
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=ACK_WAIT_SECONDS,
                max_deliver=MAX_DELIVER,
                max_ack_pending=1000,
            ),
        )


async def consume(js: JetStreamContext, stream: str, durable: str, handle: Callable[[Msg], Awaitable[None]]) -> None:
    """Pull forever: a long pull for one message, a short sweep for more, each handled as its own task."""
    subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)
    slots = asyncio.Semaphore(IN_FLIGHT)
    running: set[asyncio.Task[None]] = set()

    async def one(raw: Msg) -> None:
        try:
            await handle(raw)
        finally:
            slots.release()

    while True:
        try:
            fetched = await subscription.fetch(1, timeout=FIRST_WAIT_SECONDS)
        except TimeoutError:
            continue
        with contextlib.suppress(TimeoutError):
            fetched += await subscription.fetch(BATCH - 1, timeout=SWEEP_SECONDS)
        for raw in fetched:
            await slots.acquire()
            task = asyncio.create_task(one(raw))
            running.add(task)
            task.add_done_callback(running.discard)


async def fan_out(connection: Client, teams: dict[str, list[str]]) -> None:
    """The fan-out hop: each alert becomes one stored copy per other team member, then is acknowledged."""
    js = connection.jetstream()

    async def handle(raw: Msg) -> None:
        alert = msgspec.json.decode(raw.data, type=RawAlert)
        await asyncio.gather(
            *(
                js.publish(
                    in_subject(copy.clinic),
                    msgspec.json.encode(copy),
                    headers={MSG_ID_HEADER: f"{copy.alert_id}/{copy.clinic}"},
                )
                for copy in copies(alert, teams)
            )
        )
        await raw.ack()

    await consume(js, OUT_STREAM, FANOUT, handle)


async def page(connection: Client, receiver_url: str, secrets: WebhookSecrets) -> None:
    """The pager hop: each copy becomes a signed POST to ``<receiver_url>/<clinic>``, then is acknowledged."""
    js = connection.jetstream()
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, follow_redirects=False) as http:

        async def handle(raw: Msg) -> None:
            copy = msgspec.json.decode(raw.data, type=RawCopy)
            url = f"{receiver_url}/{copy.clinic}"
            webhook_id = f"{copy.alert_id}/{copy.clinic}"
            body = msgspec.json.encode(RawPage(f"alert:{copy.alert_id}:{copy.clinic}", copy.patient_ref))
            headers = signed_headers(secrets.signers(copy.clinic, url), webhook_id, body, time.time())
            response = await http.post(url, content=body, headers={"content-type": "application/json", **headers})
            await (raw.ack() if response.is_success else raw.nak(delay=1.0))

        await consume(js, IN_STREAM, PAGER, handle)


async def _main(argv: list[str]) -> None:
    role, url, argument = argv
    connection = await nats.connect(url)
    try:
        if role == "fanout":
            await fan_out(connection, msgspec.json.decode(argument, type=dict[str, list[str]]))
        else:
            await page(connection, argument, WebhookSecrets.from_env(os.environ))
    finally:
        await connection.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(sys.argv[1:]))
