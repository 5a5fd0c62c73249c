"""``hubctl audit verify [--witness FILE]``: the whole audit log, its signed checkpoints, and what clinics hold.

1. The pinned verifier key (``cli.audit_keys``): without one, nothing is read (fail closed).
2. Every checkpoint's signatures, at once (there are few): each signed by its own key, the
   key changing only on a checkpoint signed by both, the pinned key among them
   (``audit.checkpoints.KeyChain``). A checkpoint signed by any other key is REFUSED.
3. The log, streamed once: each entry's hash and link, and each checkpoint recomputed from
   the entries it covers. Only the entries of the checkpoint in progress are held, so memory
   does not grow with the log (with ``--witness``, each entry's 32-byte leaf hash is kept).
4. With ``--witness FILE``: every checkpoint a clinic kept (its inbox's
   ``audit.checkpoint.witnessed`` messages, or their notes) must still be extended by the
   log (``audit.witness``). This is what catches someone who holds the disk *and* the signing
   key: they can rebuild and re-sign a history that passes 1 to 3, but not one that extends
   a checkpoint a clinic already holds.

Entries after the newest checkpoint are not signed yet; the summary says how many.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from referral_hub.audit.adapters import ForeignMessage, ForeignMessagesError, read_chain, read_checkpoints
from referral_hub.audit.checkpoints import CheckpointWalk, leaf_hash
from referral_hub.audit.domain import ChainVerifier
from referral_hub.audit.note import NoteError, VerifierKey
from referral_hub.audit.witness import Held, read_held, witness_faults
from referral_hub.cli import progress
from referral_hub.cli.audit_keys import pinned_key
from referral_hub.cli.commands import UsageError, connect, out
from referral_hub.errors import HubError
from referral_hub.runtime.broker import permissions

VERIFY_BATCH = 10_000
"""Messages per direct get while verifying."""


def warn(line: str) -> None:
    """A warning on stderr: the verification goes on."""
    print(f"hubctl: warning: {line}", file=sys.stderr)  # noqa: T201 - the CLI's output


def _held(path: Path | None) -> list[Held]:
    if path is None:
        return []
    try:
        held = read_held(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        msg = f"cannot read the witness file {path}: {exc.strerror}"
        raise UsageError(msg) from exc
    except NoteError as exc:
        raise UsageError(str(exc)) from exc
    if not held:
        msg = f"the witness file {path} holds no checkpoint"
        raise UsageError(msg)
    return held


async def verify(args: argparse.Namespace) -> int:
    """Exit 0 only if the chain, every checkpoint (signed by the pinned key) and every held checkpoint verify."""
    pinned = pinned_key(args)
    held = _held(getattr(args, "witness", None))
    started = time.perf_counter()
    foreign: list[ForeignMessage] = []
    leaves: list[bytes] = []
    with progress.counting("verifying the audit log", show=progress.wanted()) as tick:
        chain, checked = await _walk(args.nats_url, pinned, foreign, leaves if held else None, tick)
    witnessed = _check_witnesses(held, leaves, checked, pinned)
    if foreign:
        kind = "audit entries or checkpoints"
        raise ForeignMessagesError(kind, foreign)
    out(_summary(chain.count, checked, witnessed, time.perf_counter() - started))
    return 0


async def _walk(
    nats_url: str,
    pinned: VerifierKey,
    foreign: list[ForeignMessage],
    leaves: list[bytes] | None,
    tick: progress.Tick,
) -> tuple[ChainVerifier, CheckpointWalk]:
    """Read the checkpoints and stream the log once, raising at the first thing that does not verify."""
    connection = await connect(nats_url, user=permissions.AUDITOR)
    chain = ChainVerifier()
    try:
        checked = CheckpointWalk(await read_checkpoints(connection.jetstream(), foreign=foreign.append), pinned)
        if checked.key_fault is not None:
            refused = checked.key_fault
            msg = f"audit checkpoint {refused.checkpoint_index} REFUSED: {refused.reason}"
            raise HubError(msg)
        async for entry in read_chain(connection.jetstream(), batch=VERIFY_BATCH, foreign=foreign.append):
            broken = chain.add(entry)
            if broken is not None:
                before = f"({chain.count} entries verified before it)"
                msg = f"audit chain BROKEN at entry {broken.index}: {broken.reason} {before}"
                raise HubError(msg)
            problem = checked.add(entry)
            if problem is not None:
                msg = f"audit checkpoint {problem.checkpoint_index} BROKEN: {problem.reason}"
                raise HubError(msg)
            if leaves is not None:
                leaves.append(leaf_hash(entry.entry_hash))
            tick(1)
    finally:
        await connection.drain()
    if checked.verified < len(checked.checkpoints):
        missing = checked.checkpoints[checked.verified]
        msg = f"audit checkpoint {missing.checkpoint_index} BROKEN: it covers entries the log does not hold"
        raise HubError(msg)
    return chain, checked


def _check_witnesses(held: list[Held], leaves: list[bytes], checked: CheckpointWalk, pinned: VerifierKey) -> int:
    """How many held checkpoints the log extends; raises if it fails to extend any one the hub signed."""
    if not held:
        return 0
    trusted = [*checked.keys, *([] if pinned in checked.keys else [pinned])]
    found = witness_faults(held, leaves, checked.checkpoints, trusted)
    unsigned = [fault for fault in found if fault.unsigned]
    rewritten = [fault for fault in found if not fault.unsigned]
    for fault in unsigned:
        warn(f"passed over, not evidence: {fault}")
    if rewritten:
        listed = "; ".join(str(fault) for fault in rewritten)
        msg = f"audit log REWRITTEN: {len(rewritten)} of {len(held)} checkpoints a clinic holds do not hold: {listed}"
        raise HubError(msg)
    if len(unsigned) == len(held):
        msg = "none of the checkpoints in the witness file is signed by the hub's pinned key (or a key it rotated to)"
        raise UsageError(msg)
    return len(held) - len(unsigned)


def _summary(count: int, checked: CheckpointWalk, held: int, elapsed: float) -> str:
    signed_upto = checked.checkpoints[-1].tree_size if checked.checkpoints else 0
    keys = " then ".join(key.label for key in checked.keys)
    signed = f"{checked.verified} signed checkpoints verified" + (f" (signed by {keys})" if keys else "")
    unsigned = count - signed_upto
    tail = ""
    if unsigned and signed_upto:
        tail = f"; the newest {unsigned} entries are not signed yet"
    elif unsigned:
        tail = "; no entry is signed yet"
    witnessed = f"; {held} checkpoints held by a clinic are extended by the log" if held else ""
    return f"audit chain OK: {count} entries verified; {signed}{tail}{witnessed}; {elapsed:.3f}s"
