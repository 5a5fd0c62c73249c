"""Signed tree heads over the audit log, and RFC 9162 proofs against them. Pure.

A checkpoint states the Merkle tree hash of the whole log so far (RFC 9162), the chain head,
and the previous checkpoint's hash, and is signed with Ed25519. It carries the tree's
frontier (its perfect subtrees' roots), so the next one folds in only the new entries.
Verifying recomputes all of that from the entries, so an edited or dropped entry or a forged
checkpoint is named. Inclusion proofs (an entry is in the tree a checkpoint signs) and
consistency proofs (an older checkpoint's tree is a prefix of a newer one's) follow RFC 9162
sections 2.1.3 and 2.1.4 exactly, so any RFC 9162 verifier can check them.
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

from referral_hub.audit.domain import GENESIS_HASH, entry_hash
from referral_hub.contracts.audit import AuditCheckpoint, AuditConsistency, AuditEntry, AuditReceipt

_encoder: Final = msgspec.json.Encoder()
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def leaf_hash(entry_hash: str) -> bytes:
    """RFC 9162 section 2.1.1: ``SHA-256(0x00 || leaf)``; the leaf is the entry's chained hash."""
    return hashlib.sha256(LEAF_PREFIX + bytes.fromhex(entry_hash)).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 MTH over already-hashed leaves: split at the largest power of two below n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = _split(len(leaves))
    return _node(merkle_root(leaves[:split]), merkle_root(leaves[split:]))


Frontier = list[tuple[int, bytes]]
"""The roots of a tree's perfect subtrees, largest first, as (height, hash)."""


def frontier_push(frontier: Frontier, leaf: bytes) -> Frontier:
    """Append one leaf: equal-height subtrees merge, as binary addition carries."""
    merged = list(frontier)
    height, node = 0, leaf
    while merged and merged[-1][0] == height:
        _, left = merged.pop()
        height, node = height + 1, _node(left, node)
    merged.append((height, node))
    return merged


def frontier_root(frontier: Frontier) -> bytes:
    """MTH of the whole tree, from its perfect subtrees, folded from the right."""
    if not frontier:
        return hashlib.sha256(b"").digest()
    root = frontier[-1][1]
    for _, subtree in reversed(frontier[:-1]):
        root = _node(subtree, root)
    return root


def encode_frontier(frontier: Frontier) -> tuple[str, ...]:
    """As stored in a checkpoint."""
    return tuple(f"{height}:{node.hex()}" for height, node in frontier)


def decode_frontier(encoded: Sequence[str]) -> Frontier:
    """As read from a checkpoint."""
    return [(int(height), bytes.fromhex(node)) for height, node in (item.split(":", 1) for item in encoded)]


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n]) for the leaf at 0-based ``index``."""
    if len(leaves) <= 1:
        return []
    split = _split(len(leaves))
    if index < split:
        return [*inclusion_proof(index, leaves[:split]), merkle_root(leaves[split:])]
    return [*inclusion_proof(index - split, leaves[split:]), merkle_root(leaves[:split])]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: whether ``leaf`` sits at ``index`` of the tree of ``size`` whose root is ``root``."""
    if index >= size:
        return False
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = _node(sibling, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = _node(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and result == root


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 2.1.4.1 PROOF(m, D[n]): the tree of ``old_size`` leaves is a prefix of ``leaves``."""

    def subproof(m: int, tree: Sequence[bytes], *, whole: bool) -> list[bytes]:
        if m == len(tree):
            return [] if whole else [merkle_root(tree)]
        split = _split(len(tree))
        if m <= split:
            return [*subproof(m, tree[:split], whole=whole), merkle_root(tree[split:])]
        return [*subproof(m - split, tree[split:], whole=False), merkle_root(tree[:split])]

    if old_size <= 0 or old_size > len(leaves):
        return []
    return subproof(old_size, leaves, whole=True)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: whether the tree of ``old_size`` (``old_root``) is a prefix of the one of ``new_root``."""
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size <= 0 or old_size > new_size or not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    first = second = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first, second = _node(node, first), _node(node, second)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            second = _node(second, node)
        fn, sn = fn >> 1, sn >> 1
    return first == old_root and second == new_root and sn == 0


def checkpoint_hash(checkpoint: AuditCheckpoint) -> str:
    """What the next checkpoint links to: SHA-256 of this one, signature included."""
    return hashlib.sha256(_encoder.encode(checkpoint)).hexdigest()


def _signed_bytes(checkpoint: AuditCheckpoint) -> bytes:
    return _encoder.encode(msgspec.structs.replace(checkpoint, signature=""))


def extend(previous: AuditCheckpoint | None, entries: Sequence[AuditEntry]) -> Frontier:
    """The log's frontier after folding ``entries`` into the previous checkpoint's."""
    frontier = decode_frontier(previous.frontier) if previous else []
    for entry in entries:
        frontier = frontier_push(frontier, leaf_hash(entry.entry_hash))
    return frontier


def make_checkpoint(
    entries: Sequence[AuditEntry],
    previous: AuditCheckpoint | None,
    key: Ed25519PrivateKey,
    at: datetime,
) -> AuditCheckpoint:
    """Sign the log after ``entries`` (which follow ``previous`` without a gap)."""
    frontier = extend(previous, entries)
    unsigned = AuditCheckpoint(
        checkpoint_index=(previous.checkpoint_index + 1) if previous else 1,
        from_index=entries[0].index,
        to_index=entries[-1].index,
        tree_size=entries[-1].index,
        merkle_root=frontier_root(frontier).hex(),
        frontier=encode_frontier(frontier),
        chain_head=entries[-1].entry_hash,
        prev_checkpoint_hash=checkpoint_hash(previous) if previous else GENESIS_HASH,
        created_at=at,
        public_key=key.public_key().public_bytes_raw().hex(),
    )
    return msgspec.structs.replace(unsigned, signature=key.sign(_signed_bytes(unsigned)).hex())


def signature_fault(checkpoint: AuditCheckpoint, trusted_key: str | None = None) -> str:
    """Empty if the checkpoint is signed by its key (and that is ``trusted_key``, when given)."""
    if trusted_key is not None and checkpoint.public_key != trusted_key:
        return "signed by a key that is not the trusted one"
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(checkpoint.public_key)).verify(
            bytes.fromhex(checkpoint.signature), _signed_bytes(checkpoint)
        )
    except (InvalidSignature, ValueError):
        return "the signature does not verify"
    return ""


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
    """Recompute one checkpoint from the entries it covers and the (verified) previous checkpoint."""
    reason = _placement_fault(checkpoint, entries, previous) or _content_fault(
        checkpoint, entries, previous, trusted_key
    )
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


def _content_fault(
    checkpoint: AuditCheckpoint,
    entries: Sequence[AuditEntry],
    previous: AuditCheckpoint | None,
    trusted_key: str | None,
) -> str:
    if entries[-1].entry_hash != checkpoint.chain_head:
        return "chain_head does not match the entry it names"
    frontier = extend(previous, entries)
    if frontier_root(frontier).hex() != checkpoint.merkle_root:
        return "merkle_root does not match the entries it covers"
    if checkpoint.tree_size != checkpoint.to_index or encode_frontier(frontier) != checkpoint.frontier:
        return "tree_size or frontier does not match the log"
    return signature_fault(checkpoint, trusted_key)


def make_receipt(entries: Sequence[AuditEntry], index: int, checkpoint: AuditCheckpoint) -> AuditReceipt:
    """The receipt of entry ``index`` against ``checkpoint``; ``entries`` is the log up to its tree size."""
    leaves = [leaf_hash(e.entry_hash) for e in entries[: checkpoint.tree_size]]
    return AuditReceipt(
        entry=entries[index - 1],
        leaf_index=index - 1,
        inclusion_proof=tuple(node.hex() for node in inclusion_proof(index - 1, leaves)),
        checkpoint=checkpoint,
    )


def receipt_fault(receipt: AuditReceipt, trusted_key: str | None = None) -> str:
    """Empty if the receipt proves its entry is in the signed log; else why it does not."""
    entry, checkpoint = receipt.entry, receipt.checkpoint
    if entry_hash(entry) != entry.entry_hash:
        return "the entry's content does not match its hash"
    if entry.index != receipt.leaf_index + 1:
        return "the entry's index does not match the proof's leaf"
    proven = verify_inclusion(
        receipt.leaf_index,
        checkpoint.tree_size,
        leaf_hash(entry.entry_hash),
        [bytes.fromhex(node) for node in receipt.inclusion_proof],
        bytes.fromhex(checkpoint.merkle_root),
    )
    if not proven:
        return "the inclusion proof does not lead to the checkpoint's root"
    return signature_fault(checkpoint, trusted_key)


def make_consistency(entries: Sequence[AuditEntry], old: AuditCheckpoint, new: AuditCheckpoint) -> AuditConsistency:
    """The consistency proof from ``old`` to ``new``; ``entries`` is the log up to ``new``'s tree size."""
    leaves = [leaf_hash(e.entry_hash) for e in entries[: new.tree_size]]
    proof = consistency_proof(old.tree_size, leaves)
    return AuditConsistency(old=old, new=new, proof=tuple(node.hex() for node in proof))


def consistency_fault(consistency: AuditConsistency, trusted_key: str | None = None) -> str:
    """Empty if the newer signed log extends the older one; else why not."""
    old, new = consistency.old, consistency.new
    for checkpoint in (old, new):
        problem = signature_fault(checkpoint, trusted_key)
        if problem:
            return f"checkpoint {checkpoint.checkpoint_index}: {problem}"
    consistent = verify_consistency(
        old.tree_size,
        new.tree_size,
        bytes.fromhex(old.merkle_root),
        bytes.fromhex(new.merkle_root),
        [bytes.fromhex(node) for node in consistency.proof],
    )
    return "" if consistent else "the log was not only appended to between the two checkpoints"


class CheckpointWalk:
    """Verifies checkpoints while the log streams past, holding only the current one's entries."""

    def __init__(self) -> None:
        """No checkpoint verified yet."""
        self.verified = 0
        self._previous: AuditCheckpoint | None = None
        self._pending: list[AuditEntry] = []

    def add(self, entry: AuditEntry, checkpoints: Sequence[AuditCheckpoint]) -> CheckpointFault | None:
        """Feed the next entry; verifies the checkpoint it completes, if any."""
        if self.verified >= len(checkpoints):
            return None
        self._pending.append(entry)
        current = checkpoints[self.verified]
        if entry.index < current.to_index:
            return None
        fault = verify_checkpoint(current, self._pending, self._previous)
        self._previous, self._pending = current, []
        self.verified += 1
        return fault


def load_key(seed_hex: str) -> Ed25519PrivateKey:
    """An Ed25519 key from its 32-byte seed in hex (as ``hubctl up`` writes it)."""
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex.strip()))


def new_key_seed() -> str:
    """A fresh Ed25519 seed, hex."""
    return Ed25519PrivateKey.generate().private_bytes_raw().hex()
