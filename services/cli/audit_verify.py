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

Entries after the newest checkpoint are not signed yet; the summary says how many. They may
span only as much of the log's time as the hub's checkpoint interval allows
(``--checkpoint-seconds``, by default ``$HUB_AUDIT_CHECKPOINT_SECONDS`` or 60, plus
:data:`SIGNING_GRACE`): a log that went on recording for longer after an unsigned entry lost
or withheld its checkpoints (a checkpoint stream recreated empty, say), and is UNSIGNED. A
log that ends before the audit stream's last sequence was truncated: TRUNCATED.

Witnesses are checked by default where a clinic keeps its witnessed checkpoints:
``$HUB_AUDIT_WITNESS_FILE``, else ``audit-witnessed.jsonl`` in the credentials directory;
``--witness FILE`` names another file, ``--no-witness`` skips them (and the summary says so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

from referral_hub.audit.adapters import ForeignMessage, ForeignMessagesError, read_chain, read_checkpoints
from referral_hub.audit.checkpoints import CheckpointWalk, leaf_hash
from referral_hub.audit.domain import ChainVerifier
from referral_hub.audit.note import NoteError, VerifierKey
from referral_hub.audit.witness import Held, read_held, witness_faults
from referral_hub.cli import progress
from referral_hub.cli.audit_keys import pinned_key
from referral_hub.cli.commands import UsageError, connect, out
from referral_hub.contracts.audit import AuditEntry
from referral_hub.errors import HubError
from referral_hub.runtime.broker import permissions
from referral_hub.runtime.jetstream import streams

VERIFY_BATCH = 10_000
"""Messages per direct get while verifying."""
CHECKPOINT_SECONDS_ENV: Final = "HUB_AUDIT_CHECKPOINT_SECONDS"
DEFAULT_CHECKPOINT_SECONDS: Final = 60.0
SIGNING_GRACE: Final = timedelta(seconds=30)
"""Beyond the interval, for a checkpoint that is due to be signed, stored and read back."""
WITNESS_FILE_ENV: Final = "HUB_AUDIT_WITNESS_FILE"
WITNESS_FILE: Final = "audit-witnessed.jsonl"
"""Where, in the credentials directory, a clinic keeps the checkpoints it witnessed."""


@dataclass(frozen=True)
class Tail:
    """What the verifier saw of the log's end: the oldest unsigned entry, the newest entry, the stream's end."""

    first_unsigned: AuditEntry | None
    newest: AuditEntry | None
    stream_last_sequence: int


def tail_fault(tail: Tail, count: int, interval: timedelta) -> str | None:
    """Why the log's end is not evidence, or ``None``.

    Truncated: the stream held messages up to a sequence the log does not reach (entry ``n`` is
    stream message ``n``). Unsigned: the log went on recording for longer than the checkpoint
    interval and its grace after an entry that no checkpoint covers. Age is measured on the
    log's own clock (its newest entry), not the verifier's: a log copied or archived and
    verified a year later is judged as it was when it stopped, and an audit service that
    stopped leaves at most one interval unsigned.
    """
    if tail.stream_last_sequence > count:
        return (
            f"audit log TRUNCATED: the audit stream reached message {tail.stream_last_sequence}, "
            f"the log ends at entry {count}"
        )
    first = tail.first_unsigned
    if first is None or tail.newest is None:
        return None
    age = tail.newest.recorded_at - first.recorded_at
    if age <= interval + SIGNING_GRACE:
        return None
    return (
        f"audit log UNSIGNED: entries {first.index} to {count} are covered by no signed checkpoint, "
        f"though the log went on for {_span(age)} after the first of them; the hub signs one every "
        f"{_span(interval)} (its checkpoints were lost or withheld)"
    )


HOUR: Final = 3600


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds} s" if seconds < HOUR else f"{seconds / HOUR:.1f} h"


def checkpoint_interval(args: argparse.Namespace) -> timedelta:
    """The hub's checkpoint interval: ``--checkpoint-seconds``, else the hub's own setting, else 60 s."""
    given = getattr(args, "checkpoint_seconds", None)
    if given is None:
        named = os.environ.get(CHECKPOINT_SECONDS_ENV, "").strip()
        try:
            given = float(named) if named else DEFAULT_CHECKPOINT_SECONDS
        except ValueError:
            msg = f"${CHECKPOINT_SECONDS_ENV} is not a number of seconds: {named!r}"
            raise UsageError(msg) from None
    if not given > 0:
        msg = "the checkpoint interval must be a positive number of seconds"
        raise UsageError(msg)
    return timedelta(seconds=given)


def witness_file(args: argparse.Namespace) -> Path | None:
    """The witness file to check: named, else the clinic's default one if it exists; ``None`` with ``--no-witness``."""
    if getattr(args, "no_witness", False):
        return None
    named: Path | None = getattr(args, "witness", None)
    if named is not None:
        return named
    from_env = os.environ.get(WITNESS_FILE_ENV, "").strip()
    if from_env:
        return Path(from_env)
    creds_dir: Path | None = getattr(args, "creds_dir", None)
    if creds_dir is not None and (creds_dir / WITNESS_FILE).is_file():
        return creds_dir / WITNESS_FILE
    return None


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
    interval = checkpoint_interval(args)
    held = _held(witness_file(args))
    started = time.perf_counter()
    foreign: list[ForeignMessage] = []
    leaves: list[bytes] = []
    with progress.counting("verifying the audit log", show=progress.wanted()) as tick:
        chain, checked, tail = await _walk(args.nats_url, pinned, foreign, leaves if held else None, tick)
    witnessed = _check_witnesses(held, leaves, checked, pinned)
    if foreign:
        kind = "audit entries or checkpoints"
        raise ForeignMessagesError(kind, foreign)
    fault = tail_fault(tail, chain.count, interval)
    if fault is not None:
        raise HubError(fault)
    skipped = "; witnesses not checked (--no-witness)" if getattr(args, "no_witness", False) else ""
    out(_summary(chain.count, checked, witnessed, time.perf_counter() - started) + skipped)
    return 0


async def _walk(
    nats_url: str,
    pinned: VerifierKey,
    foreign: list[ForeignMessage],
    leaves: list[bytes] | None,
    tick: progress.Tick,
) -> tuple[ChainVerifier, CheckpointWalk, Tail]:
    """Read the checkpoints and stream the log once, raising at the first thing that does not verify."""
    connection = await connect(nats_url, user=permissions.AUDITOR)
    chain = ChainVerifier()
    first_unsigned: AuditEntry | None = None
    newest: AuditEntry | None = None
    try:
        stream = await connection.jetstream().stream_info(streams.AUDIT)
        checked = CheckpointWalk(await read_checkpoints(connection.jetstream(), foreign=foreign.append), pinned)
        if checked.key_fault is not None:
            refused = checked.key_fault
            msg = f"audit checkpoint {refused.checkpoint_index} REFUSED: {refused.reason}"
            raise HubError(msg)
        signed_upto = checked.checkpoints[-1].tree_size if checked.checkpoints else 0
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
            if entry.index == signed_upto + 1:
                first_unsigned = entry
            newest = entry
            tick(1)
    finally:
        await connection.drain()
    if checked.verified < len(checked.checkpoints):
        missing = checked.checkpoints[checked.verified]
        msg = f"audit checkpoint {missing.checkpoint_index} BROKEN: it covers entries the log does not hold"
        raise HubError(msg)
    return chain, checked, Tail(first_unsigned, newest, stream.state.last_seq)


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
