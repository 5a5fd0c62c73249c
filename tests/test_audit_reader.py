"""Reading the audit chain back: every entry once, in order, however slow the reader."""

from __future__ import annotations

import asyncio

from referral_hub.audit.adapters import read_chain
from referral_hub.contracts.codec import encode
from referral_hub.runtime import subjects

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
