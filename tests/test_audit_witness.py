"""Clinics as witnesses: a checkpoint a clinic kept exposes a history rewritten by someone with the disk and the key.

The attack: an insider holding the audit store *and* the signing key rebuilds the log with
one entry changed, re-chains every entry after it, re-signs every checkpoint with the hub's
own key and stores it all in a fresh server. Every check the hub can make on its own store
passes (``hubctl audit verify`` with the right pinned key): the entries chain, each
checkpoint matches its entries and is signed by the pinned key. A checkpoint a clinic was
given before the rewrite does not match, and ``hubctl audit verify --witness`` says so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client

from referral_hub.audit import app as audit_app
from referral_hub.audit.adapters import ChainWriter, Checkpointer, read_chain, read_checkpoints
from referral_hub.audit.checkpoints import SigningKeys, leaf_hash, load_key, make_checkpoint, new_key_seed
from referral_hub.audit.domain import GENESIS_HASH, chain, describe
from referral_hub.audit.note import SignerKey
from referral_hub.audit.witness import Held, read_held, witness_fault, witness_faults
from referral_hub.audit.witnessing import WITNESSED, registered_clinics, witnessed
from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry, CheckpointWitnessed
from referral_hub.contracts.codec import decode_hub_message, encode
from referral_hub.notifications import app as notifications_app
from referral_hub.referrals import app as referrals_app
from referral_hub.runtime.broker import permissions
from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port
from referral_hub.runtime.jetstream import streams, subjects
from referral_hub.runtime.messaging.incoming import Incoming

from .audit_logs import AT, chained, store
from .conftest import start_services
from .helpers import RunningHub, eventually, hubctl, referral_request, stream_messages, wait_idle

KEY = load_key(new_key_seed()).current
OTHER = load_key(new_key_seed()).current


@pytest.fixture(autouse=True)
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_AUDIT_VERIFIER_KEY", str(KEY.verifier))


def signed_log(entries: list[AuditEntry], key: SignerKey, every: int) -> list[AuditCheckpoint]:
    checkpoints: list[AuditCheckpoint] = []
    for start in range(0, len(entries), every):
        previous = checkpoints[-1] if checkpoints else None
        checkpoints.append(make_checkpoint(entries[start : start + every], previous, key, AT))
    return checkpoints


def leaves(entries: list[AuditEntry]) -> list[bytes]:
    return [leaf_hash(entry.entry_hash) for entry in entries]


def rewritten(entries: list[AuditEntry], at: int) -> list[AuditEntry]:
    """The log with entry ``at`` saying another clinic sent it, every entry after it re-chained."""
    forged, prev = [], GENESIS_HASH
    for entry in entries:
        changed = msgspec.structs.replace(entry, clinic="summit-chiro") if entry.index == at else entry
        forged.append(chain(changed, entry.index, prev))
        prev = forged[-1].entry_hash
    return forged


def held(checkpoint: AuditCheckpoint) -> Held:
    return Held(f"checkpoint {checkpoint.checkpoint_index}", checkpoint.note)


# Pure.


def test_a_log_that_extends_every_held_checkpoint_passes() -> None:
    log = chained(10)
    checkpoints = signed_log(log, KEY, 4)  # sizes 4, 8, 10

    faults = witness_faults([held(c) for c in checkpoints], leaves(log), checkpoints, [KEY.verifier])
    beyond = witness_faults([held(checkpoints[-1])], leaves(log), checkpoints[:1], [KEY.verifier])
    unsigned = witness_faults([held(checkpoints[1])], leaves(log), [], [KEY.verifier])

    assert faults == []
    assert beyond == []  # the clinic holds a newer checkpoint than the log still has
    assert unsigned == []


def test_a_history_rewritten_and_re_signed_with_the_hub_s_own_key_fails_the_witness_check() -> None:
    log = chained(10)
    genuine = signed_log(log, KEY, 4)
    forged_log = rewritten(log, at=2)
    forged = signed_log(forged_log, KEY, 4)

    fault = witness_fault(held(genuine[0]), leaves(forged_log), forged, [KEY.verifier])

    assert fault is not None
    assert "history was rewritten" in fault.reason
    assert "the log's checkpoint 1 (size 4)" in fault.reason


@pytest.mark.parametrize(
    ("checkpoints", "expected"),
    [
        (lambda forged: forged, "the log's checkpoint 2 (size 8)"),
        (lambda forged: forged[:1], "beyond its newest checkpoint 1"),
        (lambda _: [], "the log holds no signed checkpoint"),
    ],
)
def test_every_way_of_comparing_catches_the_rewrite(checkpoints, expected: str) -> None:
    log = chained(10)
    genuine = signed_log(log, KEY, 4)
    forged_log = rewritten(log, at=6)
    in_the_log = checkpoints(signed_log(forged_log, KEY, 4))

    fault = witness_fault(held(genuine[1]), leaves(forged_log), in_the_log, [KEY.verifier])

    assert fault is not None
    assert expected in fault.reason


def test_a_truncated_log_fails_the_witness_check() -> None:
    log = chained(10)
    genuine = signed_log(log, KEY, 4)

    fault = witness_fault(held(genuine[2]), leaves(log[:6]), genuine[:1], [KEY.verifier])

    assert fault is not None
    assert "the hub signed a log of 10 entries, but the log now holds 6" in fault.reason


def test_a_held_checkpoint_the_hub_never_signed_proves_nothing() -> None:
    log = chained(4)
    theirs = make_checkpoint(log, None, OTHER, AT)

    fault = witness_fault(held(theirs), leaves(log), signed_log(log, KEY, 4), [KEY.verifier])

    assert fault is not None
    assert fault.unsigned
    assert fault.reason.startswith("not a checkpoint signed by this hub's key")


def test_witness_files_are_read_as_notes_or_as_json_lines() -> None:
    checkpoints = signed_log(chained(10), KEY, 4)
    notes = "\n".join(c.note for c in checkpoints)
    inbox = "\n".join(
        [
            json.dumps({"sequence": 7, "subject": "clinic.x.in.referral.requested", "message": {"type": "x"}}),
            *(
                json.dumps({"sequence": n, "message": json.loads(encode(witnessed(c, "harbor-pt")))})
                for n, c in enumerate(checkpoints)
            ),
            msgspec.json.encode(checkpoints[0]).decode(),
        ]
    )

    from_notes = read_held(notes, "held.txt")
    from_inbox = read_held(inbox, "inbox.jsonl")

    assert [h.note for h in from_notes] == [c.note for c in checkpoints]
    assert from_notes[1].where == "held.txt line 7"  # five lines a note, and a blank line
    assert [h.note for h in from_inbox] == [*(c.note for c in checkpoints), checkpoints[0].note]
    assert from_inbox[0].where == "inbox.jsonl line 2"


# Against real servers and the command line: the attack itself.


def delivery(seq: int) -> Incoming:
    return Incoming(f"clinic.harbor-pt.out.referral.request.{seq}", b'{"n": %d}' % seq, {}, "CLINIC_OUT", seq, AT, 1)


async def a_signed_log(provisioned: Client, keys: SigningKeys) -> list[AuditCheckpoint]:
    """Nine entries in the hub's store, checkpointed after 6 and after 9."""
    writer, checkpointer = ChainWriter(provisioned), Checkpointer(provisioned.jetstream(), keys, every_entries=1)
    for seq in range(1, 7):
        await writer.append(describe(delivery(seq), AT), f"CLINIC_OUT:{seq}")
    first = await checkpointer.run_once(AT)
    for seq in range(7, 10):
        await writer.append(describe(delivery(seq), AT), f"CLINIC_OUT:{seq}")
    second = await checkpointer.run_once(AT + timedelta(minutes=1))
    assert first is not None
    assert second is not None
    return [first, second]


async def test_an_insider_with_the_disk_and_the_signing_key_passes_verify_but_not_the_witness_check(
    nats_server: EmbeddedNats, provisioned: Client, tmp_path: Path
) -> None:
    genuine = await a_signed_log(provisioned, SigningKeys(KEY))
    witness_file = tmp_path / "held.txt"
    witness_file.write_text(genuine[0].note)  # what the clinic was given after entry 6
    entries = [entry async for entry in read_chain(provisioned.jetstream())]
    forged_entries = rewritten(entries, at=3)
    forged_checkpoints = [make_checkpoint(forged_entries[:6], None, KEY, AT)]
    forged_checkpoints.append(make_checkpoint(forged_entries[6:], forged_checkpoints[0], KEY, AT))
    insider = EmbeddedNats(tmp_path / "rebuilt", port=free_port(), monitor_port=free_port())
    insider.start()
    try:
        await store(insider.url, forged_entries, forged_checkpoints)
        plain = await hubctl("audit", "verify", "--nats-url", insider.url)
        witnessed_check = await hubctl("audit", "verify", "--nats-url", insider.url, "--witness", str(witness_file))
    finally:
        insider.stop()
    genuine_check = await hubctl("audit", "verify", "--nats-url", nats_server.url, "--witness", str(witness_file))
    planted = tmp_path / "planted.txt"  # what someone with only the audit service's NATS key could add
    planted.write_text(genuine[0].note + "\n" + make_checkpoint(forged_entries[:6], None, OTHER, AT).note)
    with_planted = await hubctl("audit", "verify", "--nats-url", nats_server.url, "--witness", str(planted))
    planted.write_text(make_checkpoint(forged_entries[:6], None, OTHER, AT).note)
    only_planted = await hubctl("audit", "verify", "--nats-url", nats_server.url, "--witness", str(planted))

    assert forged_entries[2].clinic == "summit-chiro"
    assert plain.status == 0, plain.stderr
    assert plain.stdout.startswith("audit chain OK: 9 entries verified; 2 signed checkpoints verified")
    assert witnessed_check.status == 1
    assert witnessed_check.stderr.startswith("hubctl: error: audit log REWRITTEN: 1 of 1 checkpoints a clinic holds")
    assert "the hub signed a log of 6 entries that the log's checkpoint 1 (size 6) does not extend" in (
        witnessed_check.stderr
    )
    assert genuine_check.status == 0, genuine_check.stderr
    assert "1 checkpoints held by a clinic are extended by the log" in genuine_check.stdout
    assert with_planted.status == 0, with_planted.stderr
    assert "passed over, not evidence" in with_planted.stderr
    assert only_planted.status == 1
    assert "none of the checkpoints in the witness file is signed" in only_planted.stderr


async def test_a_log_rebuilt_without_its_checkpoints_or_cut_short_fails_the_witness_check(
    provisioned: Client, tmp_path: Path
) -> None:
    genuine = await a_signed_log(provisioned, SigningKeys(KEY))
    witness_file = tmp_path / "held.txt"
    witness_file.write_text(genuine[1].note)
    entries = [entry async for entry in read_chain(provisioned.jetstream())]
    results = []
    for name, log in (("stripped", rewritten(entries, at=8)), ("cut", entries[:7])):
        insider = EmbeddedNats(tmp_path / name, port=free_port(), monitor_port=free_port())
        insider.start()
        try:
            await store(insider.url, log, [])
            results.append(await hubctl("audit", "verify", "--nats-url", insider.url))
            results.append(await hubctl("audit", "verify", "--nats-url", insider.url, "--witness", str(witness_file)))
        finally:
            insider.stop()

    stripped_plain, stripped_witnessed, cut_plain, cut_witnessed = results
    assert stripped_plain.status == 0, stripped_plain.stderr
    assert "no entry is signed yet" in stripped_plain.stdout
    assert stripped_witnessed.status == 1
    assert "the log holds no signed checkpoint" in stripped_witnessed.stderr
    assert cut_plain.status == 0, cut_plain.stderr
    assert cut_witnessed.status == 1
    assert "the hub signed a log of 9 entries, but the log now holds 7" in cut_witnessed.stderr


# Delivery: every signed checkpoint reaches every clinic's inbox, numbered.


@pytest.fixture
async def witnessed_hub(nats_server: EmbeddedNats, provisioned: Client) -> AsyncIterator[RunningHub]:
    factories = {
        "referrals": referrals_app.create_app,
        "notifications": notifications_app.create_app,
        "audit": partial(
            audit_app.create_app,
            signing_key=KEY.encode(),
            checkpoints=audit_app.CheckpointPolicy(entries=5, seconds=3600, poll_seconds=0.05),
            witness_inboxes=True,
        ),
    }
    tasks, stop, ports = await start_services(nats_server.url, factories)
    hub = RunningHub(nats_server.url, provisioned, ports)
    yield hub
    for client in hub.clients.values():
        await client.close()
    stop.set()
    await asyncio.gather(*tasks)


async def test_every_signed_checkpoint_is_delivered_to_every_clinic_s_inbox_and_checks_as_a_witness(
    witnessed_hub: RunningHub, tmp_path: Path
) -> None:
    hub = witnessed_hub
    sender = await hub.clinic("harbor-pt")
    clinics = await registered_clinics(hub.connection, permissions.JS_API)

    async def two_checkpoints_delivered() -> list[AuditCheckpoint]:
        await sender.send_and_confirm(referral_request())
        await wait_idle(hub.connection)
        published = await read_checkpoints(hub.connection.jetstream())
        copies = [s for s, _ in await stream_messages(hub.connection, streams.CLINIC_IN) if s.endswith(WITNESSED)]
        return published if len(published) >= 2 and len(copies) >= 2 * len(clinics) else []

    published = await eventually(two_checkpoints_delivered, timeout=30)
    copies = await stream_messages(hub.connection, streams.CLINIC_IN, subjects.clinic_in("lotus-acu", WITNESSED))
    inbox = [decode_hub_message(data) for _, data in copies]
    witness_file = tmp_path / "lotus-acu.jsonl"
    witness_file.write_text("\n".join(json.dumps({"message": json.loads(data)}) for _, data in copies) + "\n")
    checked = await hubctl("audit", "verify", "--nats-url", hub.url, "--witness", str(witness_file))

    assert len(clinics) >= 3
    assert {"harbor-pt", "lotus-acu"} <= set(clinics)
    assert all(isinstance(message, CheckpointWitnessed) for message in inbox)
    first = inbox[0]
    assert isinstance(first, CheckpointWitnessed)
    assert (first.clinic, first.checkpoint_index, first.note) == ("lotus-acu", 1, published[0].note)
    assert [m.checkpoint_index for m in inbox if isinstance(m, CheckpointWitnessed)][:2] == [1, 2]
    assert all(m.event_number > 0 for m in inbox if isinstance(m, CheckpointWitnessed))
    assert checked.status == 0, checked.stderr
    assert f"{len(inbox)} checkpoints held by a clinic are extended by the log" in checked.stdout


def test_a_witnessed_checkpoint_is_an_inbox_message_every_clinic_can_decode() -> None:
    checkpoint = signed_log(chained(4), KEY, 4)[0]
    message = witnessed(checkpoint, "lotus-acu")

    decoded = decode_hub_message(encode(message))

    assert decoded == message
    assert WITNESSED == "audit.checkpoint.witnessed"
    assert witnessed(checkpoint, "lotus-acu").message_id == message.message_id  # a repeat is de-duplicated
