"""The chain writer against a real server: one chain, however many writers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import nats
from nats.aio.client import Client

from referral_hub.audit.adapters import ChainWriter
from referral_hub.audit.domain import describe, verify
from referral_hub.runtime.broker.embedded import EmbeddedNats
from referral_hub.runtime.messaging.incoming import Incoming

from .helpers import audit_entries

AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def delivery(seq: int) -> Incoming:
    return Incoming(
        subject="hub.event.x",
        data=b'{"n": %d}' % seq,
        headers={},
        stream="HUB_EVENTS",
        sequence=seq,
        stored_at=AT,
        attempt=1,
    )


async def test_two_concurrent_writers_produce_one_unforked_chain(
    nats_server: EmbeddedNats, provisioned: Client
) -> None:
    second = await nats.connect(nats_server.url)
    writers = [ChainWriter(provisioned), ChainWriter(second)]

    await asyncio.gather(
        *(writers[seq % 2].append(describe(delivery(seq), AT), f"HUB_EVENTS:{seq}") for seq in range(1, 101))
    )
    await second.drain()

    entries = await audit_entries(provisioned)
    assert verify(entries) == (100, None)
    assert sorted(e.source_sequence for e in entries) == list(range(1, 101))


async def test_the_same_source_message_twice_yields_one_entry(provisioned: Client) -> None:
    writer = ChainWriter(provisioned)

    await writer.append(describe(delivery(7), AT), "HUB_EVENTS:7")
    await writer.append(describe(delivery(7), AT), "HUB_EVENTS:7")
    await writer.append(describe(delivery(8), AT), "HUB_EVENTS:8")

    entries = await audit_entries(provisioned)
    assert [e.source_sequence for e in entries] == [7, 8]
    assert verify(entries) == (2, None)


async def test_pipelined_batches_with_duplicates_and_a_rival_writer_keep_one_chain(
    nats_server: EmbeddedNats, provisioned: Client
) -> None:
    rival = await nats.connect(nats_server.url)
    writers = [ChainWriter(provisioned), ChainWriter(rival, max_batch=7)]
    sequences = [*range(1, 201), *range(1, 201, 10)]

    await asyncio.gather(
        *(writers[n % 2].append(describe(delivery(seq), AT), f"HUB_EVENTS:{seq}") for n, seq in enumerate(sequences))
    )
    await rival.drain()

    entries = await audit_entries(provisioned)
    assert verify(entries) == (200, None)
    assert sorted(e.source_sequence for e in entries) == list(range(1, 201))
