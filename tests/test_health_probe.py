"""The services' NATS round-trip probe against a real nats-server that pauses and resumes."""

from __future__ import annotations

import asyncio
import os
import signal

import nats

from referral_hub.runtime.broker.embedded import EmbeddedNats
from referral_hub.runtime.hosting.health import answers


async def test_a_paused_server_fails_the_probe_and_the_connection_still_works_once_it_resumes(
    nats_server: EmbeddedNats,
) -> None:
    connection = await nats.connect(nats_server.url)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def keep(message: nats.aio.msg.Msg) -> None:
        await received.put(message.data)

    await connection.subscribe("probe.check", cb=keep)
    assert nats_server.process is not None
    os.kill(nats_server.process.pid, signal.SIGSTOP)
    try:
        during = await answers(connection)
    finally:
        os.kill(nats_server.process.pid, signal.SIGCONT)
    after = await answers(connection)
    await connection.publish("probe.check", b"still reading")
    delivered = await asyncio.wait_for(received.get(), 5)
    await connection.close()

    assert (during, after) == (False, True)
    assert delivered == b"still reading"
