"""Reading the audit chain back: every entry once, in order, however slow the reader."""

from __future__ import annotations

import asyncio

import nats
from nats.js import api

from referral_hub.audit.adapters import read_chain
from referral_hub.contracts.codec import encode
from referral_hub.runtime.jetstream import streams, subjects

from .test_audit_chain import build_chain

ENTRIES = 400


async def test_a_reader_slower_than_the_server_reads_every_entry_once(provisioned):
    js = provisioned.jetstream()
    for entry in build_chain(ENTRIES):
        await js.publish(subjects.AUDIT_ENTRY, encode(entry))

    read = []
    async for entry in read_chain(js, batch=10):
        read.append(entry.index)
        await asyncio.sleep(0.0005)

    assert read == list(range(1, ENTRIES + 1))


async def test_the_chain_is_read_around_deleted_and_expired_sequences(nats_server) -> None:
    """A stream without the audit's deny-delete flag, so gaps can be made: at the start, inside, at the end."""
    connection = await nats.connect(nats_server.url)
    js = connection.jetstream()
    try:
        await js.add_stream(api.StreamConfig(name=streams.AUDIT, subjects=[subjects.AUDIT_ENTRY], allow_direct=True))
        for entry in build_chain(40):
            await js.publish(subjects.AUDIT_ENTRY, encode(entry))
        gaps = (1, 2, 9, 16, 17, 18, 39, 40)
        for sequence in gaps:
            await js.delete_msg(streams.AUDIT, sequence)
        read = [entry.index async for entry in read_chain(js, batch=7)]
        counted = [entry.index async for entry in read_chain(js, start=10, count=5)]
    finally:
        await connection.close()

    assert read == [n for n in range(1, 41) if n not in gaps]
    assert counted == [10, 11, 12, 13, 14]
