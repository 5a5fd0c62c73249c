"""Signed audit checkpoints: RFC 9162 Merkle roots and Ed25519 signatures, pure and against a real server.

Checkpoints are trusted only under a pinned verifier key: the tests pin ``HUB_AUDIT_VERIFIER_KEY``
(the ``hubctl`` subprocesses inherit it) to the key the hub under test signs with.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from prometheus_client import REGISTRY

from referral_hub.audit import app as audit_app
from referral_hub.audit.adapters import read_checkpoints
from referral_hub.audit.checkpoints import (
    consistency_proof,
    frontier_push,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    load_key,
    make_checkpoint,
    merkle_root,
    new_key_seed,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
)
from referral_hub.audit.domain import GENESIS_HASH, chain
from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry
from referral_hub.notifications import app as notifications_app
from referral_hub.referrals import app as referrals_app
from referral_hub.runtime.broker.embedded import EmbeddedNats

from .conftest import start_services
from .helpers import RunningHub, eventually, hubctl, referral_request, wait_idle

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SEED = new_key_seed()
KEY = load_key(SEED).current
PINNED = KEY.verifier


def entries(count: int) -> list[AuditEntry]:
    chained, prev = [], GENESIS_HASH
    for index in range(1, count + 1):
        entry = chain(
            AuditEntry(
                index=0,
                recorded_at=AT,
                occurred_at=AT,
                service="hub",
                action="event",
                message_type="referral.requested",
                subject="hub.event.referral.requested",
                source_message_id=f"m{index}",
                source_stream="HUB_EVENTS",
                source_sequence=index,
                payload_sha256="0" * 64,
                prev_hash="",
            ),
            index,
            prev,
        )
        chained.append(entry)
        prev = entry.entry_hash
    return chained


def test_the_merkle_root_follows_rfc_9162() -> None:
    a, b, c = (hashlib.sha256(bytes([n])).digest() for n in range(3))

    def node(left: bytes, right: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + left + right).digest()

    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == node(a, b)
    assert merkle_root([a, b, c]) == node(node(a, b), c)
    assert merkle_root([]) == hashlib.sha256(b"").digest()


def test_a_checkpoint_verifies_against_the_entries_it_covers() -> None:
    log = entries(7)
    first = make_checkpoint(log[:4], None, KEY, AT)
    second = make_checkpoint(log[4:], first, KEY, AT)

    assert verify_checkpoint(first, log[:4], None, PINNED) is None
    assert verify_checkpoint(second, log[4:], first, PINNED) is None
    assert (second.from_index, second.to_index, second.checkpoint_index) == (5, 7, 2)


def test_an_edited_entry_breaks_its_checkpoint() -> None:
    log = entries(4)
    checkpoint = make_checkpoint(log, None, KEY, AT)
    edited = [*log[:2], msgspec.structs.replace(log[2], entry_hash=leaf_hash(log[2].entry_hash).hex()), log[3]]

    fault = verify_checkpoint(checkpoint, edited, None, PINNED)

    assert fault is not None
    assert fault.reason == "merkle_root does not match the entries it covers"


def test_a_forged_checkpoint_does_not_verify() -> None:
    log = entries(3)
    genuine = make_checkpoint(log, None, KEY, AT)
    forged = msgspec.structs.replace(genuine, created_at=datetime(2027, 1, 1, tzinfo=UTC))

    fault = verify_checkpoint(forged, log, None, PINNED)

    assert fault is not None
    assert fault.reason == "the signature does not verify"


def test_a_checkpoint_signed_by_another_key_is_refused() -> None:
    log = entries(2)
    other_key = load_key(new_key_seed()).current
    other = make_checkpoint(log, None, other_key, AT)

    fault = verify_checkpoint(other, log, None, PINNED)

    assert fault is not None
    assert fault.reason == f"signed by {other_key.verifier.label}, not by the pinned key {PINNED.label}"


def test_a_checkpoint_that_skips_entries_is_refused() -> None:
    log = entries(6)
    first = make_checkpoint(log[:2], None, KEY, AT)
    skipping = make_checkpoint(log[3:], first, KEY, AT)

    fault = verify_checkpoint(skipping, log[3:], first, PINNED)

    assert fault is not None
    assert "expected to start at 3" in fault.reason


@pytest.fixture(autouse=True)
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin the hub's key for every ``hubctl`` these tests run."""
    monkeypatch.setenv("HUB_AUDIT_VERIFIER_KEY", str(PINNED))


@pytest.fixture
async def signed_hub(nats_server: EmbeddedNats, provisioned: Client) -> AsyncIterator[RunningHub]:
    factories = {
        "referrals": referrals_app.create_app,
        "notifications": notifications_app.create_app,
        "audit": partial(
            audit_app.create_app,
            signing_key=SEED,
            checkpoints=audit_app.CheckpointPolicy(entries=5, seconds=3600, poll_seconds=0.05),
        ),
    }
    tasks, stop, ports = await start_services(nats_server.url, factories)
    hub = RunningHub(nats_server.url, provisioned, ports)
    yield hub
    for client in hub.clients.values():
        await client.close()
    stop.set()
    await asyncio.gather(*tasks)


async def traffic_until_checkpoints(hub: RunningHub, count: int, covering: int = 0) -> list[AuditCheckpoint]:
    """Send referrals until ``count`` checkpoints exist, the newest covering entry ``covering``.

    A checkpoint falls due by time as well as by count, so the first one may hold only the
    entries written before its timer fired.
    """
    sender = await hub.clinic("harbor-pt")

    async def enough() -> list[AuditCheckpoint]:
        await sender.send_and_confirm(referral_request())
        await wait_idle(hub.connection)
        published = await read_checkpoints(hub.connection.jetstream())
        return published if len(published) >= count and published[-1].to_index >= covering else []

    return await eventually(enough, timeout=30)


async def test_the_audit_service_publishes_signed_checkpoints_that_verify(signed_hub: RunningHub) -> None:
    published = await traffic_until_checkpoints(signed_hub, 2)

    verified = await hubctl("audit", "verify", "--nats-url", signed_hub.url)

    assert verified.status == 0, verified.stderr
    assert "signed checkpoints verified" in verified.stdout
    assert published[0].from_index == 1
    assert published[1].from_index == published[0].to_index + 1
    newest = REGISTRY.get_sample_value("hub_audit_last_checkpoint_timestamp_seconds")
    assert newest is not None
    assert newest >= published[1].created_at.timestamp()


async def test_a_receipt_checks_offline_and_a_tampered_one_does_not(signed_hub: RunningHub, tmp_path: Path) -> None:
    await traffic_until_checkpoints(signed_hub, 1, covering=3)
    receipt = tmp_path / "receipt.json"
    proved = await hubctl("audit", "prove", "3", "--out", str(receipt), "--nats-url", signed_hub.url)
    assert proved.status == 0, proved.stderr

    genuine = await hubctl("audit", "check-proof", str(receipt))
    document = json.loads(receipt.read_text())
    document["entry"]["clinic"] = "someone-else"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    rejected = await hubctl("audit", "check-proof", str(forged))

    assert genuine.status == 0, genuine.stderr
    assert genuine.stdout.startswith("proof OK: entry 3 ")
    assert rejected.status == 1
    assert "the entry's content does not match its hash" in rejected.stderr


async def test_consistency_between_two_checkpoints_proves_and_checks(signed_hub: RunningHub, tmp_path: Path) -> None:
    await traffic_until_checkpoints(signed_hub, 2)
    proof = tmp_path / "consistency.json"
    made = await hubctl("audit", "consistency", "1", "2", "--out", str(proof), "--nats-url", signed_hub.url)

    genuine = await hubctl("audit", "check-proof", str(proof))
    document = json.loads(proof.read_text())
    document["proof"][0] = hashlib.sha256(b"rewritten").hexdigest()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    rejected = await hubctl("audit", "check-proof", str(forged))

    assert made.status == 0, made.stderr
    assert genuine.status == 0, genuine.stderr
    assert "is a prefix of checkpoint 2" in genuine.stdout
    assert rejected.status == 1
    assert "not only appended to" in rejected.stderr


def hashed_leaves(count: int) -> list[bytes]:
    return [hashlib.sha256(index.to_bytes(4, "big")).digest() for index in range(count)]


@given(st.integers(min_value=1, max_value=80))
def test_the_frontier_gives_the_same_root_as_the_whole_tree(size: int) -> None:
    frontier: list[tuple[int, bytes]] = []
    for leaf in hashed_leaves(size):
        frontier = frontier_push(frontier, leaf)

    assert frontier_root(frontier) == merkle_root(hashed_leaves(size))


@given(st.integers(min_value=1, max_value=80), st.data())
def test_every_inclusion_proof_verifies_and_a_tampered_one_does_not(size: int, data: st.DataObject) -> None:
    leaves = hashed_leaves(size)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = inclusion_proof(index, leaves)
    root = merkle_root(leaves)

    assert verify_inclusion(index, size, leaves[index], proof, root)
    assert not verify_inclusion(index, size, hashlib.sha256(b"forged").digest(), proof, root)
    if proof:
        tampered = [*proof[:-1], hashlib.sha256(proof[-1]).digest()]
        assert not verify_inclusion(index, size, leaves[index], tampered, root)


@given(st.integers(min_value=1, max_value=80), st.data())
def test_every_consistency_proof_verifies_and_a_rewritten_history_does_not(size: int, data: st.DataObject) -> None:
    leaves = hashed_leaves(size)
    old = data.draw(st.integers(min_value=1, max_value=size))
    proof = consistency_proof(old, leaves)
    old_root, new_root = merkle_root(leaves[:old]), merkle_root(leaves)
    rewritten = merkle_root([hashlib.sha256(b"rewritten").digest(), *leaves[1:old]])

    assert verify_consistency(old, size, old_root, new_root, proof)
    assert not verify_consistency(old, size, rewritten, new_root, proof)


async def test_query_selects_by_referral_and_export_gives_fhir_audit_events(hub: RunningHub, tmp_path: Path) -> None:
    sender = await hub.clinic("harbor-pt")
    wanted = referral_request()
    await sender.send_and_confirm(wanted)
    await sender.send_and_confirm(referral_request())
    await wait_idle(hub.connection)
    index = str(tmp_path / "index.sqlite")

    selected = await hubctl(
        "audit", "query", "--referral", str(wanted.referral_id), "--json", "--index", index, "--nats-url", hub.url
    )
    exported = await hubctl(
        "audit", "export", "--format", "fhir", "--referral", str(wanted.referral_id), "--index", index,
        "--nats-url", hub.url,
    )  # fmt: skip

    entries = [json.loads(line) for line in selected.stdout.splitlines()]
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    assert selected.status == 0, selected.stderr
    assert entries
    assert {e["referral_id"] for e in entries} == {str(wanted.referral_id)}
    assert {e["message_type"] for e in entries} >= {"referral.request", "referral.requested"}
    assert len(events) == len(entries)
    assert {e["resourceType"] for e in events} == {"AuditEvent"}
    submit = next(e for e in events if e["subtype"][0]["code"] == "referral.request")
    assert submit["action"] == "C"
    assert submit["agent"][0]["who"]["identifier"] == {"system": "urn:referral-hub:clinic", "value": "harbor-pt"}
    assert {"system": "urn:referral-hub:referral", "value": str(wanted.referral_id)} in [
        entity["what"]["identifier"] for entity in submit["entity"]
    ]
