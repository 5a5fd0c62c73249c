"""Back-pressure: a stalled consumer and a full stream budget give senders a clear error, never silent loss."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from referral_hub.runtime.jetstream import streams
from referral_hub.runtime.jetstream.provision import provision_as_operator

from .harness import assert_exactly_once, check, flood_requests, load_during, record, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
HEADROOM_BYTES = 16 * 1024
"""What is left of CLINIC_OUT's budget when the fault starts: a few dozen submissions, then a flood fills it."""


async def test_a_stalled_consumer_and_a_full_stream_refuse_senders_and_lose_nothing(fault_hub):
    hub, admin = fault_hub
    async with load_during(hub, admin, "full") as ledger:
        await asyncio.sleep(1.5)
        referrals = hub.processes["referrals"].process
        referrals.send_signal(signal.SIGSTOP)
        used = (await admin.jetstream().stream_info(streams.CLINIC_OUT)).state.bytes
        await provision_as_operator(
            hub.server.url, budgets={streams.CLINIC_OUT: used + HEADROOM_BYTES}, break_glass=True
        )
        relief = asyncio.Event()
        flood = asyncio.create_task(flood_requests(hub.server.url, ledger, relief))

        async def senders_refused() -> bool:
            return bool(ledger.refused_full)

        try:
            await until(senders_refused, 60)
        finally:
            relieved = time.monotonic()
            await provision_as_operator(hub.server.url, break_glass=True)
            referrals.send_signal(signal.SIGCONT)
            relief.set()
        await flood
    verdict = await check(hub.server.url, admin, ledger)
    record("5. stalled consumer, full stream budget", ledger, verdict, ledger.recovered_after(relieved))
    assert ledger.refused_full
    assert all("maximum bytes exceeded" in refusal for refusal in ledger.refused_full)
    assert_exactly_once(verdict)
