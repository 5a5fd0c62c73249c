"""Tampering that bypasses the audit service is named by ``hubctl audit verify``; a crash loses nothing.

The forged log is replayed into a fresh nats-server's AUDIT stream, exactly as an insider
with the store could rebuild it, with one entry edited. Nothing in the hub is involved.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client

from referral_hub.audit import app as audit_app
from referral_hub.audit.adapters import read_chain
from referral_hub.audit.checkpoints import load_key, new_key_seed
from referral_hub.audit.domain import entry_hash
from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port
from referral_hub.runtime.jetstream import streams, subjects, topology
from referral_hub.runtime.jetstream.provision import provision

from .conftest import SERVICE_FACTORIES, start_services
from .helpers import RunningHub, audit_entries, hubctl, referral_request, wait_idle


@pytest.fixture(autouse=True)
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hubctl audit`` trusts only a pinned verifier key: pin the one these logs are signed with."""
    monkeypatch.setenv("HUB_AUDIT_VERIFIER_KEY", str(load_key(new_key_seed()).current.verifier))


async def some_history(hub: RunningHub, referrals: int = 3) -> None:
    sender = await hub.clinic("harbor-pt")
    for _ in range(referrals):
        await sender.send_and_confirm(referral_request())
    await wait_idle(hub.connection)


async def replay_into_fresh_store(
    entries: list, tmp_path: Path, edit: int, *, rehash: bool
) -> tuple[EmbeddedNats, str]:
    forged_server = EmbeddedNats(tmp_path / "forged", port=free_port(), monitor_port=free_port())
    forged_server.start()
    connection = await nats.connect(forged_server.url)
    await provision(connection.jetstream())
    for entry in entries:
        if entry.index == edit:
            entry = msgspec.structs.replace(entry, clinic="summit-chiro")  # noqa: PLW2901 - the forgery
            if rehash:
                entry = msgspec.structs.replace(entry, entry_hash=entry_hash(entry))  # noqa: PLW2901 - a cleverer forgery
        await connection.jetstream().publish(subjects.AUDIT_ENTRY, msgspec.json.encode(entry))
    await connection.drain()
    return forged_server, forged_server.url


async def test_an_entry_edited_outside_the_service_is_named(hub: RunningHub, tmp_path: Path) -> None:
    await some_history(hub)
    entries = await audit_entries(hub.connection)
    server, url = await replay_into_fresh_store(entries, tmp_path, edit=4, rehash=False)
    try:
        result = await hubctl("audit", "verify", "--nats-url", url)
    finally:
        server.stop()

    assert result.status == 1
    assert "audit chain BROKEN at entry 4: entry_hash does not match the entry's content" in result.stderr


async def test_a_forgery_with_a_recomputed_hash_breaks_the_next_link(hub: RunningHub, tmp_path: Path) -> None:
    await some_history(hub)
    entries = await audit_entries(hub.connection)
    server, url = await replay_into_fresh_store(entries, tmp_path, edit=4, rehash=True)
    try:
        result = await hubctl("audit", "verify", "--nats-url", url)
    finally:
        server.stop()

    assert result.status == 1
    assert "audit chain BROKEN at entry 5: prev_hash does not match" in result.stderr


async def test_a_crashed_audit_service_loses_and_duplicates_nothing(
    nats_server: EmbeddedNats, provisioned: Client
) -> None:
    others = {name: factory for name, factory in SERVICE_FACTORIES.items() if name != "audit"}
    tasks, stop, ports = await start_services(nats_server.url, others)
    hub = RunningHub(nats_server.url, provisioned, ports)
    audit_tasks, _, _ = await start_services(nats_server.url, {"audit": audit_app.create_app})
    try:
        sender = await hub.clinic("harbor-pt")
        sends = [asyncio.create_task(sender.send(referral_request())) for _ in range(30)]
        await asyncio.sleep(0.3)
        for task in audit_tasks:
            task.cancel()
        await asyncio.gather(*sends)
        await asyncio.gather(*audit_tasks, return_exceptions=True)
        restarted, restart_stop, _ = await start_services(nats_server.url, {"audit": audit_app.create_app})
        await wait_idle(hub.connection, timeout=topology.ACK_WAIT_SECONDS + 45)
        restart_stop.set()
        await asyncio.gather(*restarted)
        entries = [entry async for entry in read_chain(provisioned.jetstream())]
        stored = 0
        for stream in (streams.CLINIC_OUT, streams.CLINIC_IN, streams.HUB_EVENTS, streams.HUB_DEADLETTER):
            stored += (await provisioned.jetstream().stream_info(stream)).state.messages
    finally:
        for client in hub.clients.values():
            await client.close()
        stop.set()
        await asyncio.gather(*tasks)
    verified = await hubctl("audit", "verify", "--nats-url", nats_server.url)

    sources = Counter((e.source_stream, e.source_sequence) for e in entries)
    assert verified.status == 0, verified.stderr
    assert max(sources.values()) == 1
    assert len(sources) == stored
