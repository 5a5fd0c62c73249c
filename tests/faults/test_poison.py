"""Scenario 6: a poison message blocks nobody, ends as a dead letter, and is re-driven once the handler is fixed."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client

from referral_hub.contracts.referrals import ReferralRequest
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.runtime.broker.embedded import free_port
from referral_hub.runtime.hosting.service import ServiceApp, ServiceSettings, new_broker, serve
from referral_hub.runtime.jetstream import streams, topology
from referral_hub.runtime.messaging.ack_policy import Effects, Handled
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.pull_loop import Job, PullConsumer, unordered
from tests.helpers import audit_entries, dead_letters, eventually, hubctl, referral_request, wait_idle

from .harness import SUMMARY, Row

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
DRILL = topology.ConsumerSpec(streams.CLINIC_OUT, "poison-drill", "clinic.harbor-pt.out.>", max_deliver=3)


@dataclass
class FailsOnOne:
    """A handler with a bug that only one message triggers, until it is fixed."""

    poison: str
    broken: bool = True
    handled: list[str] = field(default_factory=list)

    async def __call__(self, delivery: Incoming) -> Handled:
        message_id = json.loads(delivery.data)["message_id"]
        if self.broken and message_id == self.poison:
            msg = "a bug this one message triggers"
            raise RuntimeError(msg)
        self.handled.append(message_id)
        return Handled(outcome="handled")


async def test_a_poison_message_is_dead_lettered_listed_and_replayed_once(hub):
    good: list[ReferralRequest] = [referral_request(patient_ref=f"pt-good-{n}") for n in range(6)]
    poison = referral_request(patient_ref="pt-poison")
    handler = FailsOnOne(str(poison.message_id))
    await hub.connection.jetstream().add_consumer(DRILL.stream, config=DRILL.config())

    async def build(connection: Client) -> list[Job]:
        return [PullConsumer("drill", "fails-on-one", DRILL, unordered).job(Effects(connection), handler)]

    app = ServiceApp("drill", new_broker(hub.url, "drill"), (DRILL,), build)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, ServiceSettings(hub.url, free_port()), stop))
    try:
        sender = await hub.clinic("harbor-pt")
        for message in (*good[:3], poison, *good[3:]):
            await sender.send(message)

        async def others_handled() -> bool:
            return set(handler.handled) >= {str(m.message_id) for m in good}

        await eventually(others_handled, timeout=10)

        async def exhausted() -> list:
            return [d for d in await dead_letters(hub.connection) if d.code is RejectionCode.PROCESSING_FAILED]

        [dead] = await eventually(exhausted, timeout=60)
        assert dead.service == DRILL.durable
        listed = await hubctl("dlq", "list", "--code", "processing_failed", "--json", "--nats-url", hub.url)
        [view] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert (view["offending_message_id"], view["original_subject"]) == (
            str(poison.message_id),
            "clinic.harbor-pt.out.referral.request",
        )

        handler.broken = False
        began = time.monotonic()
        replayed = await hubctl("dlq", "replay", str(view["sequence"]), "--nats-url", hub.url)
        again = await hubctl("dlq", "replay", str(view["sequence"]), "--nats-url", hub.url)

        async def poison_handled() -> bool:
            return str(poison.message_id) in handler.handled

        await eventually(poison_handled, timeout=30)
        recovered = time.monotonic() - began
        await wait_idle(hub.connection, (*topology.CONSUMERS, DRILL))
    finally:
        stop.set()
        await task

    assert replayed.stdout.startswith(f"#{view['sequence']} replayed: clinic.harbor-pt.out.referral.request")
    assert "already replayed" in again.stdout
    assert handler.handled.count(str(poison.message_id)) == 1
    audited = [e for e in await audit_entries(hub.connection) if e.rejection_code == "processing_failed"]
    assert audited
    SUMMARY.append(Row("6. poison message: dead letter, then replay", 7, len(set(handler.handled)), 0, 0, recovered))


async def test_dlq_list_of_an_empty_dead_letter_stream_prints_nothing(hub):
    listed = await hubctl("dlq", "list", "--nats-url", hub.url)

    assert (listed.status, listed.stdout, listed.stderr) == (0, "", "")
