"""``hubctl audit prove``, ``check-proof`` and ``consistency``: evidence a clinic can keep and check.

``prove`` and ``consistency`` read the log from NATS (as the read-only ``auditor``, by
direct gets) and print JSON; ``check-proof`` needs nothing but the file and the hub's
verifier key, so a clinic (or its lawyer) can check a receipt years later, offline. A
foreign message in the log (one the audit service did not write) is named on stderr and
left out; the evidence stands without it.

All three judge checkpoints by the pinned verifier key (``cli.audit_keys``) and refuse
evidence on a checkpoint it did not sign: ``prove`` and ``consistency`` also refuse a log
whose checkpoints are not a key chain from it (``audit.checkpoints.KeyChain``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from referral_hub.audit.adapters import ForeignMessage, read_chain, read_checkpoints
from referral_hub.audit.checkpoints import (
    consistency_fault,
    key_chain,
    make_consistency,
    make_receipt,
    receipt_fault,
    signature_fault,
)
from referral_hub.audit.note import NoteError, VerifierKey
from referral_hub.cli.audit_keys import HOW_TO_PIN, pinned_key
from referral_hub.cli.commands import UsageError, connect, out
from referral_hub.contracts.audit import AuditCheckpoint, AuditConsistency, AuditEntry, AuditReceipt
from referral_hub.runtime.broker import permissions

Evidence = AuditReceipt | AuditConsistency


def warn_foreign(message: ForeignMessage) -> None:
    """Name a foreign message on stderr: the command goes on without it."""
    print(  # noqa: T201 - the CLI's output
        f"hubctl: warning: foreign message in the audit log (not written by the audit service), left out: {message}",
        file=sys.stderr,
    )


async def _log(nats_url: str, upto: int | None = None) -> tuple[list[AuditEntry], list[AuditCheckpoint]]:
    connection = await connect(nats_url, user=permissions.AUDITOR)
    try:
        js = connection.jetstream()
        checkpoints = await read_checkpoints(js, foreign=warn_foreign)
        size = upto if upto is not None else (checkpoints[-1].tree_size if checkpoints else 0)
        entries = [entry async for entry in read_chain(js, count=size, foreign=warn_foreign)] if size else []
    finally:
        await connection.drain()
    return entries, checkpoints


def _trusted_log(checkpoints: list[AuditCheckpoint], pinned: VerifierKey) -> None:
    """Refuse a log whose checkpoints are not signed by the pinned key (or a key it rotated to or from)."""
    _, fault = key_chain(checkpoints, pinned)
    if fault is not None:
        msg = f"audit checkpoint {fault.checkpoint_index} REFUSED: {fault.reason}"
        raise UsageError(msg)


def _checkpoint(checkpoints: list[AuditCheckpoint], number: int, pinned: VerifierKey) -> AuditCheckpoint:
    found = next((c for c in checkpoints if c.checkpoint_index == number), None)
    if found is None:
        msg = f"no checkpoint {number}; there are {len(checkpoints)}"
        raise UsageError(msg)
    problem = signature_fault(found, pinned)
    if problem:
        msg = f"checkpoint {number} is not evidence under the pinned key: {problem}"
        raise UsageError(msg)
    return found


def _emit(evidence: Evidence, path: Path | None) -> None:
    text = msgspec.json.format(msgspec.json.encode(evidence).decode(), indent=2)
    if path is None:
        out(text)
    else:
        path.write_text(text + "\n", encoding="utf-8")
        out(f"wrote {path}")


async def prove(args: argparse.Namespace) -> int:
    """``hubctl audit prove INDEX [--checkpoint N] [--out FILE]``: a receipt for one entry.

    Against the first checkpoint covering the entry that the pinned key signed, unless
    ``--checkpoint`` names one (which the pinned key must have signed).
    """
    pinned = pinned_key(args)
    entries, checkpoints = await _log(args.nats_url)
    _trusted_log(checkpoints, pinned)
    if args.checkpoint:
        checkpoint = _checkpoint(checkpoints, args.checkpoint, pinned)
    else:
        covering = [c for c in checkpoints if c.tree_size >= args.index and not signature_fault(c, pinned)]
        if not covering:
            msg = f"no checkpoint signed by the pinned key covers entry {args.index} yet; try again after the next one"
            raise UsageError(msg)
        checkpoint = covering[0]
    if checkpoint.tree_size < args.index:
        msg = f"checkpoint {checkpoint.checkpoint_index} covers entries 1..{checkpoint.tree_size} only"
        raise UsageError(msg)
    _emit(make_receipt(entries, args.index, checkpoint), args.out)
    return 0


async def consistency(args: argparse.Namespace) -> int:
    """``hubctl audit consistency OLD NEW [--out FILE]``: the log only grew between two checkpoints."""
    pinned = pinned_key(args)
    entries, checkpoints = await _log(args.nats_url)
    _trusted_log(checkpoints, pinned)
    old, new = _checkpoint(checkpoints, args.old, pinned), _checkpoint(checkpoints, args.new, pinned)
    if old.tree_size > new.tree_size:
        msg = "OLD must not be newer than NEW"
        raise UsageError(msg)
    evidence = make_consistency(entries, old, new)
    problem = consistency_fault(evidence, pinned)
    if problem:
        msg = f"checkpoints {args.old} and {args.new} are NOT consistent: {problem}"
        raise UsageError(msg)
    _emit(evidence, args.out)
    return 0


def _check_key(args: argparse.Namespace, evidence: Evidence) -> VerifierKey:
    """The pinned key; ``--trusted-key HEX`` (a raw Ed25519 public key) is named like the evidence's log."""
    if not args.trusted_key:
        return pinned_key(args)
    checkpoint = evidence.checkpoint if isinstance(evidence, AuditReceipt) else evidence.new
    origin = checkpoint.note.split("\n", 1)[0] if checkpoint.note else "audit"
    try:
        return VerifierKey.of(origin, bytes.fromhex(args.trusted_key))
    except (ValueError, NoteError) as exc:
        msg = f"--trusted-key is not a hex Ed25519 public key; {HOW_TO_PIN}"
        raise UsageError(msg) from exc


def check_proof(args: argparse.Namespace) -> int:
    """``hubctl audit check-proof FILE [--verifier-key KEY]``: offline; exit 0 only if it proves what it says.

    Its checkpoints must be signed by the pinned key: a proof on a checkpoint the file's own
    key signed proves nothing (anyone can make one).
    """
    try:
        evidence = msgspec.json.decode(args.file.read_bytes(), type=Evidence)
    except (OSError, msgspec.DecodeError) as exc:
        msg = f"cannot read {args.file}: {exc}"
        raise UsageError(msg) from exc
    pinned = _check_key(args, evidence)
    if isinstance(evidence, AuditReceipt):
        problem = receipt_fault(evidence, pinned)
        entry, checkpoint = evidence.entry, evidence.checkpoint
        claim = (
            f"entry {entry.index} ({entry.message_type}, {entry.clinic or 'hub'}) is in the log signed by "
            f"checkpoint {checkpoint.checkpoint_index} (tree size {checkpoint.tree_size})"
        )
    else:
        problem = consistency_fault(evidence, pinned)
        claim = (
            f"the log of checkpoint {evidence.old.checkpoint_index} (size {evidence.old.tree_size}) is a prefix of "
            f"checkpoint {evidence.new.checkpoint_index} (size {evidence.new.tree_size})"
        )
    if problem:
        msg = f"proof REJECTED: {problem}"
        raise UsageError(msg)
    out(f"proof OK: {claim}")
    return 0
