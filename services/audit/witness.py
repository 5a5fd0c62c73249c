"""Checkpoints a clinic kept, checked against the log as it is now. Pure.

A signed checkpoint proves what the log held when it was signed. Whoever has the hub's disk
and its signing key can rebuild a different history and sign that too, and every check the
hub can run on its own store then passes: the entries chain, each checkpoint matches its
entries, each is signed by the pinned key. What they cannot change is a checkpoint someone
else already holds. Every signed checkpoint is therefore also given to every clinic
(:class:`~referral_hub.contracts.audit.CheckpointWitnessed` in its inbox), and
:func:`witness_faults` checks that the log still extends each one a clinic kept, by RFC 9162
consistency proofs between it and the log's own signed checkpoints: a rewritten, truncated
or forked history fails, whoever signed it.

A held checkpoint counts only if a trusted key signed it (the pinned key, or a key the log's
key chain rotated through from it): a clinic's file cannot vouch for a tree the hub never
signed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from referral_hub.audit.checkpoints import consistency_proof, merkle_root, verify_consistency
from referral_hub.audit.note import (
    SIGNATURE_PREFIX,
    CheckpointBody,
    NoteError,
    VerifierKey,
    open_note,
    parse_checkpoint,
)
from referral_hub.contracts.audit import AuditCheckpoint

_JSON_START: Final = "{"


class WitnessFileError(NoteError):
    """A file of held checkpoints that cannot be read."""


@dataclass(frozen=True)
class Held:
    """One checkpoint a clinic kept: where it was found (for errors), and its signed note."""

    where: str
    note: str


def read_held(text: str, name: str = "the witness file") -> list[Held]:
    """The checkpoints in a witness file: signed notes one after another, or JSON lines.

    As notes: each is its text, a blank line and its signature lines, notes separated by
    blank lines (a checkpoint's text has no blank line, so the file reads unambiguously). As
    JSON lines: objects with a ``note`` (a checkpoint from the audit log, a
    ``CheckpointWitnessed`` message) or a ``message`` holding one, as ``hubctl inbox --json``
    prints a clinic's inbox; lines without one (the inbox's other messages) are passed over.
    """
    if text.lstrip().startswith(_JSON_START):
        return _read_json_lines(text, name)
    return _read_notes(text, name)


def _note_of(document: object) -> str:
    if not isinstance(document, dict):
        return ""
    note = document.get("note")
    if isinstance(note, str):
        return note
    return _note_of(document.get("message"))


def _read_json_lines(text: str, name: str) -> list[Held]:
    held = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            msg = f"{name} line {number} is not JSON: {exc}"
            raise WitnessFileError(msg) from exc
        note = _note_of(document)
        if note:
            held.append(Held(f"{name} line {number}", note))
    return held


def _read_notes(text: str, name: str) -> list[Held]:
    held: list[Held] = []
    lines = text.splitlines()
    at = 0
    while at < len(lines):
        if not lines[at].strip():
            at += 1
            continue
        start = at
        while at < len(lines) and lines[at]:
            at += 1
        body_end, at = at, at + 1
        while at < len(lines) and lines[at].startswith(SIGNATURE_PREFIX):
            at += 1
        if at == body_end + 1:
            msg = f"{name} line {start + 1}: a checkpoint without signature lines after its blank line"
            raise WitnessFileError(msg)
        note = "\n".join(lines[start:body_end]) + "\n\n" + "\n".join(lines[body_end + 1 : at]) + "\n"
        held.append(Held(f"{name} line {start + 1}", note))
    return held


@dataclass(frozen=True)
class WitnessFault:
    """A held checkpoint the log does not bear out, and why; or (``unsigned``) one that is no evidence at all."""

    held: Held
    reason: str
    unsigned: bool = False
    """Not signed by a trusted key: it proves nothing either way, so it is named and passed over
    (the audit service's NATS key alone could put such a message in an inbox, and must not be
    able to raise a false alarm with it)."""

    def __str__(self) -> str:
        """Where the held checkpoint was and what is wrong."""
        return f"{self.held.where}: {self.reason}"


def _opened(held: Held, trusted: Sequence[VerifierKey]) -> CheckpointBody:
    """The held checkpoint's body, if a trusted key signed it; raises :class:`NoteError` otherwise."""
    note, _ = open_note(held.note, trusted)
    body = parse_checkpoint(note.text)
    origins = {key.name for key in trusted}
    if body.origin not in origins:
        msg = f"a checkpoint of {body.origin!r}, not of this log ({', '.join(sorted(origins))})"
        raise NoteError(msg)
    return body


def witness_fault(
    held: Held, leaves: Sequence[bytes], checkpoints: Sequence[AuditCheckpoint], trusted: Sequence[VerifierKey]
) -> WitnessFault | None:
    """Whether the log (its leaf hashes, its verified checkpoints) still extends one held checkpoint.

    The held tree of size ``n`` must be a prefix of the log: an RFC 9162 consistency proof,
    made from the log's leaves, from it to the log's first signed checkpoint at least as
    large (or, from the log's newest signed checkpoint to it, when the clinic holds one newer
    than any the log still has) must verify against both roots. With no signed checkpoint
    left in the log, the log's own first ``n`` leaves must hash to the held root.
    """
    try:
        body = _opened(held, trusted)
    except NoteError as exc:
        return WitnessFault(held, f"not a checkpoint signed by this hub's key: {exc}", unsigned=True)
    size, root = body.tree_size, body.root_hash
    if size > len(leaves):
        return WitnessFault(
            held,
            f"the hub signed a log of {size} entries, but the log now holds {len(leaves)}: "
            "entries were removed or the log was rebuilt",
        )
    if size == 0:
        return None if root == merkle_root([]) else WitnessFault(held, "an empty tree with a non-empty root")
    covering = next((c for c in checkpoints if c.tree_size >= size), None)
    newest = checkpoints[-1] if checkpoints else None
    if covering is not None:
        proof = consistency_proof(size, leaves[: covering.tree_size])
        consistent = verify_consistency(size, covering.tree_size, root, bytes.fromhex(covering.merkle_root), proof)
        against = f"the log's checkpoint {covering.checkpoint_index} (size {covering.tree_size})"
    elif newest is not None:
        proof = consistency_proof(newest.tree_size, leaves[:size])
        consistent = verify_consistency(newest.tree_size, size, bytes.fromhex(newest.merkle_root), root, proof)
        against = f"the log's entries 1..{size} beyond its newest checkpoint {newest.checkpoint_index}"
    else:
        consistent = merkle_root(leaves[:size]) == root
        against = f"the log's entries 1..{size} (the log holds no signed checkpoint)"
    if consistent:
        return None
    return WitnessFault(
        held,
        f"the hub signed a log of {size} entries that {against} does not extend: history was rewritten",
    )


def witness_faults(
    held: Sequence[Held],
    leaves: Sequence[bytes],
    checkpoints: Sequence[AuditCheckpoint],
    trusted: Sequence[VerifierKey],
) -> list[WitnessFault]:
    """Every held checkpoint the log does not bear out, or that is no evidence (:func:`witness_fault`).

    Empty if the log extends them all. ``leaves`` are the RFC 9162 leaf hashes of the whole
    log (its entries verified as a chain), ``checkpoints`` its checkpoints (verified against
    those entries and the pinned key), ``trusted`` the keys of its key chain.
    """
    faults = (witness_fault(item, leaves, checkpoints, trusted) for item in held)
    return [fault for fault in faults if fault is not None]
