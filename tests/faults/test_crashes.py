"""Crash faults on real processes: nothing acknowledged is lost, nothing is applied twice."""

from __future__ import annotations

import asyncio
import time

import pytest

from referral_hub.cli.up import is_ready

from .harness import SERVICES, assert_exactly_once, check, load_during, record, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def test_kill_9_each_service_in_turn_mid_load(fault_hub):
    hub, admin = fault_hub
    recoveries = []
    async with load_during(hub, admin, "services") as ledger:
        for name in SERVICES:
            await asyncio.sleep(1.5)
            hub.kill(name)
            await asyncio.sleep(0.5)
            recoveries.append(await hub.start(name))
    verdict = await check(hub.server.url, admin, ledger)
    record("1. kill -9 each service in turn, restart", ledger, verdict, max(recoveries))
    assert_exactly_once(verdict)


async def test_kill_9_the_nats_server_mid_load(fault_hub):
    hub, admin = fault_hub

    async def services_ready() -> bool:
        return all(await asyncio.gather(*(asyncio.to_thread(is_ready, s.health_url) for s in hub.processes.values())))

    async with load_during(hub, admin, "broker") as ledger:
        await asyncio.sleep(2.0)
        hub.server.kill()
        await asyncio.sleep(1.0)
        restarted = time.monotonic()
        hub.server.start()
        await until(services_ready, 60)
        recovered = time.monotonic() - restarted
    verdict = await check(hub.server.url, admin, ledger)
    record("2. kill -9 nats-server (sync_interval always)", ledger, verdict, recovered)
    assert_exactly_once(verdict)
