"""The audit entry: one per message that crossed the hub, hash-chained."""

from __future__ import annotations

import enum

import msgspec

from referral_hub.contracts.base import ClinicId, Message, UtcDatetime


class AuditOutcome(enum.StrEnum):
    """Whether the recorded message was a success or a refusal."""

    SUCCESS = "success"
    REJECTED = "rejected"


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="audit.entry"):
    """Who did what, to which entities, when, with what outcome.

    ``index`` is the entry's position in the chain and equals its sequence in the audit
    stream; ``entry_hash`` is SHA-256 over ``prev_hash`` and the entry's other fields, so
    any edit to a stored entry breaks every hash after it. Entity ids are kept as strings
    because a rejected message may carry ids that are not valid UUIDs.
    """

    index: int
    recorded_at: UtcDatetime
    occurred_at: UtcDatetime
    service: str
    action: str
    message_type: str
    subject: str
    clinic: str = ""
    member: str = ""
    referral_id: str = ""
    patient_ref: str = ""
    alert_id: str = ""
    outcome: AuditOutcome = AuditOutcome.SUCCESS
    rejection_code: str = ""
    source_message_id: str
    source_stream: str
    source_sequence: int
    correlation_id: str = ""
    payload_sha256: str
    prev_hash: str
    entry_hash: str = ""


class AuditCheckpoint(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="audit.checkpoint"):
    """A signed tree head of the audit log, published every N entries or T seconds.

    ``merkle_root`` is the RFC 9162 Merkle tree hash over the whole log, entries 1 to
    ``to_index`` (``tree_size``), each leaf being an entry's ``entry_hash``. The checkpoint
    covers the new entries ``from_index`` to ``to_index``; ``frontier`` holds the roots of
    the log's perfect subtrees (``height:hex``), so the next checkpoint folds in only its
    own entries. ``chain_head`` is the hash of entry ``to_index``; ``prev_checkpoint_hash``
    links checkpoints into their own chain. ``signature`` is Ed25519 over the canonical JSON
    with ``signature`` empty and without ``note``, by ``public_key``. A third party holding
    two checkpoints can ask for an RFC 9162 consistency proof that the log only grew between
    them, and a clinic holding one can check an inclusion proof of its entry against it,
    offline.

    ``note`` is the same tree head as a C2SP tlog checkpoint (c2sp.org/tlog-checkpoint): a
    signed note whose text is the log's origin, ``tree_size`` and the base64 ``merkle_root``,
    signed by ``public_key`` under the origin's name (and, on a key rotation, by the old key
    too), so any transparency-log tool can read and check it. A checkpoint is trusted only if
    a key pinned by the verifier signed it, never because of the key it names. Empty on
    checkpoints written before notes.
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
    note: str = ""


class AuditReceipt(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="audit.receipt"):
    """Evidence a clinic can keep: its entry, an RFC 9162 inclusion proof, and the signed checkpoint.

    Checkable offline (``hubctl audit check-proof``): the entry's hash is recomputed from its
    content, the proof leads from it to the checkpoint's root, and the checkpoint's signature
    verifies.
    """

    entry: AuditEntry
    leaf_index: int
    inclusion_proof: tuple[str, ...]
    checkpoint: AuditCheckpoint


class AuditConsistency(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="audit.consistency"):
    """An RFC 9162 consistency proof that the log signed by ``old`` is a prefix of the one signed by ``new``."""

    old: AuditCheckpoint
    new: AuditCheckpoint
    proof: tuple[str, ...]


class CheckpointWitnessed(Message, frozen=True, kw_only=True, tag="audit.checkpoint.witnessed"):
    """A signed checkpoint of the hub's audit log, delivered to a clinic's inbox for it to keep.

    Every signed checkpoint goes to every clinic. A clinic that keeps them can later show
    that the log was rewritten, even by someone holding the hub's disk and its signing key:
    ``hubctl audit verify --witness FILE`` (FILE: the ``note`` of each, or these messages
    as JSON lines) checks that the log still extends every checkpoint the clinic was given
    (RFC 9162 consistency proofs). ``note`` is the checkpoint as a C2SP signed note; check
    it against the hub's verifier key, pinned out of band (``HUB_AUDIT_VERIFIER_KEY``), never
    against a key the message names. ``tree_size`` and ``root_hash`` (hex) repeat what the
    note signs, for reading; the note is what counts.
    """

    clinic: ClinicId
    checkpoint_index: int
    tree_size: int
    root_hash: str
    note: str
    event_number: int = 0
