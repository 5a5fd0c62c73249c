"""A 3-node JetStream cluster with every stream R3: the hub's own use of the server's guarantees.

The replication is NATS's; these tests pin what the hub relies on and the one trap found:
a mismatched ``Nats-Expected-Last-Msg-Id`` wedges a replicated stream in nats-server 2.15.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats
import nats.errors
import pytest
from nats.js import api
from nats.js.errors import BadRequestError

from referral_hub.audit.adapters import ChainWriter, read_chain
from referral_hub.audit.domain import describe, verify
from referral_hub.runtime.broker.embedded import EmbeddedCluster
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.jetstream import streams, topology
from referral_hub.runtime.jetstream.provision import provision, while_settling

from .helpers import cluster_healthy, eventually
from .test_audit_writer import AT, delivery


def test_server_urls_split_a_cluster_list() -> None:
    assert server_urls(" nats://a:4222, nats://b:4223 ,") == ["nats://a:4222", "nats://b:4223"]


async def test_provisioning_a_cluster_replicates_every_stream_three_times(nats_cluster: EmbeddedCluster) -> None:
    connection = await nats.connect(server_urls(nats_cluster.url))
    try:
        await provision(connection.jetstream(), replicas=3)
        infos = [await connection.jetstream().stream_info(c.name or "") for c in topology.stream_configs()]
    finally:
        await connection.close()

    assert {info.config.name: info.config.num_replicas for info in infos} == {
        config.name: 3 for config in topology.stream_configs()
    }
    assert all(info.cluster is not None and len(info.cluster.replicas or []) == 2 for info in infos)


async def test_two_audit_writers_with_duplicates_keep_one_chain_on_r3(nats_cluster: EmbeddedCluster) -> None:
    first = await nats.connect(server_urls(nats_cluster.url))
    second = await nats.connect(server_urls(nats_cluster.url))
    try:
        await provision(first.jetstream(), replicas=3)
        writers = [ChainWriter(first), ChainWriter(second, max_batch=7)]
        sequences = [*range(1, 121), *range(1, 121, 5)]
        await asyncio.gather(
            *(
                writers[n % 2].append(describe(delivery(seq), AT), f"HUB_EVENTS:{seq}")
                for n, seq in enumerate(sequences)
            )
        )
        stored = [e async for e in read_chain(first.jetstream())]
    finally:
        await first.close()
        await second.close()

    assert verify(stored) == (120, None)
    assert sorted(e.source_sequence for e in stored) == list(range(1, 121))
    await eventually(cluster_healthy(nats_cluster), 30)  # replicas may still be catching up; a wedged one never does


async def test_a_mismatched_expected_last_msg_id_wedges_a_replicated_stream(nats_cluster: EmbeddedCluster) -> None:
    """The trap that made the audit writer use atomic batches: if a nats-server upgrade makes
    this fail, the server no longer has the bug, and this test can go."""
    connection = await nats.connect(server_urls(nats_cluster.url))
    js = connection.jetstream()
    try:
        await while_settling(lambda: js.add_stream(api.StreamConfig(name="TRAP", subjects=["trap"], num_replicas=3)))

        async def first_stored() -> bool:
            """The new stream answers once its replicas have elected a leader; the id makes retries safe."""
            with contextlib.suppress(nats.errors.Error):
                await js.publish("trap", b"first", headers={"Nats-Msg-Id": "a"})
                return True
            return False

        await eventually(first_stored, 10)
        with pytest.raises(BadRequestError):
            await js.publish("trap", b"refused", headers={"Nats-Expected-Last-Msg-Id": "not-a"})
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish("trap", b"after", timeout=3)
    finally:
        await connection.close()


async def test_a_killed_node_rejoins_and_catches_up(nats_cluster: EmbeddedCluster) -> None:
    connection = await nats.connect(server_urls(nats_cluster.url), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = connection.jetstream()
    try:
        await provision(js, replicas=3)
        leader = (await js.stream_info(streams.AUDIT)).cluster
        connected_port = connection.connected_url.port if connection.connected_url else None
        follower = next(
            node
            for node in nats_cluster.nodes
            if leader and node.server_name != leader.leader and node.port != connected_port
        )
        follower.kill()
        writer = ChainWriter(connection)
        await asyncio.gather(*(writer.append(describe(delivery(seq), AT), f"HUB_EVENTS:{seq}") for seq in range(1, 51)))
        follower.start()

        await eventually(cluster_healthy(nats_cluster), 30)
        stored = [e async for e in read_chain(js)]
    finally:
        await connection.close()

    assert verify(stored) == (50, None)
