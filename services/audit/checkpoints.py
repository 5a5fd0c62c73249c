"""Signed tree heads over the audit log, and RFC 9162 proofs against them. Pure.

A checkpoint states the Merkle tree hash of the whole log so far (RFC 9162), the chain head,
and the previous checkpoint's hash. It carries the tree's frontier (its perfect subtrees'
roots), so the next one folds in only the new entries. Verifying recomputes all of that from
the entries, so an edited or dropped entry is named. Inclusion proofs (an entry is in the
tree a checkpoint signs) and consistency proofs (an older checkpoint's tree is a prefix of a
newer one's) follow RFC 9162 sections 2.1.3 and 2.1.4 exactly, so any RFC 9162 verifier can
check them.

Signatures, and whom they must come from:

- Every checkpoint carries ``note``: a C2SP tlog checkpoint (origin, tree size, base64 root;
  ``audit.note``) as a signed note, which any transparency-log tool reads. Its JSON form is
  also Ed25519-signed by ``public_key`` over the fields checkpoints had before notes (so
  older readers, and checkpoints written before notes, still verify); a checkpoint without
  a note is accepted on that signature alone.
- **A key is trusted only because it is pinned** (``HUB_AUDIT_VERIFIER_KEY``, in signed-note
  verifier-key form), never because a checkpoint names it: a checkpoint names its own key,
  so anyone who can rewrite the store could otherwise sign a history of their own.
- **Rotation** is a checkpoint whose note is signed by both the old and the new key: the
  signing key may change only there (:class:`KeyChain`). After it, the old key signs nothing
  alone. The pinned key must be one of the keys the chain goes through.
- **The checkpointer never chains onto a checkpoint its own key (or, once, the key it
  rotates from) did not sign** (:func:`chain_onto`), so a forged checkpoint stops it instead
  of becoming history.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import msgspec

from referral_hub.audit.domain import GENESIS_HASH, entry_hash
from referral_hub.audit.note import (
    CheckpointBody,
    NoteError,
    SignerKey,
    VerifierKey,
    open_note,
    parse_checkpoint,
    sign_note,
    valid_name,
)
from referral_hub.contracts.audit import AuditCheckpoint, AuditConsistency, AuditEntry, AuditReceipt
from referral_hub.contracts.base import UtcDatetime

_encoder: Final = msgspec.json.Encoder()
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
DEFAULT_ORIGIN: Final = "referral-hub.local/audit"
"""The log's origin (and its key's name) when the signing key file holds a bare seed."""
ORIGIN_ENV: Final = "HUB_AUDIT_ORIGIN"
"""Names the log's origin for a bare-seed signing key; a ``PRIVATE+KEY+...`` key names its own."""
VERIFIER_KEY_FILE: Final = "audit-verifier.pub"
"""Where ``hubctl up`` writes the hub's verifier key, in its credentials directory."""
_SEED_HEX_LENGTH: Final = 64


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


class _CheckpointV1(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="audit.checkpoint"):
    """A checkpoint as it was before it carried a note: what its JSON signature and its link cover.

    Keeping these bytes exactly as they were means checkpoints written before notes still
    verify and link, and readers that do not know ``note`` still verify new ones.
    """

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


def _v1_bytes(checkpoint: AuditCheckpoint, *, signature: str) -> bytes:
    fields = {name: getattr(checkpoint, name) for name in _CheckpointV1.__struct_fields__}
    fields["signature"] = signature
    return _encoder.encode(_CheckpointV1(**fields))


def checkpoint_hash(checkpoint: AuditCheckpoint) -> str:
    """What the next checkpoint links to: SHA-256 of this one's JSON (signature included, note aside)."""
    return hashlib.sha256(_v1_bytes(checkpoint, signature=checkpoint.signature)).hexdigest()


def _signed_bytes(checkpoint: AuditCheckpoint) -> bytes:
    return _v1_bytes(checkpoint, signature="")


def extend(previous: AuditCheckpoint | None, entries: Sequence[AuditEntry]) -> Frontier:
    """The log's frontier after folding ``entries`` into the previous checkpoint's."""
    frontier = decode_frontier(previous.frontier) if previous else []
    for entry in entries:
        frontier = frontier_push(frontier, leaf_hash(entry.entry_hash))
    return frontier


def make_checkpoint(
    entries: Sequence[AuditEntry],
    previous: AuditCheckpoint | None,
    key: SignerKey,
    at: datetime,
    *,
    co_signers: Sequence[SignerKey] = (),
) -> AuditCheckpoint:
    """Sign the log after ``entries`` (which follow ``previous`` without a gap) with ``key``.

    ``co_signers`` also sign its note: the key being rotated from, on the rotation checkpoint.
    """
    if any(signer.name != key.name for signer in co_signers):
        msg = "a rotation keeps the log's origin: every signing key must have its name"
        raise NoteError(msg)
    frontier = extend(previous, entries)
    root = frontier_root(frontier)
    size = entries[-1].index
    unsigned = AuditCheckpoint(
        checkpoint_index=(previous.checkpoint_index + 1) if previous else 1,
        from_index=entries[0].index,
        to_index=entries[-1].index,
        tree_size=size,
        merkle_root=root.hex(),
        frontier=encode_frontier(frontier),
        chain_head=entries[-1].entry_hash,
        prev_checkpoint_hash=checkpoint_hash(previous) if previous else GENESIS_HASH,
        created_at=at,
        public_key=key.verifier.public_key.hex(),
        note=sign_note(CheckpointBody(key.name, size, root).text, [*co_signers, key]),
    )
    return msgspec.structs.replace(unsigned, signature=key.sign(_signed_bytes(unsigned)).hex())


class CheckpointSignatureError(NoteError):
    """A checkpoint's own signatures do not hold (before asking whether its key is trusted)."""


@dataclass(frozen=True)
class Signatures:
    """Who signed a checkpoint: its own key (``public_key``), and every key asked about whose signature holds."""

    primary: VerifierKey
    signers: tuple[VerifierKey, ...]


def checkpoint_signatures(checkpoint: AuditCheckpoint, origin: str, others: Sequence[VerifierKey] = ()) -> Signatures:
    """Check a checkpoint's signatures: by its own key, and by any of ``others`` that signed its note.

    Its JSON signature must verify under ``public_key``; its note (if any) must be a checkpoint
    of ``origin`` for exactly its tree size and root, signed by ``public_key`` under ``origin``.
    Raises :class:`CheckpointSignatureError` saying what does not hold.
    """
    try:
        primary = VerifierKey.of(origin, bytes.fromhex(checkpoint.public_key))
    except (ValueError, NoteError) as exc:
        msg = "its public_key is not an Ed25519 key"
        raise CheckpointSignatureError(msg) from exc
    if not primary.verify(_signed_bytes(checkpoint), _hex_or_empty(checkpoint.signature)):
        msg = "the signature does not verify"
        raise CheckpointSignatureError(msg)
    if not checkpoint.note:
        return Signatures(primary, (primary,))
    known = [primary, *(key for key in others if key != primary)]
    try:
        note, verified = open_note(checkpoint.note, known)
        body = parse_checkpoint(note.text)
    except NoteError as exc:
        msg = f"its signed note does not hold: {exc}"
        raise CheckpointSignatureError(msg) from exc
    if body.origin != origin:
        msg = f"it is a checkpoint of {body.origin!r}, not of {origin!r} (the pinned key's name)"
        raise CheckpointSignatureError(msg)
    if body.tree_size != checkpoint.tree_size or body.root_hash.hex() != checkpoint.merkle_root:
        msg = "its signed note states another tree size or root than the checkpoint"
        raise CheckpointSignatureError(msg)
    if primary not in verified:
        msg = f"its signed note is not signed by its own key {primary.label}"
        raise CheckpointSignatureError(msg)
    return Signatures(primary, verified)


def _hex_or_empty(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def signature_fault(checkpoint: AuditCheckpoint, trusted: VerifierKey) -> str:
    """Empty if the checkpoint is signed by ``trusted`` (the pinned key); else why not.

    Signed by it means: its note carries ``trusted``'s valid signature (as the only key, or
    beside the key it was rotated to), or, for a checkpoint from before notes, its own key
    is ``trusted``.
    """
    try:
        signatures = checkpoint_signatures(checkpoint, trusted.name, [trusted])
    except CheckpointSignatureError as exc:
        return str(exc)
    if trusted not in signatures.signers:
        return f"signed by {signatures.primary.label}, not by the pinned key {trusted.label}"
    return ""


@dataclass(frozen=True)
class CheckpointFault:
    """The first checkpoint that does not verify, and why."""

    checkpoint_index: int
    reason: str


class KeyChain:
    """Follows the log's signing key from checkpoint to checkpoint; the pinned key must be on the way.

    Each checkpoint must be signed by its own key. That key may differ from the previous
    checkpoint's only on a rotation: a checkpoint whose note the previous key signed too.
    From then on the new key signs and the old one is retired (a checkpoint it signs alone
    is refused). The keys the chain went through are trusted only if the pinned key is one
    of them: each rotation was vouched for by the keys on both sides of it.
    """

    def __init__(self, pinned: VerifierKey) -> None:
        """Nothing followed yet."""
        self.pinned = pinned
        self.keys: list[VerifierKey] = []
        """Every key that signed, in the order the chain took them."""
        self._current: VerifierKey | None = None
        self._previous_index = 0
        self._first_index = 0

    def add(self, checkpoint: AuditCheckpoint) -> CheckpointFault | None:
        """Check the next checkpoint's signatures and its place in the key chain."""
        current = self._current
        try:
            signatures = checkpoint_signatures(checkpoint, self.pinned.name, [current] if current else [])
        except CheckpointSignatureError as exc:
            return CheckpointFault(checkpoint.checkpoint_index, str(exc))
        key = signatures.primary
        if current is not None and key != current and current not in signatures.signers:
            pinned = " (the pinned key)" if current == self.pinned else ""
            return CheckpointFault(
                checkpoint.checkpoint_index,
                f"signed by {key.label}, not by {current.label}{pinned}, which signed checkpoint "
                f"{self._previous_index}: the signing key may change only on a checkpoint signed by both",
            )
        if not self.keys:
            self._first_index = checkpoint.checkpoint_index
        if key not in self.keys:
            self.keys.append(key)
        self._current, self._previous_index = key, checkpoint.checkpoint_index
        return None

    def finish(self) -> CheckpointFault | None:
        """After the last checkpoint: the chain must have gone through the pinned key."""
        if not self.keys or self.pinned in self.keys:
            return None
        signed_by = ", ".join(key.label for key in self.keys)
        return CheckpointFault(
            self._first_index,
            f"signed by {signed_by}, not by the pinned key {self.pinned.label}: no checkpoint in the log is",
        )


def key_chain(
    checkpoints: Sequence[AuditCheckpoint], pinned: VerifierKey
) -> tuple[list[VerifierKey], CheckpointFault | None]:
    """The keys that signed ``checkpoints``, and the first fault if they are not a chain from the pinned key."""
    chain = KeyChain(pinned)
    for checkpoint in checkpoints:
        fault = chain.add(checkpoint)
        if fault is not None:
            return chain.keys, fault
    return chain.keys, chain.finish()


def verify_checkpoint(
    checkpoint: AuditCheckpoint,
    entries: Sequence[AuditEntry],
    previous: AuditCheckpoint | None,
    trusted: VerifierKey,
) -> CheckpointFault | None:
    """Recompute one checkpoint from its entries and the previous checkpoint; it must be signed by ``trusted``."""
    fault = content_fault(checkpoint, entries, previous)
    if fault is not None:
        return fault
    reason = signature_fault(checkpoint, trusted)
    return CheckpointFault(checkpoint.checkpoint_index, reason) if reason else None


def content_fault(
    checkpoint: AuditCheckpoint, entries: Sequence[AuditEntry], previous: AuditCheckpoint | None
) -> CheckpointFault | None:
    """What a checkpoint states that its entries and the previous checkpoint do not bear out (signatures aside)."""
    reason = _placement_fault(checkpoint, entries, previous) or _content_fault(checkpoint, entries, previous)
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


def _content_fault(checkpoint: AuditCheckpoint, entries: Sequence[AuditEntry], previous: AuditCheckpoint | None) -> str:
    if entries[-1].entry_hash != checkpoint.chain_head:
        return "chain_head does not match the entry it names"
    frontier = extend(previous, entries)
    if frontier_root(frontier).hex() != checkpoint.merkle_root:
        return "merkle_root does not match the entries it covers"
    if checkpoint.tree_size != checkpoint.to_index or encode_frontier(frontier) != checkpoint.frontier:
        return "tree_size or frontier does not match the log"
    return ""


def make_receipt(entries: Sequence[AuditEntry], index: int, checkpoint: AuditCheckpoint) -> AuditReceipt:
    """The receipt of entry ``index`` against ``checkpoint``; ``entries`` is the log up to its tree size."""
    leaves = [leaf_hash(e.entry_hash) for e in entries[: checkpoint.tree_size]]
    return AuditReceipt(
        entry=entries[index - 1],
        leaf_index=index - 1,
        inclusion_proof=tuple(node.hex() for node in inclusion_proof(index - 1, leaves)),
        checkpoint=checkpoint,
    )


def receipt_fault(receipt: AuditReceipt, trusted: VerifierKey) -> str:
    """Empty if the receipt proves its entry is in the log ``trusted`` signed; else why it does not."""
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
    return signature_fault(checkpoint, trusted)


def make_consistency(entries: Sequence[AuditEntry], old: AuditCheckpoint, new: AuditCheckpoint) -> AuditConsistency:
    """The consistency proof from ``old`` to ``new``; ``entries`` is the log up to ``new``'s tree size."""
    leaves = [leaf_hash(e.entry_hash) for e in entries[: new.tree_size]]
    proof = consistency_proof(old.tree_size, leaves)
    return AuditConsistency(old=old, new=new, proof=tuple(node.hex() for node in proof))


def consistency_fault(consistency: AuditConsistency, trusted: VerifierKey) -> str:
    """Empty if the newer log ``trusted`` signed extends the older one it signed; else why not."""
    old, new = consistency.old, consistency.new
    for checkpoint in (old, new):
        problem = signature_fault(checkpoint, trusted)
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
    """Verifies checkpoints while the log streams past, holding only the current one's entries.

    Their signatures and keys are checked first, all at once (there are few checkpoints):
    :attr:`key_fault` is the first that is not signed by the pinned key or a key it rotated
    to or from. The walk then recomputes each checkpoint from the entries it covers.
    """

    def __init__(self, checkpoints: Sequence[AuditCheckpoint], pinned: VerifierKey) -> None:
        """Check every checkpoint's signatures against ``pinned``; no entry seen yet."""
        self.checkpoints = list(checkpoints)
        self.keys, self.key_fault = key_chain(self.checkpoints, pinned)
        self.verified = 0
        self._previous: AuditCheckpoint | None = None
        self._pending: list[AuditEntry] = []

    def add(self, entry: AuditEntry) -> CheckpointFault | None:
        """Feed the next entry; verifies the checkpoint it completes, if any."""
        if self.verified >= len(self.checkpoints):
            return None
        self._pending.append(entry)
        current = self.checkpoints[self.verified]
        if entry.index < current.to_index:
            return None
        fault = content_fault(current, self._pending, self._previous)
        self._previous, self._pending = current, []
        self.verified += 1
        return fault


@dataclass(frozen=True, repr=False)
class SigningKeys:
    """The checkpointer's key, and while a rotation is under way, the key it rotates from."""

    current: SignerKey
    previous: SignerKey | None = None

    def __repr__(self) -> str:
        """Names the keys by their public halves only."""
        previous = f", previous={self.previous!r}" if self.previous else ""
        return f"SigningKeys({self.current!r}{previous})"


def _signer(line: str, origin: str) -> SignerKey:
    if line.startswith("PRIVATE+KEY+"):
        return SignerKey.parse(line)
    if len(line) != _SEED_HEX_LENGTH:
        msg = "an audit signing key is a 64-hex-digit Ed25519 seed or a PRIVATE+KEY+<name>+<id>+<key> signer key"
        raise NoteError(msg)
    try:
        seed = bytes.fromhex(line)
    except ValueError as exc:
        msg = "an audit signing key's seed is not hex"
        raise NoteError(msg) from exc
    return SignerKey.from_seed(origin, seed)


def load_key(text: str, origin: str | None = None) -> SigningKeys:
    """The audit signing keys from their file's text (as ``hubctl up`` writes it, or by hand).

    One line: the key, either a 32-byte Ed25519 seed in hex (named ``origin``, default
    ``$HUB_AUDIT_ORIGIN`` or :data:`DEFAULT_ORIGIN`) or a signed-note signer key
    ``PRIVATE+KEY+<name>+<id>+<base64>`` (named by itself). To rotate, put the new key on the
    first line and the old one on the second: the next checkpoint is signed by both, and
    after it the new key alone signs; then delete the old line (and the old key).
    """
    name = origin or os.environ.get(ORIGIN_ENV) or DEFAULT_ORIGIN
    if not valid_name(name):
        msg = f"the audit log's origin {name!r} is not a valid key name (empty, or holds a space or '+')"
        raise NoteError(msg)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not 1 <= len(lines) <= 2:  # noqa: PLR2004 - the key, and the key it rotates from
        msg = "the audit signing key file holds one key, or the new key and then the old one while rotating"
        raise NoteError(msg)
    keys = [_signer(line, name) for line in lines]
    if len({key.name for key in keys}) > 1:
        msg = "a rotation keeps the log's origin: both signing keys must have the same name"
        raise NoteError(msg)
    return SigningKeys(keys[0], keys[1] if len(keys) > 1 else None)


def new_key_seed() -> str:
    """A fresh Ed25519 seed, hex."""
    return os.urandom(32).hex()


def verifier_key(signing_key_text: str, origin: str | None = None) -> VerifierKey:
    """The verifier key to pin for a signing key file's text: its current key's public half."""
    return load_key(signing_key_text, origin).current.verifier


def write_verifier_key(signing_key_file: Path, out: Path) -> VerifierKey:
    """Write the verifier key of ``signing_key_file`` to ``out`` (public: mode 0644), and return it.

    For ``hubctl up``: ``hubctl audit verify`` finds ``<credentials dir>/audit-verifier.pub``.
    """
    key = verifier_key(signing_key_file.read_text(encoding="utf-8"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{key}\n", encoding="utf-8")
    return key


def chain_onto(previous: AuditCheckpoint | None, keys: SigningKeys) -> tuple[SignerKey, ...] | None:
    """Who must co-sign the checkpoint after ``previous``: ``()`` (none), the old key (a rotation), or refuse.

    ``None`` means ``previous`` is not signed by the checkpointer's own key nor by the key it
    rotates from: the checkpointer must not chain onto it (a forged checkpoint, or a rotation
    this checkpointer does not know of). The first checkpoint needs no predecessor.
    """
    if previous is None:
        return ()
    mine = keys.current.verifier
    old = keys.previous.verifier if keys.previous else None
    try:
        signatures = checkpoint_signatures(previous, mine.name, [key for key in (mine, old) if key])
    except CheckpointSignatureError:
        return None
    if signatures.primary == mine:
        return ()
    if old is not None and keys.previous is not None and signatures.primary == old:
        return (keys.previous,)
    return None
