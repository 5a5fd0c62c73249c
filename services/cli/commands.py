"""The ``hubctl`` subcommands; each returns its exit status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from referral_hub.audit.adapters import read_chain
from referral_hub.cli import plots, progress
from referral_hub.cli.asyncapi import asyncapi_document
from referral_hub.cli.servicelogs import quiet_expected_timeouts
from referral_hub.client import ClinicClient, InboxItem, silence_nats_error_log
from referral_hub.contracts.alerts import AlertAcknowledged, AlertRaised, AlertResolved
from referral_hub.contracts.compat import (
    breaking_changes,
    current_components,
    published_components,
    render,
    schema_document,
)
from referral_hub.contracts.paging import PageAcknowledged
from referral_hub.contracts.plans import CareTeamChanged, PlanUpdated
from referral_hub.contracts.referrals import (
    ReferralRequested,
    ReferralState,
    ReferralTransitioned,
)
from referral_hub.contracts.registry import Clinic, Registry
from referral_hub.contracts.rejections import Rejection
from referral_hub.contracts.screening import ScreeningDisputed, ScreeningFlagged
from referral_hub.errors import HubError
from referral_hub.referrals import alerting, fhir_task, lifecycle, wording
from referral_hub.referrals.adapters import KvStore, careteam_store, referral_store
from referral_hub.referrals.careteam import team_key
from referral_hub.referrals.domain import SlaPolicy
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.hosting import logs
from referral_hub.runtime.jetstream import topology
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import RegistryCache, load_registry_file

if TYPE_CHECKING:
    from referral_hub.runtime.hosting.service import ServiceApp

Record = TypeVar("Record", bound=msgspec.Struct)
SERVICES: Final = ("referrals", "notifications", "audit")
"""The hub's core services, in the order ``hubctl up`` starts them and numbers their metrics ports."""


REGISTRY_READ_SECONDS: Final = 10.0
"""How long a command waits for the registry from a server that answered: a busy hub is slow, not absent."""
REGISTRY_RETRY_SECONDS: Final = 0.2
REGISTRY_RECHECK_SECONDS: Final = 3.0
FULL_ID_LENGTH: Final = 36
"""Characters of a UUID as text: anything shorter is a prefix to resolve."""


class UsageError(HubError):
    """A subcommand was called without what it needs."""


def out(line: str) -> None:
    """Print a result line to stdout and flush, so pipes and followers see it at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def connect(nats_url: str, name: str = "hubctl", user: str = permissions.ADMIN) -> Client:
    """Connect once as hub user ``user`` (the operator, by default), failing fast if nobody is there."""
    return await nats.connect(
        server_urls(nats_url),
        name=name,
        connect_timeout=3,
        allow_reconnect=False,
        # nats-py retries a first connection 60 times, 2 s apart, before giving up: two minutes
        # to say nobody is there. Two tries, half a second apart, say it in seconds.
        max_reconnect_attempts=1,
        reconnect_time_wait=0.5,
        error_cb=silence_nats_error_log,
        **credentials.for_hub_user(user).connect_options(),
    )


def require_clinic(args: argparse.Namespace) -> str:
    """The ``--clinic`` value, which this subcommand cannot do without."""
    if not args.clinic:
        msg = f"'hubctl {args.command}' needs --clinic (or HUB_CLINIC)"
        raise UsageError(msg)
    clinic: str = args.clinic
    return clinic


async def fetch_registry(connection: Client) -> list[Clinic]:
    """Every clinic in the registry bucket, read once into the services' registry view.

    nats-py's ``keys()`` says "no keys" when its watch reports nothing pending, which a
    server that has just restarted can report for a bucket that holds values. So an empty
    answer is believed at once only when the bucket's stream holds nothing either; otherwise
    the keys are asked for again for up to ``REGISTRY_RECHECK_SECONDS`` (a bucket of deleted
    keys only is empty after that).
    """
    kv = await connection.jetstream().key_value(topology.REGISTRY_KV)
    until = time.monotonic() + REGISTRY_RECHECK_SECONDS
    while True:
        try:
            keys = await kv.keys()
            break
        except nats.js.errors.NoKeysError:
            if (await kv.status()).values == 0 or time.monotonic() > until:
                return []
            await asyncio.sleep(REGISTRY_RETRY_SECONDS)
    view = RegistryCache()
    for key in keys:
        view.apply(key, (await kv.get(key)).value)
    return view.clinics()


async def provision(args: argparse.Namespace) -> int:
    """``hubctl provision``."""
    registry = load_registry_file(args.registry) if args.registry or args.demo_registry else None
    await provision_as_operator(
        args.nats_url,
        replicas=args.replicas,
        budgets=dict(args.max_bytes),
        registry=registry,
        break_glass=args.break_glass,
    )
    out(
        f"provisioned {len(topology.stream_configs())} streams, {len(topology.kv_configs())} KV buckets, "
        f"{len(topology.CONSUMERS)} consumers on {args.nats_url}"
        + (" (break-glass: existing streams brought up to date)" if args.break_glass else "")
    )
    if registry is not None:
        out(f"loaded {len(registry.clinics)} clinics into the registry, each with its inbox consumer")
    return 0


def audit_signing_key() -> str:
    """The audit signing key: ``HUB_AUDIT_SIGNING_KEY_FILE`` (preferred) or ``HUB_AUDIT_SIGNING_KEY``, hex seed."""
    path = os.environ.get("HUB_AUDIT_SIGNING_KEY_FILE")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            msg = f"cannot read the audit signing key {path}: {exc.strerror}"
            raise UsageError(msg) from exc
    return os.environ.get("HUB_AUDIT_SIGNING_KEY", "")


def run_service(args: argparse.Namespace) -> int:
    """``hubctl run SERVICE``: blocks until SIGINT or SIGTERM."""
    from referral_hub.runtime.hosting.service import ServiceSettings, run_until_signalled  # noqa: PLC0415 - as _service_app

    logs.configure(args.service, json=args.log_json)
    quiet_expected_timeouts(args.service)
    app = _service_app(args)
    run_until_signalled(app, ServiceSettings(args.nats_url, args.metrics_port, args.metrics_host))
    return 0


def _service_app(args: argparse.Namespace) -> ServiceApp:
    """The service ``hubctl run`` asked for, its modules imported only now.

    Every ``hubctl`` call would otherwise pay for importing all three services and their
    broker library, about a second of CPU, to print one line.
    """
    # Deferred imports: only the process that runs a service needs its code.
    if args.service == "referrals":
        from referral_hub.referrals import app as referrals_app  # noqa: PLC0415 - see above

        sla = SlaPolicy(
            urgent=timedelta(hours=args.sla_urgent_hours),
            routine=timedelta(hours=args.sla_routine_hours),
            close_within=timedelta(days=args.sla_close_days),
        )
        return referrals_app.create_app(args.nats_url, sla=sla, timer_interval=args.timer_interval)
    if args.service == "audit":
        from referral_hub.audit import app as audit_app  # noqa: PLC0415 - see above

        policy = audit_app.CheckpointPolicy(
            entries=int(os.environ.get("HUB_AUDIT_CHECKPOINT_ENTRIES", "1000")),
            seconds=float(os.environ.get("HUB_AUDIT_CHECKPOINT_SECONDS", "60")),
        )
        return audit_app.create_app(
            args.nats_url,
            nats_monitor_url=args.nats_monitor_url,
            signing_key=audit_signing_key(),
            checkpoints=policy,
            witness_inboxes=True,
        )
    from referral_hub.notifications import app as notifications_app  # noqa: PLC0415 - see above

    return notifications_app.create_app(args.nats_url)


def _flag_detail(message: ScreeningFlagged) -> str:
    about = (
        f"referral {message.referral_id}"
        if message.referral_id
        else f"{message.plan_clinic} plan v{message.plan_version}"
    )
    rules = ", ".join(f"{m.rule_id} ({m.severity})" for m in message.matches)
    if message.care_team_severity is not None:
        rules = ", ".join(filter(None, (rules, f"care team holds a contraindication ({message.care_team_severity})")))
    return f"{about}: {rules}{'; HELD for review' if message.held else ''}"


_DETAILS: Final[dict[type, Callable[[Any], str]]] = {
    ReferralRequested: lambda m: (
        f"referral {m.referral_id} {m.referring_clinic} -> {m.recipient_clinic} "
        f"patient {m.patient_ref} {m.modality} {m.urgency}{' (needs review)' if m.state == 'needs_review' else ''}"
    ),
    ReferralTransitioned: lambda m: (
        f"referral {m.referral_id} {m.transition} by {m.sender_clinic} -> {m.state} (BSeR {m.bser_status})"
    ),
    CareTeamChanged: lambda m: f"{m.clinic} ({m.modality}) {m.change} the care team of {m.patient_ref}",
    PlanUpdated: lambda m: f"{m.plan_clinic} plan v{m.plan_version} for {m.patient_ref}",
    Rejection: lambda m: f"{m.code} for {m.offending_message_id}: {m.reason}",
    AlertRaised: lambda m: (
        f"{m.severity} alert {m.alert_id} by {m.raised_by}: {m.trigger} ({', '.join(m.modalities)}) for {m.patient_ref}"
    ),
    AlertAcknowledged: lambda m: f"alert {m.alert_id} acknowledged by {m.member} ({m.member_clinic})",
    AlertResolved: lambda m: f"alert {m.alert_id} resolved by {m.sender_clinic}",
    ScreeningFlagged: _flag_detail,
    ScreeningDisputed: lambda m: f"{m.disputed_by} disputes {m.rule_id} of flag {m.flag_id}",
    PageAcknowledged: lambda m: f"page {m.page_id} for {m.paged_clinic} acknowledged by {m.member} ({m.member_clinic})",
}


def _content(message: object) -> str:
    """What a referral message says (reason, techniques, notes, outcome), as its clinic reads it."""
    if isinstance(message, ReferralRequested):
        return " | ".join([f"reason: {message.reason}", *wording.request_lines(message)[1:]])
    if isinstance(message, ReferralTransitioned):
        return wording.transitioned_words(message)
    return ""


def describe_item(item: InboxItem, *, content: bool = True) -> str:
    """One human-readable line for an inbox message; ``content=False`` leaves the clinical text out.

    A clinic reading its own inbox sees what the other clinic wrote; the hub operator's screen
    (``hubctl up``) shows only who, what and when.
    """
    message = item.message
    kind = item.subject.split(".in.", 1)[-1]
    stamp = message.occurred_at.isoformat(timespec="seconds")
    detail = _DETAILS.get(type(message), lambda m: f"from {m.sender_clinic}")(message)
    said = _content(message) if content else ""
    return f"#{item.event_number:<5} {stamp}  {kind:<22} {detail}{': ' + said if said else ''}"


async def inbox(args: argparse.Namespace) -> int:
    """``hubctl inbox``."""
    clinic_id = require_clinic(args)
    client = await ClinicClient.connect(args.nats_url, clinic_id)
    count = 0
    try:
        # aclosing: when printing fails (a closed pipe), the reader ends before the
        # connection drains, rather than unsubscribing from a draining connection later.
        reader = contextlib.aclosing(client.inbox(since=args.since, follow=args.follow))
        async with reader as items:
            async for item in items:
                count += 1
                if args.json:
                    out(
                        json.dumps(
                            {
                                "sequence": item.sequence,
                                "subject": item.subject,
                                "message": json.loads(msgspec.json.encode(item.message)),
                            }
                        )
                    )
                else:
                    out(describe_item(item))
    finally:
        await client.close()
    if count == 0:
        await refuse_unregistered(args.nats_url, clinic_id)
        if not args.json:
            out(f"inbox of {clinic_id} is empty")
    return 0


async def refuse_unregistered(nats_url: str, clinic_id: str) -> None:
    """Raise if the registry, where it can be read here, does not name ``clinic_id``.

    An empty inbox and an unknown clinic look alike to the clinic's own read; the operator's
    key (on the machine running the hub, or a hub without authorization) tells them apart.
    Where the registry cannot be read, nothing is said.
    """
    operator = credentials.for_hub_user(permissions.ADMIN)
    if operator.nkey_file is not None and not operator.nkey_file.is_file():
        return
    try:
        connection = await connect(nats_url, "hubctl-registry")
        try:
            registered = {
                clinic.id for clinic in await asyncio.wait_for(fetch_registry(connection), REGISTRY_READ_SECONDS)
            }
        finally:
            await connection.close()
    except (nats.errors.Error, OSError, TimeoutError):
        return
    if registered and clinic_id not in registered:
        msg = f"clinic {clinic_id!r} is not registered; see 'hubctl clinics'"
        raise UsageError(msg)


async def load_one(
    nats_url: str,
    open_store: Callable[[JetStreamContext], Awaitable[KvStore[Record]]],
    key: str,
    missing: str,
) -> Record:
    """One record from a KV-backed store, or a one-line error saying ``missing``."""
    connection = await connect(nats_url)
    try:
        stored = await (await open_store(connection.jetstream())).load(key)
    finally:
        await connection.drain()
    if stored is None:
        raise UsageError(missing)
    return stored[0]


async def resolve_key(nats_url: str, bucket: str, text: str, what: str) -> str:
    """The one key of ``bucket`` starting with ``text`` (a short id the hub printed), or a clear error.

    A full id is taken as given; a prefix must name exactly one key, and an ambiguous one
    lists the candidates.
    """
    wanted = text.strip().lower()
    if len(wanted) == FULL_ID_LENGTH:
        return wanted
    connection = await connect(nats_url)
    try:
        kv = await connection.jetstream().key_value(bucket)
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            keys = []
    finally:
        await connection.drain()
    matches = sorted(key for key in keys if key.startswith(wanted)) if wanted else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        msg = f"no {what} {text!r}"
        raise UsageError(msg)
    msg = f"{what} id {text!r} is ambiguous; it could be: {', '.join(matches)}"
    raise UsageError(msg)


async def referral_show(args: argparse.Namespace) -> int:
    """``hubctl referral show ID [--fhir]``: current state and full history."""
    referral_id = await resolve_key(args.nats_url, topology.REFERRALS_KV, args.referral_id, "referral")
    referral = await load_one(args.nats_url, referral_store, referral_id, f"no referral {args.referral_id}")
    if args.fhir:
        out(json.dumps(fhir_task.bundle(referral), indent=2))
        return 0
    lines = wording.referral_lines(referral)
    for line in lines[:2]:
        out(line)
    if args.clinic:
        from referral_hub.cli.sealing_keys import show_details  # noqa: PLC0415 - sealing_keys imports this module

        seals = (referral.request.patient_details, *referral.resealed)
        for line in await show_details(args.nats_url, seals, referral.referral_id, args.clinic):
            out(line)
    for line in lines[2:]:
        out(line)
    return 0


async def referrals_list(args: argparse.Namespace) -> int:
    """``hubctl referrals --clinic X [--state open|all|STATE]``: sent and received."""
    clinic_id = require_clinic(args)
    connection = await connect(args.nats_url)
    try:
        store = await referral_store(connection.jetstream())
        found = [r async for _, r, _ in store.scan() if clinic_id in {r.referring_clinic, r.recipient_clinic}]
    finally:
        await connection.drain()
    if not found:
        await refuse_unregistered(args.nats_url, clinic_id)
    wanted = {
        "open": {s for s in ReferralState if s not in lifecycle.TERMINAL},
        "all": set(ReferralState),
    }.get(args.state, {ReferralState(args.state)} if args.state in set(ReferralState) else None)
    if wanted is None:
        msg = f"unknown --state {args.state!r}; use open, all or one of: {', '.join(ReferralState)}"
        raise UsageError(msg)
    for referral in sorted(found, key=lambda r: r.history[0].at):
        if referral.state in wanted:
            direction = "sent" if referral.referring_clinic == clinic_id else "received"
            other = referral.recipient_clinic if direction == "sent" else referral.referring_clinic
            out(
                f"{referral.referral_id}  {direction:<8} {other:<20} {referral.state:<16} {referral.patient_ref}  "
                f"{referral.history[-1].at.isoformat(timespec='seconds')}"
            )
    return 0


async def careteam_show(args: argparse.Namespace) -> int:
    """``hubctl careteam show PATIENT_REF``."""
    team = await load_one(
        args.nats_url, careteam_store, team_key(args.patient_ref), f"patient {args.patient_ref} has no care team"
    )
    out(f"care team of {team.patient_ref}")
    for member in team.members:
        status = (
            "active"
            if member.active
            else f"left {member.left_at.isoformat(timespec='seconds') if member.left_at else ''}"
        )
        plan = f"plan v{member.plan_version}" if member.plan else "no plan"
        out(
            f"  {member.clinic:<20} {member.modality:<18} "
            f"since {member.since.isoformat(timespec='seconds')}  {status:<8} {plan}"
        )
    return 0


async def alerts(args: argparse.Namespace) -> int:
    """``hubctl alerts --patient P [--all] [--json]``: alerts in force, and who acknowledged each."""
    team = await load_one(
        args.nats_url, careteam_store, team_key(args.patient), f"patient {args.patient} has no care team"
    )
    views = alerting.view(team, datetime.now(UTC), include_inactive=args.all)
    if args.json:
        for item in views:
            out(msgspec.json.encode(item).decode())
        return 0
    if not views:
        out(f"no {'' if args.all else 'active '}alerts for {team.patient_ref}")
    for item in views:
        site = f" at {item.body_site}" if item.body_site else ""
        techniques = f" ({', '.join(item.techniques)})" if item.techniques else ""
        out(
            f"{item.alert_id}  {item.status:<8} {item.severity:<8} {item.trigger_kind} {item.trigger!r}{site}: "
            f"{', '.join(item.modalities)}{techniques}; raised by {item.raised_by} "
            f"{item.raised_at.isoformat(timespec='seconds')}"
        )
        for ack in item.acknowledged_by:
            out(f"    acknowledged by {ack.member} ({ack.clinic}) {ack.at.isoformat(timespec='seconds')}")
        if not item.acknowledged_by:
            out("    not acknowledged yet")
    return 0


def rules(args: argparse.Namespace) -> int:
    """``hubctl rules [--json]``: the contraindication rule table with its sources."""
    from referral_hub.screening.rules import load_rules  # noqa: PLC0415 - only this command needs the rule pack

    pack = load_rules()
    if args.json:
        out(msgspec.json.encode(pack).decode())
        return 0
    for rule in pack.rules:
        techniques = ", ".join(rule.techniques) or "any technique"
        out(f"{rule.id:<40} {rule.severity:<9} {rule.modality:<17} {rule.trigger_kind}: {', '.join(rule.terms[:3])}")
        out(f"{'':<40} techniques: {techniques}; scope: {rule.scope}")
        out(f"{'':<40} {rule.rationale} [{pack.sources[rule.source]}]")
    out(f"{len(pack.rules)} rules from {len(pack.sources)} public sources")
    return 0


async def clinics(args: argparse.Namespace) -> int:
    """``hubctl clinics``."""
    connection = await connect(args.nats_url)
    try:
        registered = await fetch_registry(connection)
    finally:
        await connection.drain()
    if args.json:
        out(msgspec.json.encode(Registry(clinics=tuple(registered))).decode())
        return 0
    for clinic in registered:
        members = ", ".join(f"{member.id} ({member.role})" for member in clinic.members)
        out(f"{clinic.id:<20} {clinic.name:<32} {','.join(clinic.modalities):<24} {members}")
    return 0


async def audit_log(args: argparse.Namespace) -> int:
    """``hubctl audit log``."""
    connection = await connect(args.nats_url, user=permissions.AUDITOR)
    try:
        async for entry in read_chain(connection.jetstream()):
            if args.json:
                out(msgspec.json.encode(entry).decode())
            else:
                code = f" {entry.rejection_code}" if entry.rejection_code else ""
                out(
                    f"#{entry.index:<6} {entry.recorded_at.isoformat(timespec='seconds')} {entry.action:<10} "
                    f"{entry.message_type:<22} {entry.clinic:<20} {entry.outcome}{code}"
                )
    finally:
        await connection.drain()
    return 0


async def audit_verify(args: argparse.Namespace) -> int:
    """``hubctl audit verify [--verifier-key KEY] [--witness FILE]``: exit 0 only if the whole log verifies.

    Checkpoints count only if signed by the pinned verifier key; without one it refuses
    (``cli.audit_verify``, which does the work).
    """
    from referral_hub.cli.audit_verify import verify  # noqa: PLC0415 - it imports this module

    return await verify(args)


def contracts_export(args: argparse.Namespace) -> int:
    """``hubctl contracts export``: JSON Schema of every contract, plus AsyncAPI."""
    directory: Path = args.out
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "contracts.schema.json").write_text(render(schema_document()))
    (directory / "asyncapi.json").write_text(json.dumps(asyncapi_document(), indent=2) + "\n")
    out(f"wrote {directory / 'contracts.schema.json'} and {directory / 'asyncapi.json'}")
    return 0


def contracts_publish(args: argparse.Namespace) -> int:
    """``hubctl contracts publish``: record additive changes in the snapshot; refuse breaking ones."""
    contracts_check(args)
    snapshot = Path(args.snapshot)
    snapshot.write_text(render(current_components()))
    out(f"wrote {snapshot}")
    return 0


def contracts_check(_args: argparse.Namespace) -> int:
    """``hubctl contracts check``: non-zero if the contracts break the published version."""
    breaks = breaking_changes(published_components(), current_components())
    if breaks:
        msg = "contracts break the published v1: " + "; ".join(breaks)
        raise HubError(msg)
    out("contracts are backward compatible with the published v1")
    return 0


def report(figures: Mapping[str, object], *, as_json: bool, lines: list[str]) -> int:
    """A benchmark's figures: one JSON object with ``--json``, else the human-readable ``lines``."""
    if as_json:
        out(json.dumps(figures))
        return 0
    for line in lines:
        out(line)
    return 0


async def bench(args: argparse.Namespace) -> int:
    """``hubctl bench referrals``: print the figures, as JSON with ``--json``."""
    from referral_hub.cli.bench import bench_referrals  # noqa: PLC0415 - benchmark code stays out of other commands

    async with progress.timed("bench referrals", args.duration, show=progress.wanted(as_json=args.json)):
        f = await bench_referrals(args.duration, args.sync)
    return report(
        f,
        as_json=args.json,
        lines=[
            f"referral lifecycle (request ... close), {f['referrals']} referrals in {f['seconds']}s, sync {args.sync}:",
            f"  hub transitions/s          {f['transitions_per_s']:>10}",
            f"  request-to-inbox p50 / p99 {f['p50_ms']:>7} ms / {f['p99_ms']} ms",
            "the same with the patient's details sealed to both clinics (and opened by the recipient):",
            f"  hub transitions/s          {f['details_transitions_per_s']:>10}",
            f"  request-to-inbox p50 / p99 {f['details_p50_ms']:>7} ms / {f['details_p99_ms']} ms",
            (
                f"  seal + open p50 / p99      {f['seal_open_ms_p50']:>7} ms / {f['seal_open_ms_p99']} ms "
                f"({f['seal_open_share_of_transition']:.1%} of a request's p50)"
            ),
            "raw nats-py on the same server, same run:",
            f"  KV put, sequential /s      {f['baseline_kv_put_per_s']:>10}",
            f"  JS publish+ack, seq /s     {f['baseline_js_publish_per_s']:>10}",
            f"ratio hub transitions / raw KV put: {f['ratio_vs_kv_put']}",
            "what the load cost nats-server (the ceiling of this machine):",
            f"  stored messages/transition {f['stored_messages_per_transition']:>10}",
            f"    by stream: {f['stored_per_transition_by_stream']}",
            f"  server CPU ms/transition   {f['server_cpu_ms_per_transition']:>10}",
            f"  server CPU ms/raw KV put   {f['baseline_kv_put_server_cpu_ms']:>10}",
            f"  server CPU ratio transition / raw KV put: {f['server_cpu_ratio']}",
            f"  all {f['cores']} cores, server only /s {f['server_ceiling_transitions_per_s']:>7}",
            f"  ratio of that ceiling / raw KV put: {f['ceiling_ratio_vs_kv_put']}",
            f"  hub caught up {f['settle_s']} s after the load (-1: not within a minute)",
        ],
    )


async def bench_load(args: argparse.Namespace) -> int:
    """``hubctl bench load``: one line per offered rate, the lag series, and the highest sustained rate."""
    from referral_hub.cli.bench_load import FLOWS  # noqa: PLC0415 - benchmark code stays out of other commands
    from referral_hub.cli.bench_load import bench_load as run  # noqa: PLC0415 - as above

    if args.plot is not None:
        plots.check_target(args.plot)
    planned = args.duration * len(args.rate)
    async with progress.timed("bench load", planned, show=progress.wanted(as_json=args.json)):
        report_ = await run(args.clinics, args.rate, args.duration, args.sync, args.cluster)
    if args.plot is not None:
        plots.write_png(report_.plot(), args.plot)
    if args.json:
        out(json.dumps(report_.figures()))
        return 0
    out(
        f"mixed load, {report_.clinics} clinics, {report_.nats_nodes} NATS node(s), sync {report_.sync_interval}; "
        "latency: send until the other party's inbox has the answer (p50 / p99 ms)"
    )
    out(
        f"{'offered/s':>9} {'done/s':>7} {'late':>5} {'rej':>4} "
        f"{'request':>15} {'transition':>15} {'alert':>15}  sustained"
    )
    for r in report_.results:
        cells = " ".join(f"{r.quantile_ms(flow, 0.5):>7} /{r.quantile_ms(flow, 0.99):>6}" for flow in FLOWS)
        out(
            f"{r.offered_per_s:>9} {r.achieved_per_s:>7.1f} {r.late_or_lost:>5} {r.rejected:>4} {cells}  "
            f"{'yes' if r.sustained else 'no'}"
        )
        out(f"{'':>9} consumer lag, once a second: {' '.join(str(n) for n in r.lag)}")
    out(
        f"raw nats-py, same server, same run: JS publish+ack {report_.baseline_js_publish_per_s:.0f}/s, "
        f"KV put {report_.baseline_kv_put_per_s:.0f}/s (sequential)"
    )
    out(f"highest sustained rate with p99 < 100 ms: {report_.max_sustained_rate_per_s}/s")
    return 0


async def bench_pages(args: argparse.Namespace) -> int:
    """``hubctl bench pages``: alert-to-page latency, as JSON with ``--json``."""
    from referral_hub.cli.bench_pages import bench_pages as run  # noqa: PLC0415 - benchmark code stays out of other commands
    from referral_hub.cli.bench_pages import pages_plot  # noqa: PLC0415 - as above

    if args.plot is not None:
        plots.check_target(args.plot)
    planned = (2 * len(args.rate) + (2 if args.referral_workers else 0)) * args.duration
    async with progress.timed("bench pages", planned, show=progress.wanted(as_json=args.json)):
        result = await run(args.rate, args.duration, args.sync, referral_workers=args.referral_workers)
    if args.plot is not None:
        plots.write_png(pages_plot(result, args.duration), args.plot)
    f = result.figures()
    if args.json:
        out(json.dumps(f))
        return 0
    out(f"alert -> fan-out -> page -> signed webhook, sync {args.sync}; the hub beside a raw nats-py chain, same run")
    out(f"{'offered/s':>9} {'hub p50/p99 ms':>17} {'raw p50/p99 ms':>17} {'p99 ratio':>9} {'lost hub/raw':>12}")
    for row in result.per_rate():
        out(
            f"{row['offered_per_s']:>9} {row['p50_ms']:>8} /{row['p99_ms']:>7} "
            f"{row['raw_chain_p50_ms']:>8} /{row['raw_chain_p99_ms']:>7} {row['p99_ratio']:>9} "
            f"{row['lost']:>5} /{row['raw_chain_lost']:>5}"
        )
    out(
        "saturation (the first rate not kept up with): "
        f"hub {f['hub_saturation_per_s']}, raw {f['raw_chain_saturation_per_s']}"
    )
    if "absolute_p99_ms" in f:
        out(
            f"absolute pages at {args.rate[0]}/s, p99: alone {f['absolute_p99_ms']} ms, beside "
            f"{f['referral_transitions_per_s']} referral transitions/s {f['absolute_with_referrals_p99_ms']} ms"
        )
    out(
        f"raw nats-py, same server, same run: JS publish+ack {f['baseline_js_publish_per_s']}/s, "
        f"KV put {f['baseline_kv_put_per_s']}/s (sequential); bad signatures {f['bad_signatures']}"
    )
    return 0


async def bench_audit(args: argparse.Namespace) -> int:
    """``hubctl bench audit``: print the figures, as JSON with ``--json``."""
    from referral_hub.cli.bench_audit import bench_audit as run  # noqa: PLC0415 - benchmark code stays out of other commands

    async with progress.timed("bench audit", args.seconds * 3, show=progress.wanted(as_json=args.json)):
        f = await run(args.entries, args.seconds, args.sync)
    rows = (
        ("append /s", "append_per_s", "baseline_publish_per_s", "raw publish_async /s", "append_ratio"),
        ("verify /s", "verify_per_s", "baseline_read_hash_per_s", "raw read+sha256 /s", "verify_ratio"),
    )
    return report(
        f,
        as_json=args.json,
        lines=[
            f"audit log of {f['entries']} entries, sync {args.sync}:",
            *(
                f"  {label:<10} {f[hub]:>10}   {raw_label:<20} {f[raw]:>10}   ratio {f[ratio]}"
                for label, hub, raw, raw_label, ratio in rows
            ),
            f"  query p99  {f['query_p99_ms']} ms   (chain verified: {f['verified']})",
        ],
    )


async def up(args: argparse.Namespace) -> int:
    """``hubctl up``: see :mod:`referral_hub.cli.up`."""
    from referral_hub.cli.up import run_hub  # noqa: PLC0415 - keeps the other subcommands light

    return await run_hub(args)
