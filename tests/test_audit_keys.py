"""Whose checkpoints count: only the pinned key's, and keys it rotated to or from through a doubly signed one.

The finding these close: ``hubctl audit verify`` checked each checkpoint against the key the
checkpoint itself named, so a checkpoint signed by a fresh key and stored as ``audit``
passed, a chain holding three keys passed, the checkpointer chained onto the forgery, and
``check-proof`` caught it only when given ``--trusted-key``. Each test below marked *old*
passed (or chained) on that code.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nats.aio.client import Client

from referral_hub.audit.adapters import ChainWriter, Checkpointer, read_chain, read_checkpoints
from referral_hub.audit.checkpoints import (
    VERIFIER_KEY_FILE,
    SigningKeys,
    chain_onto,
    content_fault,
    key_chain,
    load_key,
    make_checkpoint,
    make_receipt,
    new_key_seed,
    receipt_fault,
    verify_checkpoint,
    write_verifier_key,
)
from referral_hub.audit.domain import GENESIS_HASH, describe
from referral_hub.audit.note import SignerKey, open_note, sign_note
from referral_hub.contracts.audit import AuditCheckpoint
from referral_hub.contracts.base import UtcDatetime
from referral_hub.runtime.broker.embedded import EmbeddedNats
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.messaging.incoming import Incoming

from .audit_logs import AT, chained
from .helpers import hubctl, secure_server

ORIGIN = "hub.example/audit"


def signer() -> SignerKey:
    return load_key(new_key_seed(), origin=ORIGIN).current


OLD, NEW, OTHER = signer(), signer(), signer()


def two_checkpoints(key: SignerKey) -> list[AuditCheckpoint]:
    log = chained(6)
    first = make_checkpoint(log[:3], None, key, AT)
    return [first, make_checkpoint(log[3:], first, key, AT)]


# Pure: the key chain.


def test_a_checkpoint_signed_by_a_fresh_key_after_the_pinned_ones_is_refused() -> None:  # old: passed
    log = chained(9)
    first = make_checkpoint(log[:3], None, OLD, AT)
    second = make_checkpoint(log[3:6], first, OLD, AT)
    forged = make_checkpoint(log[6:], second, OTHER, AT)

    keys, fault = key_chain([first, second, forged], OLD.verifier)

    assert fault is not None
    assert fault.checkpoint_index == 3
    assert fault.reason == (
        f"signed by {OTHER.verifier.label}, not by {OLD.verifier.label} (the pinned key), which signed checkpoint 2: "
        "the signing key may change only on a checkpoint signed by both"
    )
    assert content_fault(forged, log[6:], second) is None  # everything else about it is right
    assert keys == [OLD.verifier]


def test_a_history_re_signed_with_a_fresh_key_is_refused() -> None:  # old: passed
    _, fault = key_chain(two_checkpoints(OTHER), OLD.verifier)

    assert fault is not None
    assert fault.checkpoint_index == 1
    assert fault.reason == (
        f"signed by {OTHER.verifier.label}, not by the pinned key {OLD.verifier.label}: no checkpoint in the log is"
    )


@pytest.mark.parametrize("pinned", [0, 2])
def test_a_chain_of_three_keys_is_refused_whichever_is_pinned(pinned: int) -> None:  # old: passed
    log, three = chained(9), [OLD, NEW, OTHER]
    first = make_checkpoint(log[:3], None, three[0], AT)
    second = make_checkpoint(log[3:6], first, three[1], AT)
    third = make_checkpoint(log[6:], second, three[2], AT)

    _, fault = key_chain([first, second, third], three[pinned].verifier)

    assert fault is not None
    assert fault.checkpoint_index == 2


def rotated() -> tuple[list[AuditCheckpoint], list]:
    log = chained(9)
    first = make_checkpoint(log[:3], None, OLD, AT)
    rotation = make_checkpoint(log[3:6], first, NEW, AT, co_signers=[OLD])
    after = make_checkpoint(log[6:], rotation, NEW, AT)
    return [first, rotation, after], log


@pytest.mark.parametrize("pinned", ["old", "new"])
def test_a_rotation_through_a_checkpoint_signed_by_both_is_followed(pinned: str) -> None:
    checkpoints, _ = rotated()
    key = OLD if pinned == "old" else NEW

    keys, fault = key_chain(checkpoints, key.verifier)
    _, signers = open_note(checkpoints[1].note, [OLD.verifier, NEW.verifier])

    assert fault is None
    assert keys == [OLD.verifier, NEW.verifier]
    assert set(signers) == {OLD.verifier, NEW.verifier}
    assert checkpoints[1].note.count("\n\u2014 ") == 2


def test_after_a_rotation_the_old_key_alone_is_refused() -> None:
    (first, rotation, _), log = rotated()
    stolen_old = make_checkpoint(log[6:], rotation, OLD, AT)

    _, fault = key_chain([first, rotation, stolen_old], NEW.verifier)

    assert fault is not None
    assert fault.checkpoint_index == 3
    assert f"not by {NEW.verifier.label} (the pinned key), which signed checkpoint 2" in fault.reason


def test_a_key_change_without_the_old_key_s_signature_is_refused() -> None:
    log = chained(6)
    first = make_checkpoint(log[:3], None, OLD, AT)
    unvouched = make_checkpoint(log[3:], first, NEW, AT)  # no co-signature by OLD

    _, pinned_old = key_chain([first, unvouched], OLD.verifier)
    _, pinned_new = key_chain([first, unvouched], NEW.verifier)

    assert pinned_old is not None
    assert pinned_old.checkpoint_index == 2
    assert pinned_new is not None
    assert pinned_new.checkpoint_index == 2


def test_a_note_that_signs_another_tree_is_refused() -> None:
    checkpoint = two_checkpoints(OLD)[0]
    other_tree = sign_note(f"{ORIGIN}\n3\n{'A' * 43}=\n", [OLD])

    _, fault = key_chain([msgspec.structs.replace(checkpoint, note=other_tree)], OLD.verifier)

    assert fault is not None
    assert fault.reason == "its signed note states another tree size or root than the checkpoint"


def test_a_note_not_signed_by_the_checkpoint_s_own_key_is_refused() -> None:
    checkpoint = two_checkpoints(OLD)[0]
    text = checkpoint.note.split("\n\n")[0] + "\n"

    _, fault = key_chain([msgspec.structs.replace(checkpoint, note=sign_note(text, [OTHER]))], OLD.verifier)

    assert fault is not None
    assert "not by hub.example/audit" in fault.reason


def test_a_checkpoint_of_another_origin_is_refused() -> None:
    elsewhere = load_key(new_key_seed(), origin="other.example/log").current

    _, fault = key_chain(two_checkpoints(elsewhere), SignerKey(ORIGIN, elsewhere.private_key).verifier)

    assert fault is not None
    assert "other.example/log" in fault.reason


# Checkpoints from before notes, and readers from before notes.


class CheckpointBeforeNotes(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="audit.checkpoint"):
    checkpoint_index: int
    from_index: int
    to_index: int
    merkle_root: str
    chain_head: str
    prev_checkpoint_hash: str
    created_at: UtcDatetime
    public_key: str
    signature: str = ""
    tree_size: int = 0
    frontier: tuple[str, ...] = ()


def written_before_notes(checkpoint: AuditCheckpoint, key: SignerKey, prev_hash: str) -> AuditCheckpoint:
    """``checkpoint`` as the checkpointer wrote it before notes: no note, the old signature and link."""
    fields = {name: getattr(checkpoint, name) for name in CheckpointBeforeNotes.__struct_fields__}
    old = CheckpointBeforeNotes(**{**fields, "signature": "", "prev_checkpoint_hash": prev_hash})
    signed = msgspec.structs.replace(old, signature=key.sign(msgspec.json.encode(old)).hex())
    return msgspec.json.decode(msgspec.json.encode(signed), type=AuditCheckpoint)


def test_checkpoints_written_before_notes_still_verify_and_link() -> None:
    log = chained(9)
    first = written_before_notes(make_checkpoint(log[:3], None, OLD, AT), OLD, GENESIS_HASH)
    old_link = hashlib.sha256(
        msgspec.json.encode(msgspec.json.decode(msgspec.json.encode(first), type=CheckpointBeforeNotes))
    ).hexdigest()
    second = written_before_notes(make_checkpoint(log[3:6], first, OLD, AT), OLD, old_link)
    third = make_checkpoint(log[6:], second, OLD, AT)

    keys, fault = key_chain([first, second, third], OLD.verifier)

    assert first.note == ""
    assert fault is None
    assert keys == [OLD.verifier]
    assert verify_checkpoint(second, log[3:6], first, OLD.verifier) is None
    assert verify_checkpoint(third, log[6:], second, OLD.verifier) is None
    assert chain_onto(second, SigningKeys(OLD)) == ()
    _, other_pinned = key_chain([first, second], OTHER.verifier)
    assert other_pinned is not None


def test_readers_from_before_notes_still_verify_new_checkpoints() -> None:
    first, second = two_checkpoints(OLD)
    as_read = [msgspec.json.decode(msgspec.json.encode(c), type=CheckpointBeforeNotes) for c in (first, second)]
    unsigned = msgspec.structs.replace(as_read[1], signature="")

    Ed25519PublicKey.from_public_bytes(bytes.fromhex(as_read[1].public_key)).verify(
        bytes.fromhex(as_read[1].signature), msgspec.json.encode(unsigned)
    )
    assert as_read[1].prev_checkpoint_hash == hashlib.sha256(msgspec.json.encode(as_read[0])).hexdigest()


# The checkpointer: what it will chain onto.


def test_the_checkpointer_chains_onto_its_own_key_rotates_from_the_old_and_refuses_anyone_else() -> None:
    (first, rotation, after), _ = rotated()
    forged = two_checkpoints(OTHER)[0]

    assert chain_onto(None, SigningKeys(OLD)) == ()
    assert chain_onto(first, SigningKeys(OLD)) == ()
    assert chain_onto(first, SigningKeys(NEW, OLD)) == (OLD,)
    assert chain_onto(rotation, SigningKeys(NEW, OLD)) == ()
    assert chain_onto(after, SigningKeys(NEW)) == ()
    assert chain_onto(forged, SigningKeys(OLD)) is None  # old: chained onto it
    assert chain_onto(first, SigningKeys(NEW)) is None  # a key change nobody vouched for
    assert chain_onto(rotation, SigningKeys(OLD)) is None  # a replica left on the retired key


def test_a_rotating_key_file_holds_the_new_key_then_the_old_one() -> None:
    old_seed, new_seed = new_key_seed(), new_key_seed()

    keys = load_key(f"{new_seed}\n{old_seed}\n", origin=ORIGIN)
    as_signer_keys = load_key(f"{keys.current.encode()}\n{keys.previous.encode() if keys.previous else ''}")

    assert keys.current.verifier == load_key(new_seed, origin=ORIGIN).current.verifier
    assert keys.previous is not None
    assert keys.previous.verifier == load_key(old_seed, origin=ORIGIN).current.verifier
    assert as_signer_keys.current.verifier == keys.current.verifier
    assert new_seed not in repr(keys)


# Against a real server and the command line.


def delivery(seq: int) -> Incoming:
    return Incoming("hub.event.x", b'{"n": %d}' % seq, {}, "HUB_EVENTS", seq, AT, 1)


async def append(writer: ChainWriter, sources: range) -> None:
    for seq in sources:
        await writer.append(describe(delivery(seq), AT), f"HUB_EVENTS:{seq}")


@pytest.fixture
def pin(monkeypatch: pytest.MonkeyPatch) -> SignerKey:
    monkeypatch.setenv("HUB_AUDIT_VERIFIER_KEY", str(OLD.verifier))
    return OLD


async def test_verify_refuses_a_fresh_key_s_checkpoint_and_the_checkpointer_stops_on_it(  # old: passed, chained
    nats_server: EmbeddedNats, provisioned: Client, pin: SignerKey
) -> None:
    js = provisioned.jetstream()
    writer, checkpointer = ChainWriter(provisioned), Checkpointer(js, SigningKeys(pin), every_entries=1)
    await append(writer, range(1, 4))
    genuine = await checkpointer.run_once(AT)
    assert genuine is not None
    await append(writer, range(4, 7))
    log = [entry async for entry in read_chain(js)]
    forged = make_checkpoint(log[3:], genuine, OTHER, AT + timedelta(minutes=1))
    await js.publish(subjects.AUDIT_CHECKPOINT, msgspec.json.encode(forged))  # as the audit user could
    await append(writer, range(7, 9))

    after = await checkpointer.run_once(AT + timedelta(minutes=2))
    verified = await hubctl("audit", "verify", "--nats-url", nats_server.url)

    assert after is None
    assert await read_checkpoints(js) == [genuine, forged]
    assert verified.status == 1
    assert verified.stderr.startswith(f"hubctl: error: audit checkpoint 2 REFUSED: signed by {OTHER.verifier.label}")
    assert "Traceback" not in verified.stderr


async def test_verify_prove_and_check_proof_fail_closed_without_a_pinned_key(  # old: passed
    nats_server: EmbeddedNats, provisioned: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HUB_AUDIT_VERIFIER_KEY", raising=False)
    monkeypatch.delenv("HUB_AUDIT_VERIFIER_KEY_FILE", raising=False)
    js = provisioned.jetstream()
    await append(ChainWriter(provisioned), range(1, 4))
    checkpoint = await Checkpointer(js, SigningKeys(OLD), every_entries=1).run_once(AT)
    assert checkpoint is not None
    receipt = tmp_path / "receipt.json"
    receipt.write_bytes(msgspec.json.encode(make_receipt(chained(3), 2, two_checkpoints(OTHER)[0])))

    results = [
        await hubctl("audit", "verify", "--nats-url", nats_server.url),
        await hubctl("audit", "prove", "2", "--nats-url", nats_server.url),
        await hubctl("audit", "check-proof", str(receipt)),
    ]

    assert [result.status for result in results] == [1, 1, 1]
    for result in results:
        assert "no audit verifier key is pinned" in result.stderr
        assert "--verifier-key" in result.stderr
        assert "HUB_AUDIT_VERIFIER_KEY" in result.stderr


async def test_check_proof_rejects_a_receipt_on_a_checkpoint_another_key_signed(  # old: passed without --trusted-key
    tmp_path: Path, pin: SignerKey
) -> None:
    attackers_log = chained(3)
    checkpoint = make_checkpoint(attackers_log, None, OTHER, AT)
    receipt = tmp_path / "receipt.json"
    receipt.write_bytes(msgspec.json.encode(make_receipt(attackers_log, 2, checkpoint)))

    rejected = await hubctl("audit", "check-proof", str(receipt))
    accepted = await hubctl("audit", "check-proof", str(receipt), "--verifier-key", str(OTHER.verifier))

    assert receipt_fault(make_receipt(attackers_log, 2, checkpoint), pin.verifier) != ""
    assert rejected.status == 1
    assert rejected.stderr.strip() == (
        f"hubctl: error: proof REJECTED: signed by {OTHER.verifier.label}, not by the pinned key {pin.verifier.label}"
    )
    assert accepted.status == 0, accepted.stderr


async def test_a_rotation_by_the_checkpointer_verifies_under_either_key_and_receipts_use_the_pinned_one(
    nats_server: EmbeddedNats, provisioned: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    js = provisioned.jetstream()
    writer = ChainWriter(provisioned)
    await append(writer, range(1, 4))
    first = await Checkpointer(js, SigningKeys(OLD), every_entries=1).run_once(AT)
    await append(writer, range(4, 7))
    rotating = Checkpointer(js, load_key(f"{NEW.encode()}\n{OLD.encode()}"), every_entries=1)
    rotation = await rotating.run_once(AT + timedelta(minutes=1))
    await append(writer, range(7, 9))
    after = await rotating.run_once(AT + timedelta(minutes=2))
    await append(writer, range(9, 10))
    stale_replica = await Checkpointer(js, SigningKeys(OLD), every_entries=1).run_once(AT + timedelta(minutes=3))
    receipt = tmp_path / "receipt.json"

    monkeypatch.setenv("HUB_AUDIT_VERIFIER_KEY", str(NEW.verifier))
    under_new = await hubctl("audit", "verify", "--nats-url", nats_server.url)
    proved = await hubctl("audit", "prove", "1", "--out", str(receipt), "--nats-url", nats_server.url)
    checked = await hubctl("audit", "check-proof", str(receipt))
    under_old = await hubctl("audit", "verify", "--nats-url", nats_server.url, "--verifier-key", str(OLD.verifier))
    elsewhere = await hubctl("audit", "verify", "--nats-url", nats_server.url, "--verifier-key", str(OTHER.verifier))

    assert first is not None
    assert rotation is not None
    assert after is not None
    assert stale_replica is None
    _, signers = open_note(rotation.note, [OLD.verifier, NEW.verifier])
    assert set(signers) == {OLD.verifier, NEW.verifier}
    assert open_note(after.note, [OLD.verifier, NEW.verifier])[1] == (NEW.verifier,)
    assert under_new.status == 0, under_new.stderr
    assert under_new.stdout.startswith("audit chain OK: 9 entries verified; 3 signed checkpoints verified")
    assert f"signed by {OLD.verifier.label} then {NEW.verifier.label}" in under_new.stdout
    assert "the newest 1 entries are not signed yet" in under_new.stdout
    assert proved.status == 0, proved.stderr
    assert msgspec.json.decode(receipt.read_bytes())["checkpoint"]["checkpoint_index"] == 2  # the first NEW signed
    assert checked.status == 0, checked.stderr
    assert under_old.status == 0, under_old.stderr
    assert elsewhere.status == 1
    assert "REFUSED" in elsewhere.stderr


async def test_hubctl_prints_the_verifier_key_to_pin_and_verify_finds_it_in_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUB_AUDIT_VERIFIER_KEY", raising=False)
    seed_file = tmp_path / "audit-signing.key"
    seed_file.write_text(new_key_seed() + "\n")
    server = secure_server(tmp_path, monkeypatch, ["harbor-pt"])
    server.start()
    try:
        await provision_as_operator(server.url)
        creds = tmp_path / "auth"
        unpinned = await hubctl("audit", "verify", "--nats-url", server.url, "--creds-dir", str(creds))
        written = write_verifier_key(seed_file, creds / VERIFIER_KEY_FILE)
        printed = await hubctl("audit", "verifier-key", "--signing-key-file", str(seed_file))
        verified = await hubctl("audit", "verify", "--nats-url", server.url, "--creds-dir", str(creds))
    finally:
        server.stop()

    assert unpinned.status == 1
    assert "no audit verifier key is pinned" in unpinned.stderr
    assert printed.status == 0, printed.stderr
    assert printed.stdout.strip() == str(load_key(seed_file.read_text()).current.verifier) == str(written)
    assert printed.stdout.startswith("referral-hub.local/audit+")
    assert verified.status == 0, verified.stderr
    assert verified.stdout.startswith("audit chain OK: 0 entries verified")
