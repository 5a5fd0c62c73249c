"""``hubctl``: the one command line for clinics, operators and developers.

Every subcommand takes ``--nats-url`` (default ``$NATS_URL``, else the local hub) and
prints user errors as one line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias

import msgspec
import nats
import nats.errors

from referral_hub.cli import (
    audit_keys,
    audit_proofs,
    audit_query,
    commands,
    datadir,
    dlq,
    linkage_bench_command,
    natsconfig,
    paging_commands,
    roster,
)
from referral_hub.cli import clinic as clinic_cli
from referral_hub.cli import gateway as gateway_cli
from referral_hub.cli import portal as portal_cli
from referral_hub.cli import sealing_keys as sealing_cli
from referral_hub.cli import status as status_cli
from referral_hub.contracts.base import Modality
from referral_hub.errors import HubError
from referral_hub.runtime.broker.credentials import CREDS_DIR_ENV, DATA_DIR_ENV
from referral_hub.runtime.hosting import logs
from referral_hub.runtime.hosting.tasks import cancel_and_wait

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"
EXIT_USER_ERROR: Final = 1
EXIT_INTERRUPTED: Final = 130

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # noqa: SLF001 - argparse has no public name for it
"""argparse exposes no public name for the object ``add_subparsers`` returns."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL", DEFAULT_NATS_URL),
        help="NATS server URL (default: $NATS_URL or %(default)s)",
    )
    parser.add_argument(
        "--clinic", default=os.environ.get("HUB_CLINIC"), help="acting clinic id (default: $HUB_CLINIC)"
    )
    datadir.add_options(parser)


def stream_budget(text: str) -> tuple[str, int]:
    """``CLINIC_OUT=1073741824`` (or ``CLINIC_OUT=1GiB``, ``=512MiB``, ``=64KiB``) as (stream, bytes)."""
    name, _, size = text.partition("=")
    units = {"GIB": 1 << 30, "MIB": 1 << 20, "KIB": 1 << 10, "": 1}
    for suffix, factor in units.items():
        number = size.upper().removesuffix(suffix)
        if number != size.upper() or not suffix:
            try:
                return name, int(number) * factor
            except ValueError:
                break
    msg = f"expected STREAM=BYTES (for example CLINIC_OUT=1GiB), got {text!r}"
    raise argparse.ArgumentTypeError(msg)


def positive_rate(text: str) -> float:
    """One positive number, such as a rate a minute."""
    [rate] = rates(text) if "," not in text else [0.0]
    if rate <= 0:
        msg = f"expected one positive number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return rate


def rates(text: str) -> list[float]:
    """``50`` or ``50,100,200``: offered rates in messages per second."""
    try:
        parsed = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        parsed = []
    if not parsed or min(parsed) <= 0:
        msg = f"expected positive rates like 50 or 50,100,200, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return parsed


def build_parser() -> argparse.ArgumentParser:
    """The full ``hubctl`` argument parser."""
    parser = argparse.ArgumentParser(prog="hubctl", description="Referral Hub: care-team messaging between clinics.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_up, _add_operations, _add_clinic_commands, _add_paging, _add_audit, _add_contracts, _add_bench):
        add(sub)
    status_cli.add_command(sub, _common)
    portal_cli.add_commands(sub)
    gateway_cli.add_commands(sub)
    sealing_cli.add_commands(sub, _common)
    return parser


def _add_up(sub: Subparsers) -> None:
    up = sub.add_parser("up", help="start nats-server, provision, run all services and demo traffic")
    _common(up)
    up.add_argument("--port", type=int, default=4222, help="NATS client port (default: %(default)s)")
    up.add_argument("--monitor-port", type=int, default=8222, help="NATS monitoring port (default: %(default)s)")
    up.add_argument(
        "--gateway-port", type=int, help="the FHIR gateway's HTTP port (default: 8490 when free, else any free port)"
    )
    up.add_argument(
        "--portal-port", type=int, help="the portal's HTTP port (default: 8480 when free, else any free port)"
    )
    up.add_argument(
        "--metrics-port",
        type=int,
        default=9101,
        help="first service metrics port, one per service process (default: %(default)s)",
    )
    up.add_argument(
        "--sync",
        default="always",
        help="JetStream sync_interval: 'always' (default, fsync per ack) or a duration like 2m",
    )
    up.add_argument(
        "--encrypt-at-rest",
        action="store_true",
        help="JetStream encrypts its store (ChaCha20-Poly1305); the key is created in DATA_DIR, mode 0600",
    )
    up.add_argument("--registry", type=Path, help="clinic registry JSON (default: the bundled demo clinics)")
    up.add_argument(
        "--demo", action=argparse.BooleanOptionalAction, default=True, help="send demo referrals (default: on)"
    )
    up.add_argument(
        "--demo-rate",
        type=positive_rate,
        default=4.0,
        help="new demo referrals a minute, each moving an earlier one a step on (default: %(default)s)",
    )
    up.add_argument("--demo-interval", type=float, help="seconds between demo referrals (overrides --demo-rate)")
    up.add_argument("--duration", type=float, help="stop by itself after this many seconds (for scripts)")
    up.add_argument(
        "--cluster",
        type=int,
        default=1,
        help="run N nats-servers as one JetStream cluster on loopback, streams replicated R3 (default: single node)",
    )
    up.add_argument(
        "--cluster-port", type=int, default=6222, help="first node's route port with --cluster (default: %(default)s)"
    )
    up.add_argument(
        "--replicas", type=int, default=1, help="processes of each service, sharing its consumers (default: 1)"
    )
    up.set_defaults(run=commands.up)


def _add_operations(sub: Subparsers) -> None:
    provision = sub.add_parser("provision", help="create or upgrade streams, KV buckets and consumers (idempotent)")
    _common(provision)
    provision.add_argument(
        "--replicas", type=int, default=1, help="stream and KV replicas: 1 single node, 3 in a cluster"
    )
    provision.add_argument(
        "--max-bytes",
        type=stream_budget,
        action="append",
        default=[],
        metavar="STREAM=BYTES",
        help="cap a stream's bytes on disk (repeatable); a full stream refuses new messages, the sender is told",
    )
    provision.add_argument("--registry", type=Path, help="also load this clinic registry JSON")
    provision.add_argument(
        "--break-glass",
        action="store_true",
        help="use the break-glass keys (HUB_BREAKGLASS_DIR) to change existing streams: upgrades and budgets",
    )
    provision.add_argument("--demo-registry", action="store_true", help="also load the bundled demo clinics")
    provision.set_defaults(run=commands.provision)

    dead = sub.add_parser("dlq", help="dead letters: list them, replay them once the cause is fixed")
    dead_sub = dead.add_subparsers(dest="dlq_command", required=True, metavar="DLQ_COMMAND")
    dead_list = dead_sub.add_parser("list", help="every dead letter, oldest first")
    _common(dead_list)
    dead_list.add_argument("--code", help="only this rejection code (for example processing_failed)")
    dead_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dead_list.set_defaults(run=dlq.dlq_list)
    replay = dead_sub.add_parser("replay", help="publish dead letters' originals again (idempotent)")
    _common(replay)
    replay.add_argument("sequences", type=int, nargs="+", metavar="SEQ", help="dead-letter sequence numbers")
    replay.set_defaults(run=dlq.dlq_replay)
    _add_nats_config(sub)
    _add_run(sub)


def _add_nats_config(sub: Subparsers) -> None:
    config = sub.add_parser(
        "nats-config", help="nats-server configuration with one nkey per clinic and hub user (and TLS, cluster)"
    )
    config.add_argument("--out", type=Path, required=True, help="directory to write (seeds in it are kept)")
    config.add_argument("--registry", type=Path, help="clinic registry JSON (default: the bundled demo clinics)")
    config.add_argument("--rotate", action="append", default=[], help="issue a new seed for this clinic or hub user")
    config.add_argument(
        "--break-glass-dir",
        type=Path,
        help="where the break-glass seeds go (default: break-glass/ beside --out); keep it offline",
    )
    config.add_argument("--server-name", default="hub", help="server_name (default: %(default)s)")
    config.add_argument("--host", default="127.0.0.1", help="client listen address (default: %(default)s)")
    config.add_argument("--port", type=int, default=4222, help="client port (default: %(default)s)")
    config.add_argument("--monitor-port", type=int, default=8222, help="monitoring port, loopback only")
    config.add_argument("--store-dir", help="JetStream store (default: OUT/jetstream)")
    config.add_argument("--sync", default="always", help="JetStream sync_interval (default: %(default)s)")
    config.add_argument("--tls", action="store_true", help="require TLS; a development CA is generated")
    config.add_argument("--mtls", action="store_true", help="require client certificates too (one per user)")
    config.add_argument("--tls-cert", type=Path, help="server certificate to use instead of generating")
    config.add_argument("--tls-key", type=Path, help="its private key")
    config.add_argument("--tls-ca", type=Path, help="the CA that clients (and, with --mtls, the server) trust")
    config.add_argument(
        "--tls-name", action="append", default=[], help="a name or address in the generated server certificate"
    )
    config.add_argument("--cluster-routes", help="comma-separated nats-route:// URLs of all nodes: adds a cluster")
    config.add_argument("--cluster-name", default="hub", help="cluster name (default: %(default)s)")
    config.add_argument("--cluster-host", default="0.0.0.0", help="route listen address (default: %(default)s)")  # noqa: S104 - peers must reach it
    config.add_argument("--cluster-port", type=int, default=6222, help="route port (default: %(default)s)")
    config.set_defaults(sync_run=natsconfig.nats_config)


def _add_run(sub: Subparsers) -> None:
    run = sub.add_parser("run", help="run one service against an existing NATS")
    _common(run)
    run.add_argument("service", choices=sorted([*commands.SERVICES, "portal", "gateway"]), help="which service")
    portal_cli.add_run_options(run)
    gateway_cli.add_run_options(run)
    run.add_argument(
        "--metrics-port", type=int, default=9101, help="port for /metrics and /health (default: %(default)s)"
    )
    run.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for /metrics and /health (default: %(default)s)"
    )
    run.add_argument(
        "--log-json", action=argparse.BooleanOptionalAction, default=None, help="JSON logs (default: when not a TTY)"
    )
    for flag, default, text in (
        ("--sla-urgent-hours", 24.0, "urgent accept/decline window in hours"),
        ("--sla-routine-hours", 72.0, "routine accept/decline window in hours"),
        ("--sla-close-days", 7.0, "days for the sender to close a completed referral"),
        ("--timer-interval", 30.0, "seconds between SLA timer sweeps"),
    ):
        run.add_argument(flag, type=float, default=default, help=f"referrals: {text} (default: %(default)s)")
    run.add_argument(
        "--nats-monitor-url",
        default=os.environ.get("NATS_MONITOR_URL", ""),
        help="audit: NATS monitoring URL (http://host:8222) to export /varz and /jsz as metrics",
    )
    web = {"gateway": gateway_cli.serve, "portal": portal_cli.serve}
    run.set_defaults(sync_run=lambda args: web.get(args.service, commands.run_service)(args))


def _add_refer(sub: Subparsers) -> None:
    """``hubctl refer``: every field of a ``referral.request`` has an option."""
    refer = sub.add_parser("refer", help="send a referral from --clinic to another clinic")
    _common(refer)
    refer.add_argument("--to", required=True, help="recipient clinic id")
    refer.add_argument("--patient", required=True, help="pseudonymous patient_ref")
    refer.add_argument("--modality", required=True, choices=clinic_cli.MODALITIES, help=clinic_cli.MODALITY_HELP)
    refer.add_argument("--reason", required=True, help="clinical reason for referral")
    refer.add_argument(
        "--urgency",
        choices=["routine", "urgent"],
        default="routine",
        help="how fast the recipient must answer: routine or urgent, which has shorter deadlines (default: routine)",
    )
    refer.add_argument(
        "--actor", help=f"member id sending it (default: ${clinic_cli.ACTOR_ENV}, else the clinic's first member)"
    )
    refer.add_argument("--icd10", nargs="*", default=[], help="ICD-10 codes")
    refer.add_argument("--technique", action="append", default=[], help="a technique asked for (repeatable)")
    refer.add_argument(
        "--condition", action="append", default=[], help="a condition screening should know (repeatable)"
    )
    refer.add_argument(
        "--medication", action="append", default=[], help="a medication screening should know (repeatable)"
    )
    refer.add_argument("--note", default="", help="a note for the recipient clinic")
    refer.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for the hub's answer (default: %(default)s)"
    )
    refer.set_defaults(run=clinic_cli.refer)


def _add_clinic_commands(sub: Subparsers) -> None:
    _add_refer(sub)

    inbox = sub.add_parser("inbox", help="list a clinic's inbox")
    _common(inbox)
    inbox.add_argument("--follow", action="store_true", help="keep printing new messages")
    inbox.add_argument("--since", type=int, default=1, help="replay from this inbox event number (gap-free per clinic)")
    inbox.add_argument("--json", action="store_true", help="one JSON object per line")
    inbox.set_defaults(run=commands.inbox)

    referral = sub.add_parser("referral", help="one referral")
    referral_sub = referral.add_subparsers(dest="referral_command", required=True, metavar="REFERRAL_COMMAND")
    show = referral_sub.add_parser("show", help="current state and full history")
    _common(show)
    show.add_argument("referral_id", help="the referral id, or any unambiguous prefix of it (like 5842930d)")
    show.add_argument("--fhir", action="store_true", help="print a FHIR R4 ServiceRequest + Task bundle")
    show.set_defaults(run=commands.referral_show)
    clinic_cli.add_referral_steps(referral_sub, _common)
    clinic_cli.add_commands(sub, _common)

    listing = sub.add_parser("referrals", help="a clinic's referrals, sent and received")
    _common(listing)
    listing.add_argument("--state", default="open", help="open (default), all, or a state such as accepted")
    listing.set_defaults(run=commands.referrals_list)

    careteam = sub.add_parser("careteam", help="patients' care teams")
    careteam_sub = careteam.add_subparsers(dest="careteam_command", required=True, metavar="CARETEAM_COMMAND")
    team_show = careteam_sub.add_parser("show", help="a patient's care team")
    _common(team_show)
    team_show.add_argument("patient_ref", help="the pseudonymous patient_ref")
    team_show.set_defaults(run=commands.careteam_show)

    alerts = sub.add_parser("alerts", help="a patient's contraindication alerts and who acknowledged them")
    _common(alerts)
    alerts.add_argument("--patient", required=True, help="the pseudonymous patient_ref")
    alerts.add_argument("--all", action="store_true", help="include resolved and expired alerts")
    alerts.add_argument("--json", action="store_true", help="print JSON Lines")
    alerts.set_defaults(run=commands.alerts)

    rules = sub.add_parser("rules", help="the contraindication rule table, with sources")
    _common(rules)
    rules.add_argument("--json", action="store_true", help="print JSON")
    rules.set_defaults(sync_run=commands.rules)

    clinics = sub.add_parser("clinics", help="list the clinic registry")
    _common(clinics)
    clinics.add_argument("--json", action="store_true", help="print JSON")
    clinics.set_defaults(run=commands.clinics)


def _add_audit(sub: Subparsers) -> None:
    audit = sub.add_parser("audit", help="read and verify the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    audit_log = audit_sub.add_parser("log", help="print audit entries")
    _common(audit_log)
    audit_log.add_argument("--json", action="store_true", help="one JSON object per line")
    audit_log.set_defaults(run=commands.audit_log)
    audit_verify = audit_sub.add_parser(
        "verify", help="recompute the hash chain and every checkpoint; trust only the pinned verifier key"
    )
    _common(audit_verify)
    audit_keys.add_verifier_key_option(audit_verify)
    audit_verify.add_argument(
        "--witness",
        type=Path,
        metavar="FILE",
        help="checkpoints a clinic kept (signed notes, or JSON lines with a 'note', such as its "
        "audit.checkpoint.witnessed inbox messages): the log must still extend every one "
        "(default: $HUB_AUDIT_WITNESS_FILE, else audit-witnessed.jsonl in the credentials directory, if there)",
    )
    audit_verify.add_argument(
        "--no-witness", action="store_true", help="do not check the clinic's witnessed checkpoints, even if kept"
    )
    audit_verify.add_argument(
        "--checkpoint-seconds",
        type=float,
        metavar="SECONDS",
        help="the hub's checkpoint interval: an unsigned entry older than it (plus 30 s) fails "
        "(default: $HUB_AUDIT_CHECKPOINT_SECONDS, else 60)",
    )
    audit_verify.set_defaults(run=commands.audit_verify)
    prove = audit_sub.add_parser("prove", help="a receipt: an entry, its inclusion proof and a signed checkpoint")
    _common(prove)
    audit_keys.add_verifier_key_option(prove)
    prove.add_argument("index", type=int, help="the entry's index in the log")
    prove.add_argument(
        "--checkpoint", type=int, help="against this checkpoint (default: the first covering it the pinned key signed)"
    )
    prove.add_argument("--out", type=Path, help="write the receipt here instead of printing it")
    prove.set_defaults(run=audit_proofs.prove)
    consistency = audit_sub.add_parser("consistency", help="prove the log only grew between two checkpoints")
    _common(consistency)
    audit_keys.add_verifier_key_option(consistency)
    consistency.add_argument("old", type=int, help="the older checkpoint's number")
    consistency.add_argument("new", type=int, help="the newer checkpoint's number")
    consistency.add_argument("--out", type=Path, help="write the proof here instead of printing it")
    consistency.set_defaults(run=audit_proofs.consistency)
    check = audit_sub.add_parser("check-proof", help="check a receipt or consistency proof offline")
    _common(check)
    audit_keys.add_verifier_key_option(check)
    check.add_argument("file", type=Path, help="a file from 'audit prove' or 'audit consistency'")
    check.add_argument(
        "--trusted-key", metavar="HEX", help="instead of --verifier-key: the hub's raw Ed25519 public key (hex)"
    )
    check.set_defaults(sync_run=audit_proofs.check_proof)
    verifier = audit_sub.add_parser("verifier-key", help="print the verifier key to pin, from the signing key")
    verifier.add_argument(
        "--signing-key-file", type=Path, help="the audit signing key (default: $HUB_AUDIT_SIGNING_KEY_FILE)"
    )
    verifier.add_argument(
        "--origin", help="the log's origin, for a bare-seed key (default: $HUB_AUDIT_ORIGIN, else the built-in one)"
    )
    verifier.set_defaults(sync_run=audit_keys.show_verifier_key)
    query = audit_sub.add_parser("query", help="entries by referral, patient, clinic, member, type or time")
    _common(query)
    audit_query.add_filters(query)
    query.add_argument("--json", action="store_true", help="JSON Lines instead of a table")
    query.set_defaults(run=audit_query.query)
    export = audit_sub.add_parser("export", help="stream the selection as FHIR AuditEvent NDJSON or entry JSONL")
    _common(export)
    audit_query.add_filters(export)
    export.add_argument("--format", choices=["fhir", "jsonl"], default="fhir", help="(default: %(default)s)")
    export.set_defaults(run=audit_query.export)


def _add_contracts(sub: Subparsers) -> None:
    contracts = sub.add_parser("contracts", help="export and check the public contracts")
    contracts_sub = contracts.add_subparsers(dest="contracts_command", required=True, metavar="CONTRACTS_COMMAND")
    export = contracts_sub.add_parser("export", help="write JSON Schema and AsyncAPI documents")
    _common(export)
    export.add_argument("--out", type=Path, required=True, help="output directory")
    export.set_defaults(sync_run=commands.contracts_export)
    check = contracts_sub.add_parser("check", help="fail if the contracts break the published v1")
    _common(check)
    check.set_defaults(sync_run=commands.contracts_check)
    publish = contracts_sub.add_parser("publish", help="record additive contract changes in the published snapshot")
    _common(publish)
    publish.add_argument(
        "--snapshot", default="contracts/published_v1.json", help="snapshot file (default: %(default)s)"
    )
    publish.set_defaults(sync_run=commands.contracts_publish)


def _add_paging(sub: Subparsers) -> None:
    on_call = sub.add_parser("oncall", help="who is on call at a time; on-call overrides")
    _common(on_call)
    on_call.add_argument("--at", help="ISO 8601 time (default: now); without a zone, the clinic's local time")
    on_call.set_defaults(run=paging_commands.oncall_show)
    on_call_sub = on_call.add_subparsers(dest="oncall_command", metavar="OVERRIDE")
    override = on_call_sub.add_parser("override", help="someone covers the rotation for a while")
    _common(override)
    override.add_argument("--member", required=True, help="who covers")
    override.add_argument(
        "--from", dest="start", help="ISO 8601 start (default: now); without a zone, the clinic's local time"
    )
    override.add_argument("--until", required=True, help="ISO 8601 end; without a zone, the clinic's local time")
    override.add_argument("--reason", default="", help="why (shown to the team)")
    override.set_defaults(run=paging_commands.oncall_override)

    roster.add_commands(sub, _common)

    silence = sub.add_parser("silence", help="silences (they always expire; never for absolute pages)")
    silence_sub = silence.add_subparsers(dest="silence_command", required=True, metavar="SILENCE_COMMAND")
    silence_add = silence_sub.add_parser("add", help="silence matching pages of --clinic for a while")
    _common(silence_add)
    silence_add.add_argument("--for", dest="duration", required=True, help="how long: 90m, 2h, 1d (at most 30d)")
    silence_add.add_argument("--reason", required=True, help="why (audited)")
    silence_add.add_argument("--by", default="ops", help="who (audited)")
    silence_add.add_argument("--patient", help="only this patient_ref")
    silence_add.add_argument("--modality", choices=[m.value for m in Modality], help="only this modality")
    silence_add.add_argument(
        "--severity",
        action="append",
        choices=["relative", "local", "caution"],
        default=None,
        help="severities to silence (repeatable; default relative, local, caution)",
    )
    silence_add.set_defaults(run=paging_commands.silence_add)

    page = sub.add_parser("page", help="pages")
    page_sub = page.add_subparsers(dest="page_command", required=True, metavar="PAGE_COMMAND")
    ack = page_sub.add_parser("ack", help="acknowledge a page as a member of --clinic; stops its escalation")
    _common(ack)
    ack.add_argument("page_id", help="the page id")
    ack.add_argument("--member", required=True, help="the acknowledging member")
    ack.set_defaults(run=paging_commands.page_ack)

    pages = sub.add_parser("pages", help="open pages (or --all), newest first")
    _common(pages)
    pages.add_argument("--all", action="store_true", help="include acknowledged, resolved and suppressed pages")
    pages.add_argument("--json", action="store_true", help="print JSON Lines")
    pages.set_defaults(run=paging_commands.pages_list)


def _plot_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="also draw p50/p99 against offered load, beside raw NATS, as a PNG (needs the bench extra: matplotlib)",
    )


def _add_bench(sub: Subparsers) -> None:
    bench = sub.add_parser("bench", help="benchmarks against raw nats-py, same run")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH_COMMAND")
    referrals = bench_sub.add_parser("referrals", help="full-lifecycle rate and request-to-inbox latency")
    _common(referrals)
    referrals.add_argument("--duration", type=float, default=20.0, help="seconds of load (default: %(default)s)")
    referrals.add_argument("--json", action="store_true", help="print one JSON object")
    referrals.add_argument(
        "--sync", default="always", help="JetStream sync_interval for the run (default: %(default)s)"
    )
    referrals.set_defaults(run=commands.bench)
    load = bench_sub.add_parser(
        "load", help="mixed load from many clinics at offered rates: throughput, p50/p99 per flow, consumer lag"
    )
    _common(load)
    load.add_argument("--clinics", type=int, default=50, help="synthetic clinics (default: %(default)s)")
    load.add_argument(
        "--rate",
        type=rates,
        default=[50.0],
        help="messages offered per second; a comma-separated list runs each in turn (default: 50)",
    )
    load.add_argument("--duration", type=float, default=20.0, help="seconds of load per rate (default: %(default)s)")
    load.add_argument("--cluster", type=int, default=1, help="NATS nodes: 1, or 3 for an R3 cluster (default: 1)")
    load.add_argument("--json", action="store_true", help="print one JSON object")
    load.add_argument("--sync", default="always", help="JetStream sync_interval for the run (default: %(default)s)")
    _plot_option(load)
    load.set_defaults(run=commands.bench_load)
    pages = bench_sub.add_parser("pages", help="alert-to-page latency through the whole chain at a steady load")
    _common(pages)
    pages.add_argument(
        "--rate",
        type=rates,
        default=[25.0, 50.0, 100.0, 200.0],
        help="alerts offered per second; a comma-separated list runs each in turn (default: 25,50,100,200)",
    )
    pages.add_argument(
        "--referral-workers",
        type=int,
        default=16,
        help="referral lifecycles run beside absolute alerts at the first rate; 0: none (default: %(default)s)",
    )
    pages.add_argument("--duration", type=float, default=10.0, help="seconds of load (default: %(default)s)")
    pages.add_argument("--json", action="store_true", help="print one JSON object")
    pages.add_argument("--sync", default="always", help="JetStream sync_interval for the run (default: %(default)s)")
    _plot_option(pages)
    pages.set_defaults(run=commands.bench_pages)
    audit = bench_sub.add_parser("audit", help="append, verify and query rates beside raw nats-py")
    _common(audit)
    audit.add_argument(
        "--entries", type=int, default=100_000, help="log size for verify and query (default: %(default)s)"
    )
    audit.add_argument("--seconds", type=float, default=5.0, help="seconds per rate measurement (default: %(default)s)")
    audit.add_argument("--json", action="store_true", help="print one JSON object")
    audit.add_argument("--sync", default="always", help="JetStream sync_interval for the run (default: %(default)s)")
    audit.set_defaults(run=commands.bench_audit)
    portal_cli.add_bench(bench_sub)
    gateway_cli.add_bench(bench_sub)
    linkage_bench_command.add_bench(bench_sub)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; exits with the command's status."""
    args = build_parser().parse_args(argv)
    if args.command != "run":
        logs.configure("hubctl", level=logging.WARNING)
    datadir.settle(args)
    try:
        if getattr(args, "sync_run", None) is not None:
            status: int = args.sync_run(args)
        else:
            status = asyncio.run(interruptible(args.run(args)))
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    except BrokenPipeError:
        status = _reader_left()
    except (HubError, nats.errors.Error, OSError, TimeoutError, msgspec.ValidationError) as exc:
        print(f"hubctl: error: {_describe(exc)}", file=sys.stderr)  # noqa: T201 - the CLI's output
        status = EXIT_USER_ERROR
    sys.exit(status)


async def interruptible(work: Coroutine[Any, Any, int]) -> int:
    """Run a command so that Ctrl-C ends it, even when one cancellation is lost.

    Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives as its inner future
    completes (CPython gh-86296), and nats-py's requests and a follower's waits use it: one
    Ctrl-C could leave ``hubctl inbox --follow`` following. So the command is stopped with
    ``cancel_and_wait``, which cancels again until it ends, and exits 130 as an interrupted command does.
    A command that handles SIGINT itself (``hubctl up``) replaces this handler and is left to it.
    """
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    waiting = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await cancel_and_wait([task])
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        waiting.cancel()
    if task.cancelled():
        return EXIT_INTERRUPTED
    return task.result()


def _reader_left() -> int:
    """Whoever read stdout stopped (``hubctl inbox | head -2``): end quietly, as ``cat`` would.

    stdout is pointed at /dev/null so the interpreter's own flush at exit does not fail again.
    """
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, nats.errors.NoServersError):
        return "cannot reach NATS (is the hub running? pass --nats-url or set NATS_URL)"
    text = str(exc) or type(exc).__name__
    if "Authorization Violation" in text:
        return (
            "NATS refused these credentials (Authorization Violation): name the hub's data folder "
            f"(--data-dir or ${DATA_DIR_ENV}) or its credentials directory (--creds-dir or ${CREDS_DIR_ENV})"
        )
    return text.splitlines()[0] if text else type(exc).__name__


def dump_json(value: object) -> str:
    """JSON for the CLI's ``--json`` output (msgspec handles Structs, UUIDs and datetimes)."""
    return json.dumps(json.loads(msgspec.json.encode(value)), indent=None)
