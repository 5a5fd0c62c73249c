"""Signed checkpoints over the audit chain: RFC 9162 Merkle roots, Ed25519 signatures. Pure.

A checkpoint covers the entries appended since the previous one. It states their Merkle
root and the chain head, links to the previous checkpoint's hash, and is signed. Verifying
a checkpoint recomputes all of that from the entries, so an edited entry, a dropped one or a
forged checkpoint is named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from referral_hub.audit.domain import GENESIS_HASH
from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry

_encoder: Final = msgspec.json.Encoder()
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"


def leaf_hash(entry_hash: str) -> bytes:
    """RFC 9162 section 2.1.1: ``SHA-256(0x00 || leaf)``; the leaf is the entry's chained hash."""
    return hashlib.sha256(LEAF_PREFIX + bytes.fromhex(entry_hash)).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 MTH over already-hashed leaves: split at the largest power of two below n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(NODE_PREFIX + merkle_root(leaves[:split]) + merkle_root(leaves[split:])).digest()


def checkpoint_hash(checkpoint: AuditCheckpoint) -> str:
    """What the next checkpoint links to: SHA-256 of this one, signature included."""
    return hashlib.sha256(_encoder.encode(checkpoint)).hexdigest()


def _signed_bytes(checkpoint: AuditCheckpoint) -> bytes:
    return _encoder.encode(msgspec.structs.replace(checkpoint, signature=""))


def make_checkpoint(
    entries: Sequence[AuditEntry],
    previous: AuditCheckpoint | None,
    key: Ed25519PrivateKey,
    at: datetime,
) -> AuditCheckpoint:
    """Sign the entries after ``previous`` (they must follow it without a gap)."""
    public = key.public_key().public_bytes_raw().hex()
    unsigned = AuditCheckpoint(
        checkpoint_index=(previous.checkpoint_index + 1) if previous else 1,
        from_index=entries[0].index,
        to_index=entries[-1].index,
        merkle_root=merkle_root([leaf_hash(e.entry_hash) for e in entries]).hex(),
        chain_head=entries[-1].entry_hash,
        prev_checkpoint_hash=checkpoint_hash(previous) if previous else GENESIS_HASH,
        created_at=at,
        public_key=public,
    )
    return msgspec.structs.replace(unsigned, signature=key.sign(_signed_bytes(unsigned)).hex())


@dataclass(frozen=True)
class CheckpointFault:
    """The first checkpoint that does not verify, and why."""

    checkpoint_index: int
    reason: str


def verify_checkpoint(
    checkpoint: AuditCheckpoint,
    entries: Sequence[AuditEntry],
    previous: AuditCheckpoint | None,
    trusted_key: str | None = None,
) -> CheckpointFault | None:
    """Recompute one checkpoint from the entries it covers (``entries[i].index == from_index + i``)."""
    reason = _placement_fault(checkpoint, entries, previous) or _content_fault(checkpoint, entries, trusted_key)
    return CheckpointFault(checkpoint.checkpoint_index, reason) if reason else None


def _placement_fault(
    checkpoint: AuditCheckpoint, entries: Sequence[AuditEntry], previous: AuditCheckpoint | None
) -> str:
    expected_from = previous.to_index + 1 if previous else 1
    if checkpoint.from_index != expected_from or checkpoint.to_index < checkpoint.from_index:
        return f"covers {checkpoint.from_index}..{checkpoint.to_index}, expected to start at {expected_from}"
    if checkpoint.prev_checkpoint_hash != (checkpoint_hash(previous) if previous else GENESIS_HASH):
        return "prev_checkpoint_hash does not match the previous checkpoint"
    size = checkpoint.to_index - checkpoint.from_index + 1
    if len(entries) != size:
        return f"the log holds {len(entries)} of its {size} entries"
    return ""


def _content_fault(checkpoint: AuditCheckpoint, entries: Sequence[AuditEntry], trusted_key: str | None) -> str:
    if entries[-1].entry_hash != checkpoint.chain_head:
        return "chain_head does not match the entry it names"
    if merkle_root([leaf_hash(e.entry_hash) for e in entries]).hex() != checkpoint.merkle_root:
        return "merkle_root does not match the entries it covers"
    if trusted_key is not None and checkpoint.public_key != trusted_key:
        return "signed by a key that is not the trusted one"
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(checkpoint.public_key)).verify(
            bytes.fromhex(checkpoint.signature), _signed_bytes(checkpoint)
        )
    except (InvalidSignature, ValueError):
        return "the signature does not verify"
    return ""


def load_key(seed_hex: str) -> Ed25519PrivateKey:
    """An Ed25519 key from its 32-byte seed in hex (as ``hubctl up`` writes it)."""
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex.strip()))


def new_key_seed() -> str:
    """A fresh Ed25519 seed, hex."""
    return Ed25519PrivateKey.generate().private_bytes_raw().hex()
