"""The inbox writer against a real server: per-clinic numbers stay gap-free under group commit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import nats
from nats.aio.client import Client

from referral_hub.client import new_id
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.runtime.broker.embedded import EmbeddedNats
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.messaging.inbox_writer import MIN_ATOMIC_BATCH, InboxWriter
from referral_hub.runtime.messaging.outgoing import ToInbox

CLINIC = "harbor-pt"
AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


class _Stored(msgspec.Struct):
    event_number: int
    offending_message_id: str


def delivery(name: str) -> ToInbox:
    message = Rejection(
        message_id=new_id(),
        occurred_at=AT,
        sender_clinic="hub",
        actor="test",
        correlation_id=new_id(),
        code=RejectionCode.UNKNOWN_REFERRAL,
        reason="test",
        offending_message_id=name,
        offending_subject="clinic.harbor-pt.out.referral.accept",
    )
    return ToInbox(CLINIC, "rejection", message, f"{name}/inbox/{CLINIC}")


async def stored(connection: Client) -> list[tuple[int, str]]:
    """(event number, delivery name) of everything in the clinic's inbox, in stream order."""
    subscription = await connection.jetstream().subscribe(subjects.clinic_inbox(CLINIC), ordered_consumer=True)
    found = []
    try:
        while True:
            message = await subscription.next_msg(timeout=1.0)
            item = msgspec.json.decode(message.data, type=_Stored)
            found.append((item.event_number, item.offending_message_id))
    except nats.errors.TimeoutError:
        return found
    finally:
        await subscription.unsubscribe()


async def test_two_writers_delivering_at_once_number_one_inbox_without_gaps(
    nats_server: EmbeddedNats, provisioned: Client
) -> None:
    second = await nats.connect(nats_server.url)
    writers = [InboxWriter(provisioned), InboxWriter(second)]

    numbers = await asyncio.gather(*(writers[n % 2].deliver(delivery(f"d{n}")) for n in range(200)))
    await second.close()

    inbox = await stored(provisioned)
    assert [number for number, _ in inbox] == list(range(1, 201))
    assert sorted(numbers) == list(range(1, 201))
    assert {name: number for number, name in inbox} == {f"d{n}": numbers[n] for n in range(200)}


async def test_a_redelivered_copy_queued_with_new_deliveries_keeps_its_number_and_the_rest_follow(
    provisioned: Client,
) -> None:
    writer = InboxWriter(provisioned)
    assert await writer.deliver(delivery("first")) == 1
    queued_behind_one = ["first", *(f"later-{n}" for n in range(MIN_ATOMIC_BATCH))]  # one atomic batch, a duplicate

    numbers = await asyncio.gather(*(writer.deliver(delivery(name)) for name in ["new", *queued_behind_one]))

    assert numbers == [2, 0, *range(3, 3 + MIN_ATOMIC_BATCH)]
    assert await stored(provisioned) == [
        (1, "first"),
        (2, "new"),
        *((3 + n, f"later-{n}") for n in range(MIN_ATOMIC_BATCH)),
    ]
