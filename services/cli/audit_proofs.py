"""``hubctl audit prove``, ``check-proof`` and ``consistency``: evidence a clinic can keep and check.

``prove`` and ``consistency`` read the log from NATS (as the read-only ``auditor``, by
direct gets) and print JSON; ``check-proof`` needs nothing but the file, so a clinic (or its
lawyer) can check a receipt years later, offline. A foreign message in the log (one the
audit service did not write) is named on stderr and left out; the evidence stands without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from referral_hub.audit.adapters import ForeignMessage, read_chain, read_checkpoints
from referral_hub.audit.checkpoints import consistency_fault, make_consistency, make_receipt, receipt_fault
from referral_hub.cli.commands import UsageError, connect, out
from referral_hub.contracts.audit import AuditCheckpoint, AuditConsistency, AuditEntry, AuditReceipt
from referral_hub.runtime import natsauth

Evidence = AuditReceipt | AuditConsistency


def warn_foreign(message: ForeignMessage) -> None:
    """Name a foreign message on stderr: the command goes on without it."""
    print(  # noqa: T201 - the CLI's output
        f"hubctl: warning: foreign message in the audit log (not written by the audit service), left out: {message}",
        file=sys.stderr,
    )


async def _log(nats_url: str, upto: int | None = None) -> tuple[list[AuditEntry], list[AuditCheckpoint]]:
    connection = await connect(nats_url, user=natsauth.AUDITOR)
    try:
        js = connection.jetstream()
        checkpoints = await read_checkpoints(js, foreign=warn_foreign)
        size = upto if upto is not None else (checkpoints[-1].tree_size if checkpoints else 0)
        entries = [entry async for entry in read_chain(js, count=size, foreign=warn_foreign)] if size else []
    finally:
        await connection.drain()
    return entries, checkpoints


def _checkpoint(checkpoints: list[AuditCheckpoint], number: int) -> AuditCheckpoint:
    found = next((c for c in checkpoints if c.checkpoint_index == number), None)
    if found is None:
        msg = f"no checkpoint {number}; there are {len(checkpoints)}"
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
    """``hubctl audit prove INDEX [--checkpoint N] [--out FILE]``: a receipt for one entry."""
    entries, checkpoints = await _log(args.nats_url)
    covering = [c for c in checkpoints if c.tree_size >= args.index]
    if not covering:
        msg = f"no signed checkpoint covers entry {args.index} yet; try again after the next one"
        raise UsageError(msg)
    checkpoint = _checkpoint(checkpoints, args.checkpoint) if args.checkpoint else covering[0]
    if checkpoint.tree_size < args.index:
        msg = f"checkpoint {checkpoint.checkpoint_index} covers entries 1..{checkpoint.tree_size} only"
        raise UsageError(msg)
    _emit(make_receipt(entries, args.index, checkpoint), args.out)
    return 0


async def consistency(args: argparse.Namespace) -> int:
    """``hubctl audit consistency OLD NEW [--out FILE]``: the log only grew between two checkpoints."""
    entries, checkpoints = await _log(args.nats_url)
    old, new = _checkpoint(checkpoints, args.old), _checkpoint(checkpoints, args.new)
    if old.tree_size > new.tree_size:
        msg = "OLD must not be newer than NEW"
        raise UsageError(msg)
    evidence = make_consistency(entries, old, new)
    problem = consistency_fault(evidence)
    if problem:
        msg = f"checkpoints {args.old} and {args.new} are NOT consistent: {problem}"
        raise UsageError(msg)
    _emit(evidence, args.out)
    return 0


def check_proof(args: argparse.Namespace) -> int:
    """``hubctl audit check-proof FILE [--trusted-key HEX]``: offline; exit 0 only if it proves what it says."""
    try:
        evidence = msgspec.json.decode(args.file.read_bytes(), type=Evidence)
    except (OSError, msgspec.DecodeError) as exc:
        msg = f"cannot read {args.file}: {exc}"
        raise UsageError(msg) from exc
    if isinstance(evidence, AuditReceipt):
        problem = receipt_fault(evidence, args.trusted_key)
        entry, checkpoint = evidence.entry, evidence.checkpoint
        claim = (
            f"entry {entry.index} ({entry.message_type}, {entry.clinic or 'hub'}) is in the log signed by "
            f"checkpoint {checkpoint.checkpoint_index} (tree size {checkpoint.tree_size})"
        )
    else:
        problem = consistency_fault(evidence, args.trusted_key)
        claim = (
            f"the log of checkpoint {evidence.old.checkpoint_index} (size {evidence.old.tree_size}) is a prefix of "
            f"checkpoint {evidence.new.checkpoint_index} (size {evidence.new.tree_size})"
        )
    if problem:
        msg = f"proof REJECTED: {problem}"
        raise UsageError(msg)
    out(f"proof OK: {claim}")
    return 0
