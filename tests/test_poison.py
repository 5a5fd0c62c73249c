"""A message no handler can process ends as a dead letter with its bytes, a rejection and an audit entry."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from referral_hub.contracts.audit import AuditOutcome
from referral_hub.contracts.codec import encode
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.runtime.broker.embedded import free_port
from referral_hub.runtime.hosting.service import ServiceApp, ServiceSettings, new_broker, serve
from referral_hub.runtime.jetstream import streams, topology
from referral_hub.runtime.messaging.ack_policy import Effects, Handled
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.pull_loop import Job, PullConsumer, unordered

from .helpers import RunningHub, audit_entries, dead_letters, eventually, referral_request

POISON = topology.ConsumerSpec(streams.CLINIC_OUT, "poison-test", "clinic.harbor-pt.out.>", max_deliver=2)


async def always_fails(_delivery: Incoming) -> Handled:
    msg = "this handler cannot process anything"
    raise RuntimeError(msg)


async def test_a_message_that_exhausts_its_deliveries_is_dead_lettered_and_the_sender_told(hub: RunningHub) -> None:
    await hub.connection.jetstream().add_consumer(POISON.stream, config=POISON.config())

    async def build(connection: Client) -> list[Job]:
        return [PullConsumer("poison", "always-fails", POISON, unordered).job(Effects(connection), always_fails)]

    app = ServiceApp("poison", new_broker(hub.url, "poison"), (POISON,), build)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, ServiceSettings(hub.url, free_port()), stop))
    try:
        request = referral_request()
        await (await hub.clinic("harbor-pt")).send(request)

        async def exhausted() -> list[object]:
            return [d for d in await dead_letters(hub.connection) if d.code == RejectionCode.PROCESSING_FAILED]

        [dead] = await eventually(exhausted, timeout=30)
    finally:
        stop.set()
        await task

    assert dead.service == "poison-test"
    assert dead.payload == encode(request)
    assert dead.offending_message_id == str(request.message_id)

    async def told() -> list[Rejection]:
        return [
            i.message
            async for i in (await hub.clinic("harbor-pt")).inbox()
            if isinstance(i.message, Rejection) and i.message.code == RejectionCode.PROCESSING_FAILED
        ]

    [rejection] = await eventually(told)
    assert rejection.offending_message_id == str(request.message_id)

    async def audited() -> list[object]:
        entries = await audit_entries(hub.connection)
        return [e for e in entries if e.outcome == AuditOutcome.REJECTED and e.rejection_code == "processing_failed"]

    assert await eventually(audited)
