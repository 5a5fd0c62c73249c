"""Crash faults on real processes: nothing acknowledged is lost, nothing is applied twice."""

from __future__ import annotations

import asyncio
import time

import pytest

from referral_hub.cli.up import is_ready

from .harness import SERVICES, SUMMARY, Row, Verdict, check, drive, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
CALM_SECONDS = 2.0
"""Load after the last fault, so recovery happens under traffic too."""


def record(scenario: str, ledger, verdict: Verdict, recover_seconds: float) -> None:
    SUMMARY.append(
        Row(
            scenario,
            ledger.acknowledged,
            verdict.delivered,
            len(verdict.lost),
            len(verdict.duplicated),
            recover_seconds,
        )
    )


def assert_exactly_once(verdict: Verdict) -> None:
    assert verdict.lost == [], "\n".join(verdict.lost)
    assert verdict.duplicated == [], "\n".join(verdict.duplicated)
    assert verdict.problems == [], "\n".join(verdict.problems)
    assert verdict.delivered == verdict.expected > 0


async def test_kill_9_each_service_in_turn_mid_load(fault_hub):
    hub, admin = fault_hub
    stop = asyncio.Event()
    load = asyncio.create_task(drive(hub.server.url, admin, "services", stop))
    recoveries = []
    for name in SERVICES:
        await asyncio.sleep(1.5)
        hub.kill(name)
        await asyncio.sleep(0.5)
        recoveries.append(await hub.start(name))
    await asyncio.sleep(CALM_SECONDS)
    stop.set()
    ledger = await load
    verdict = await check(hub.server.url, admin, ledger)
    record("1. kill -9 each service in turn, restart", ledger, verdict, max(recoveries))
    assert_exactly_once(verdict)


async def test_kill_9_the_nats_server_mid_load(fault_hub):
    hub, admin = fault_hub
    stop = asyncio.Event()
    load = asyncio.create_task(drive(hub.server.url, admin, "broker", stop))
    await asyncio.sleep(2.0)
    hub.server.kill()
    await asyncio.sleep(1.0)
    restarted = time.monotonic()
    hub.server.start()

    async def services_ready() -> bool:
        return all(await asyncio.gather(*(asyncio.to_thread(is_ready, s.health_url) for s in hub.processes.values())))

    await until(services_ready, 60)
    recovered = time.monotonic() - restarted
    await asyncio.sleep(CALM_SECONDS)
    stop.set()
    ledger = await load
    verdict = await check(hub.server.url, admin, ledger)
    record("2. kill -9 nats-server (sync_interval always)", ledger, verdict, recovered)
    assert_exactly_once(verdict)
