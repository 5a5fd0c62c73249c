"""Signed notes and tlog checkpoints, byte for byte as the Go reference implementation writes them.

Vectors from golang.org/x/mod, sumdb/note/note_test.go (TestNewVerifier, TestNewSigner,
TestSign, TestOpen): github.com/golang/mod at 605edab4323bfdf06a0d8ac68b4b18e9e0df249b.
Format per c2sp.org/signed-note and c2sp.org/tlog-checkpoint (github.com/C2SP/C2SP,
signed-note.md and tlog-checkpoint.md).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest

from referral_hub.audit.checkpoints import load_key, make_checkpoint, merkle_root, new_key_seed
from referral_hub.audit.domain import GENESIS_HASH, chain
from referral_hub.audit.note import (
    CheckpointBody,
    NoteError,
    SignerKey,
    VerifierKey,
    key_id,
    open_note,
    parse_checkpoint,
    parse_note,
    sign_note,
)
from referral_hub.contracts.audit import AuditEntry

PETER_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_the_key_id_is_the_first_four_bytes_of_sha256_of_name_newline_type_and_key() -> None:
    verifier = VerifierKey.parse(PETER)
    by_hand = hashlib.sha256(b"PeterNeumann\n\x01" + verifier.public_key).digest()[:4]

    assert key_id("PeterNeumann", verifier.public_key) == 0xC74F20A3
    assert by_hand == bytes.fromhex("c74f20a3")
    assert str(verifier) == PETER
    assert base64.b64decode(PETER.rsplit("+", 1)[1])[0] == 0x01


def test_signing_matches_go_byte_for_byte() -> None:
    signer = SignerKey.parse(PETER_SIGNER)

    assert str(signer.verifier) == PETER
    assert signer.encode() == PETER_SIGNER
    assert sign_note(TEXT, [signer]) == TEXT + "\n" + PETER_SIG
    assert "AYEKF" not in repr(signer)


def test_opening_verifies_known_keys_and_ignores_unknown_ones() -> None:
    message = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    peter, enoch = VerifierKey.parse(PETER), VerifierKey.parse(ENOCH)

    note, one = open_note(message, [peter])
    _, both = open_note(message, [peter, enoch])

    assert note.text == TEXT
    assert one == (peter,)
    assert both == (peter, enoch)
    with pytest.raises(NoteError, match="not by"):
        open_note(message, [])


def test_a_known_key_whose_signature_fails_rejects_the_note() -> None:
    broken = TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]

    with pytest.raises(NoteError, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        open_note(broken, [VerifierKey.parse(PETER)])


def test_a_signature_sharing_only_the_name_of_a_known_key_is_ignored() -> None:
    impostor = SignerKey.from_seed("PeterNeumann", bytes(32))
    message = sign_note(TEXT, [impostor])

    with pytest.raises(NoteError, match="not by PeterNeumann\\+c74f20a3"):
        open_note(message, [VerifierKey.parse(PETER)])


@pytest.mark.parametrize(
    "message",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name")[:-1],
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG * 101,
    ],
)
def test_malformed_notes_are_refused(message: str) -> None:
    with pytest.raises(NoteError):
        parse_note(message)


@pytest.mark.parametrize(
    "key",
    [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # wrong length
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key id
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # a space in the name
        PETER[:-1],
        PETER.replace("+", "-", 1),
    ],
)
def test_mangled_verifier_keys_are_refused(key: str) -> None:
    with pytest.raises(NoteError):
        VerifierKey.parse(key)


def test_a_mangled_signer_key_is_refused() -> None:
    with pytest.raises(NoteError):
        SignerKey.parse(PETER_SIGNER.replace("c74f20a3", "c74f20a4"))


def entries(count: int) -> list[AuditEntry]:
    chained, prev = [], GENESIS_HASH
    for index in range(1, count + 1):
        entry = AuditEntry(
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
        )
        chained.append(chain(entry, index, prev))
        prev = chained[-1].entry_hash
    return chained


def test_a_checkpoint_carries_a_c2sp_checkpoint_note_signed_under_its_origin() -> None:
    keys = load_key(new_key_seed(), origin="hub.example/audit")
    log = entries(3)
    checkpoint = make_checkpoint(log, None, keys.current, AT)

    note, signers = open_note(checkpoint.note, [keys.current.verifier])
    lines = checkpoint.note.split("\n")
    body = parse_checkpoint(note.text)

    assert signers == (keys.current.verifier,)
    assert lines[:3] == [
        "hub.example/audit",
        "3",
        base64.b64encode(bytes.fromhex(checkpoint.merkle_root)).decode(),
    ]
    assert lines[3] == ""
    assert lines[4].startswith("\u2014 hub.example/audit ")
    assert len(base64.b64decode(lines[4].split(" ")[2])) == 4 + 64
    assert body == CheckpointBody("hub.example/audit", 3, bytes.fromhex(checkpoint.merkle_root))
    assert checkpoint.public_key == keys.current.verifier.public_key.hex()


def test_the_c2sp_example_checkpoint_parses() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"

    body = parse_checkpoint(text)

    assert (body.origin, body.tree_size) == ("example.com/behind-the-sofa", 20852163)
    assert body.text == text


@pytest.mark.parametrize(
    "text",
    [
        "origin\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "origin\n12\nnot base64!\n",
        "origin\n12\nAAAA\n",
        "\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "origin\n12\n",
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(text)


def test_an_empty_tree_checkpoint_is_size_zero_with_the_empty_root() -> None:
    body = CheckpointBody("hub.example/audit", 0, merkle_root([]))

    assert parse_checkpoint(body.text) == body
    assert body.text.split("\n")[1] == "0"
