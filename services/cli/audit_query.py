"""``hubctl audit query`` and ``hubctl audit export``: filtered reads through the rebuildable index.

The index catches up as the read-only ``auditor``, by direct gets; a foreign message in the
log is named on stderr and left out of the index.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import msgspec

from referral_hub.audit.audit_event import to_audit_event
from referral_hub.audit.index import AuditFilter, AuditIndex
from referral_hub.cli import datadir, progress
from referral_hub.cli.audit_proofs import warn_foreign
from referral_hub.cli.commands import connect, out
from referral_hub.cli.paging_commands import parse_time
from referral_hub.contracts.audit import AuditEntry
from referral_hub.runtime.broker import permissions

INDEX_ENV = "HUB_AUDIT_INDEX"


def index_path(args: argparse.Namespace) -> Path:
    """``--index``, else ``$HUB_AUDIT_INDEX``, else the index in the data folder: a cache, never written elsewhere."""
    chosen: Path | None = args.index
    if chosen is None:
        chosen = (
            Path(os.environ[INDEX_ENV]) if os.environ.get(INDEX_ENV) else datadir.in_data_dir(datadir.AUDIT_INDEX_FILE)
        )
    chosen.parent.mkdir(parents=True, exist_ok=True)
    return chosen


def add_filters(parser: argparse.ArgumentParser) -> None:
    """The selection both commands share; ``--clinic`` (or ``HUB_CLINIC``) selects that clinic's entries."""
    parser.add_argument("--referral", default="", help="referral id")
    parser.add_argument("--patient", default="", help="patient_ref")
    parser.add_argument("--member", default="", help="member id")
    parser.add_argument("--type", default="", help="message type, for example referral.accept")
    parser.add_argument("--since", help="ISO 8601, inclusive")
    parser.add_argument("--until", help="ISO 8601, exclusive")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many (default: %(default)s)")
    parser.add_argument(
        "--index",
        type=Path,
        default=None,
        help=f"index file (default: ${INDEX_ENV}, else {datadir.AUDIT_INDEX_FILE} in the data folder)",
    )
    parser.add_argument("--rebuild", action="store_true", help="delete the index and rebuild it from the stream")


async def _selected(args: argparse.Namespace) -> tuple[list[AuditEntry], dict[str, str], int, float]:
    args.index = index_path(args)
    if args.rebuild:
        args.index.unlink(missing_ok=True)
    index = AuditIndex(args.index)
    try:
        connection = await connect(args.nats_url, user=permissions.AUDITOR)
        try:
            show = progress.wanted(as_json=getattr(args, "json", False)) and args.rebuild
            with progress.counting("rebuilding the audit index", show=show):
                added = await index.catch_up(connection.jetstream(), foreign=warn_foreign)
        finally:
            await connection.drain()
        started = time.perf_counter()
        where = AuditFilter(
            referral_id=args.referral,
            patient_ref=args.patient,
            clinic=args.clinic or "",
            member=args.member,
            message_type=args.type,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            limit=args.limit,
        )
        found = list(index.query(where))
        refused = index.refusals(e.source_message_id for e in found if e.action == "submit")
        return found, refused, added, time.perf_counter() - started
    finally:
        index.close()


def submission_outcome(entry: AuditEntry, refused: dict[str, str]) -> str:
    """The outcome column: a submission the hub later refused reads ``refused:<code>``, not ``success``.

    A submission's entry is written when the message is stored, before any service decides
    on it, so the entry itself says only that it arrived; its dead letter says how it ended.
    """
    if entry.rejection_code:
        return f"rejected:{entry.rejection_code}"
    if entry.action == "submit" and entry.source_message_id in refused:
        return f"refused:{refused[entry.source_message_id]}"
    return str(entry.outcome)


async def query(args: argparse.Namespace) -> int:
    """``hubctl audit query``: a table, or JSON Lines with ``--json``."""
    found, refused, added, seconds = await _selected(args)
    if args.json:
        for entry in found:
            out(msgspec.json.encode(entry).decode())
        return 0
    for e in found:
        outcome = submission_outcome(e, refused)
        out(
            f"{e.index:>8}  {e.occurred_at.isoformat(timespec='seconds')}  {e.action:<10} {e.message_type:<24} "
            f"{e.clinic or '-':<20} {e.member or '-':<14} {outcome}"
        )
    out(f"{len(found)} entries ({seconds * 1000:.1f} ms; {added} newly indexed)")
    return 0


async def export(args: argparse.Namespace) -> int:
    """``hubctl audit export --format fhir|jsonl``: one resource or entry per line (FHIR bulk NDJSON)."""
    found, refused, _, _ = await _selected(args)
    for entry in found:
        if args.format == "fhir":
            refusal = refused.get(entry.source_message_id, "") if entry.action == "submit" else ""
            out(json.dumps(to_audit_event(entry, refusal), separators=(",", ":")))
        else:
            out(msgspec.json.encode(entry).decode())
    return 0
