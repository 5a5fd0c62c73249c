"""Scale-out faults: a node of a 3-node R3 cluster, a stream leader, one replica of every service."""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats.errors
import pytest
from nats.aio.client import Client

from referral_hub.runtime.jetstream import topology
from tests.helpers import cluster_healthy

from .harness import SERVICES, assert_exactly_once, check, load_during, record, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
REFERRAL_STATE_STREAM = f"KV_{topology.REFERRALS_KV}"
"""The stream behind the referral-state bucket: the referrals service's compare-and-set writes go to its leader."""
REPEATS = 30
"""Runs of scenario 3 under ``-m repeat``: a failure in one run of ten escapes all thirty with probability 0.04."""


async def leader_of(admin: Client, stream: str) -> str:
    """The node leading ``stream``, asked until the cluster answers (it may still be electing after a restart)."""
    leader = ""

    async def known() -> bool:
        nonlocal leader
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            state = (await admin.jetstream().stream_info(stream)).cluster
            leader = state.leader if state is not None and state.leader else ""
        return bool(leader)

    await until(known, 60)
    return leader


async def test_kill_9_a_cluster_node_then_the_referral_state_leader(cluster_hub):
    await kill_a_node_then_the_referral_state_leader(cluster_hub, "3. R3 cluster: kill -9 a node, then a leader")


@pytest.mark.repeat
@pytest.mark.parametrize("run", range(1, REPEATS + 1))
async def test_kill_9_a_cluster_node_then_the_referral_state_leader_again(cluster_hub, run):
    """Scenario 3 again and again: a one-in-ten reordering shows up within ``REPEATS`` runs (``pytest -m repeat``)."""
    await kill_a_node_then_the_referral_state_leader(cluster_hub, f"3. R3 cluster, run {run} of {REPEATS}")


async def kill_a_node_then_the_referral_state_leader(cluster_hub, name: str) -> None:
    hub, admin = cluster_hub
    faults = []
    async with load_during(hub, admin, "cluster") as ledger:
        await asyncio.sleep(2.0)
        node = hub.server.nodes[1]
        node.kill()
        faults.append(time.monotonic())
        await asyncio.sleep(2.0)
        node.start()
        await asyncio.sleep(2.0)
        leader = hub.server.node_named(await leader_of(admin, REFERRAL_STATE_STREAM))
        leader.kill()
        faults.append(time.monotonic())
        await asyncio.sleep(2.0)
        leader.start()
        await until(cluster_healthy(hub.server), 120)
    verdict = await check(hub.server.url, admin, ledger)
    record(name, ledger, verdict, max(map(ledger.recovered_after, faults)))
    assert_exactly_once(verdict)


async def test_kill_9_one_replica_of_every_service(replicated_hub):
    hub, admin = replicated_hub
    faults = []
    async with load_during(hub, admin, "replicas") as ledger:
        for name in SERVICES:
            await asyncio.sleep(1.5)
            hub.kill(name)
            faults.append(time.monotonic())
    verdict = await check(hub.server.url, admin, ledger)
    record("4. 2 replicas each: kill -9 one of each", ledger, verdict, max(map(ledger.recovered_after, faults)))
    assert_exactly_once(verdict)
