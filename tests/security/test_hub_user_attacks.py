"""The hub's own users, each assumed compromised, attacking with raw nats-py.

``referrals`` and ``notifications`` live in the ``HUB`` account, ``audit`` and ``auditor``
in ``AUDIT``; ``admin`` is the operator's everyday key and may not destroy anything; only
the break-glass keys may change a stream (``runtime.broker.permissions``). Every attack is refused,
and each test shows the durable, stream or audit chain it aimed at is unchanged, and that
the hub still works (a fresh referral is stored, delivered and audited).

Destructive attacks by ``admin`` come last in the module: on a configuration that let them
through, they would take the hub down for the tests after them.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from referral_hub.runtime.broker import permissions
from referral_hub.runtime.jetstream import streams, subjects, topology
from tests.helpers import referral_request

from .hostile import (
    AttackedHub,
    Hostile,
    consumer_names,
    consumer_state,
    describe_all,
    js_request,
    report,
    stream_state,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

A, B = "harbor-pt", "lotus-acu"
HUB_PREFIX = permissions.HUB_API_PREFIX
"""Where the audit account reaches the hub's JetStream API."""
PAUSE = {"pause_until": "2099-01-01T00:00:00Z"}
REFUSED = "refused; nothing changed"
NOTIFICATIONS_EVENTS = topology.NOTIFICATIONS_EVENTS
REFERRALS_INTAKE = topology.REFERRALS_INTAKE
PAGE_ACKS = topology.NOTIFICATIONS_ACKS
REGISTRY_STREAM = f"KV_{topology.REGISTRY_KV}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(secured_hub: AttackedHub) -> AttackedHub:
    """The module's hub, with a referral each way already stored, delivered and audited."""
    for sender, recipient in ((B, A), (A, B)):
        failure = await secured_hub.positive_control(sender, recipient)
        assert not failure, failure
    return secured_hub


async def _true(value: bool) -> bool:  # noqa: FBT001 - a probe for eventually
    return value


def config_of(spec: topology.ConsumerSpec, **changes: Any) -> dict[str, Any]:
    """The durable's own configuration with ``changes``: what an update would install."""
    config: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(spec.config().as_dict()))
    if "filter_subject" in changes:
        config.pop("filter_subjects", None)
    config.update(changes)
    return config


def pushed_into(target: str, stream: str, filter_subject: str = "") -> dict[str, Any]:
    """An ephemeral push consumer on ``stream`` delivering to ``target``: a KV watch's shape."""
    config: dict[str, Any] = {"deliver_subject": target, "ack_policy": "none", "deliver_policy": "all"}
    if filter_subject:
        config["filter_subject"] = filter_subject
    return {"stream_name": stream, "config": config}


# Durables: pause, pull, create, update.

PAUSES = {
    "referrals pauses notifications-events": ("referrals", NOTIFICATIONS_EVENTS, "$JS.API"),
    "notifications pauses referrals-intake": ("notifications", REFERRALS_INTAKE, "$JS.API"),
    "notifications pauses its own durable": ("notifications", PAGE_ACKS, "$JS.API"),
    "audit pauses referrals-intake": ("audit", REFERRALS_INTAKE, "$JS.API"),
    "audit pauses referrals-intake through the hub's API": ("audit", REFERRALS_INTAKE, HUB_PREFIX),
}


@pytest.mark.parametrize(("user", "spec", "prefix"), PAUSES.values(), ids=PAUSES.keys())
async def test_a_service_cannot_pause_a_durable(hub, user, spec, prefix):
    attacker = await hub.hostile_user(user)
    before = await consumer_state(hub.admin, spec.stream, spec.durable)
    outcome = await attacker.attempt(f"{prefix}.CONSUMER.PAUSE.{spec.stream}.{spec.durable}", PAUSE)
    after = await consumer_state(hub.admin, spec.stream, spec.durable)
    control = await hub.positive_control(A, B)
    state = "unchanged" if after == before else f"CHANGED (paused: {after['paused']})"
    report(
        f"{user}: {prefix}.CONSUMER.PAUSE.{spec.stream}.{spec.durable}",
        REFUSED,
        f"{outcome.describe()}; {spec.durable} {state}" + (f"; CONTROL: {control}" if control else ""),
    )
    assert outcome.refused, outcome
    assert after == before
    assert not control


PULLS = {
    "referrals pulls notifications-events": ("referrals", NOTIFICATIONS_EVENTS, "$JS.API"),
    "notifications pulls referrals-intake": ("notifications", REFERRALS_INTAKE, "$JS.API"),
    "audit pulls referrals-intake through the hub's API": ("audit", REFERRALS_INTAKE, HUB_PREFIX),
}


@pytest.mark.parametrize(("user", "spec", "prefix"), PULLS.values(), ids=PULLS.keys())
async def test_a_service_cannot_pull_another_services_durable(hub, user, spec, prefix):
    attacker = await hub.hostile_user(user)
    before = (await hub.admin.jetstream().consumer_info(spec.stream, spec.durable)).delivered
    pull = {"batch": 10, "no_wait": True}  # answered at once, with messages or "No Messages", if allowed
    outcome = await attacker.attempt(f"{prefix}.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}", pull)
    after = (await hub.admin.jetstream().consumer_info(spec.stream, spec.durable)).delivered
    report(
        f"{user}: {prefix}.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}",
        "refused; nothing delivered",
        f"{outcome.describe()}; delivered {before.stream_seq} -> {after.stream_seq}",
    )
    assert outcome.refused, outcome
    assert after.stream_seq == before.stream_seq


DURABLE_WRITES = {
    "referrals: durable create of notifications-events": (
        "referrals",
        NOTIFICATIONS_EVENTS,
        f"$JS.API.CONSUMER.DURABLE.CREATE.HUB_EVENTS.{NOTIFICATIONS_EVENTS.durable}",
        config_of(NOTIFICATIONS_EVENTS, max_deliver=1),
    ),
    "referrals: filtered create of notifications-events": (
        "referrals",
        NOTIFICATIONS_EVENTS,
        f"$JS.API.CONSUMER.CREATE.HUB_EVENTS.{NOTIFICATIONS_EVENTS.durable}.hub.event.>",
        config_of(NOTIFICATIONS_EVENTS, filter_subject="hub.event.>"),
    ),
    "referrals: update of its own referrals-intake": (
        "referrals",
        REFERRALS_INTAKE,
        f"$JS.API.CONSUMER.CREATE.CLINIC_OUT.{REFERRALS_INTAKE.durable}.clinic.*.out.>",
        config_of(REFERRALS_INTAKE, max_ack_pending=1),
    ),
    "notifications: durable create of referrals-intake": (
        "notifications",
        REFERRALS_INTAKE,
        f"$JS.API.CONSUMER.DURABLE.CREATE.CLINIC_OUT.{REFERRALS_INTAKE.durable}",
        config_of(REFERRALS_INTAKE, max_deliver=1),
    ),
    "notifications: filtered create of referrals-intake": (
        "notifications",
        REFERRALS_INTAKE,
        f"$JS.API.CONSUMER.CREATE.CLINIC_OUT.{REFERRALS_INTAKE.durable}.clinic.*.out.page.ack",
        config_of(REFERRALS_INTAKE, filter_subject="clinic.*.out.page.ack"),
    ),
    "audit: durable create of referrals-intake through the hub's API": (
        "audit",
        REFERRALS_INTAKE,
        f"{HUB_PREFIX}.CONSUMER.DURABLE.CREATE.CLINIC_OUT.{REFERRALS_INTAKE.durable}",
        config_of(REFERRALS_INTAKE, max_deliver=1),
    ),
    "audit: filtered create of referrals-intake": (
        "audit",
        REFERRALS_INTAKE,
        f"$JS.API.CONSUMER.CREATE.CLINIC_OUT.{REFERRALS_INTAKE.durable}.clinic.*.out.>",
        config_of(REFERRALS_INTAKE, max_deliver=1),
    ),
    "audit: update of its own audit-clinic-out through the hub's API": (
        "audit",
        topology.AUDIT_CONSUMERS[0],
        f"{HUB_PREFIX}.CONSUMER.CREATE.CLINIC_OUT.{topology.AUDIT_CONSUMERS[0].durable}.clinic.{A}.out.>",
        config_of(topology.AUDIT_CONSUMERS[0], filter_subject=f"clinic.{A}.out.>"),
    ),
}


@pytest.mark.parametrize(("user", "spec", "subject", "config"), DURABLE_WRITES.values(), ids=DURABLE_WRITES.keys())
async def test_a_service_cannot_create_or_update_a_durable(hub, user, spec, subject, config):
    attacker = await hub.hostile_user(user)
    before = await consumer_state(hub.admin, spec.stream, spec.durable)
    outcome = await attacker.attempt(subject, {"stream_name": spec.stream, "config": config})
    after = await consumer_state(hub.admin, spec.stream, spec.durable)
    report(
        f"{user}: {subject}",
        REFUSED,
        f"{outcome.describe()}; {spec.durable} {'unchanged' if after == before else 'CHANGED'}",
    )
    assert outcome.refused, outcome
    assert after == before


async def test_a_service_cannot_create_a_new_durable(hub):
    outcomes = []
    for user in ("referrals", "notifications"):
        attacker = await hub.hostile_user(user)
        config = {"durable_name": f"{user}-extra", "ack_policy": "explicit", "filter_subject": "clinic.*.in.>"}
        outcomes.append(
            await attacker.attempt(
                f"$JS.API.CONSUMER.CREATE.CLINIC_IN.{user}-extra.clinic.*.in.>",
                {"stream_name": "CLINIC_IN", "config": config},
            )
        )
    names = await consumer_names(hub.admin, streams.CLINIC_IN)
    report(
        "referrals, notifications: a new durable on CLINIC_IN",
        "refused; none created",
        f"{describe_all(outcomes)}; created: {sorted(n for n in names if n.endswith('-extra')) or 'none'}",
    )
    assert all(outcome.refused for outcome in outcomes)
    assert not {name for name in names if name.endswith("-extra")}


# Streams: snapshot and restore.

SNAPSHOTS = {
    "referrals snapshots CLINIC_IN": ("referrals", "$JS.API.STREAM.SNAPSHOT.CLINIC_IN"),
    "notifications snapshots CLINIC_OUT": ("notifications", "$JS.API.STREAM.SNAPSHOT.CLINIC_OUT"),
    "audit snapshots CLINIC_IN through the hub's API": ("audit", f"{HUB_PREFIX}.STREAM.SNAPSHOT.CLINIC_IN"),
    "audit snapshots AUDIT": ("audit", "$JS.API.STREAM.SNAPSHOT.AUDIT"),
}


@pytest.mark.parametrize(("user", "subject"), SNAPSHOTS.values(), ids=SNAPSHOTS.keys())
async def test_a_service_cannot_snapshot_a_stream(hub, user, subject):
    attacker = await hub.hostile_user(user)
    chunks: list[Msg] = []

    async def chunk(message: Msg) -> None:
        chunks.append(message)

    deliver = attacker.connection.new_inbox()
    receiver = await attacker.connection.subscribe(deliver, cb=chunk)
    outcome = await attacker.attempt(subject, {"deliver_subject": deliver, "chunk_size": 1024})
    await receiver.unsubscribe()
    report(f"{user}: {subject}", "refused; no data", f"{outcome.describe()}; chunks received: {len(chunks)}")
    assert outcome.refused, outcome
    assert not chunks


RESTORES = {
    "referrals restores over CLINIC_IN": ("referrals", "CLINIC_IN"),
    "notifications restores a new stream": ("notifications", "RESTORED"),
    "audit restores over AUDIT": ("audit", "AUDIT"),
}


@pytest.mark.parametrize(("user", "stream"), RESTORES.values(), ids=RESTORES.keys())
async def test_a_service_cannot_restore_a_stream(hub, user, stream):
    attacker = await hub.hostile_user(user)
    body = {"config": {"name": stream, "subjects": [f"restored.{stream.lower()}"], "storage": "file"}, "state": {}}
    names = await _stream_names(hub)
    outcome = await attacker.attempt(f"$JS.API.STREAM.RESTORE.{stream}", body)
    after = await _stream_names(hub)
    report(
        f"{user}: $JS.API.STREAM.RESTORE.{stream}",
        REFUSED,
        f"{outcome.describe()}; streams {'unchanged' if after == names else 'CHANGED'}",
    )
    assert outcome.refused, outcome
    assert after == names


async def _stream_names(hub: AttackedHub) -> tuple[set[str], dict[str, Any]]:
    hub_streams = set((await js_request(hub.admin, "$JS.API.STREAM.NAMES")).get("streams") or [])
    audit = await stream_state(hub.auditor, streams.AUDIT)
    return hub_streams, {"config": audit.get("config"), "created": audit.get("created")}


# The audit log: only the audit service writes it, by any path.


async def audit_untouched(hub: AttackedHub, length: int, metric: float) -> tuple[str, list[str]]:
    """After a positive control: the chain grew, verifies, holds nothing foreign, and the metric agrees."""
    control = await hub.positive_control(A, B)
    grown, delta = hub.audit.read_to - length, hub.audit_metric() - metric
    problems = [*hub.audit.foreign, *([f"CONTROL: {control}"] if control else [])]
    if grown <= 0:
        problems.append("the chain did not grow")
    if delta != grown:
        problems.append(f"hub_audit_entries_total +{delta:g} but the chain +{grown}")
    verdict = f"chain +{grown} entries, metric +{delta:g}, {'verifies' if hub.audit.intact else 'BROKEN'}"
    return verdict + (f"; {problems[0]}" if problems else ""), problems


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def audit_tap(hub: AttackedHub) -> Hostile:
    """Interest on ``audit.entry`` inside the audit account, so a push delivery there would really land."""
    tap = await hub.break_glass(permissions.AUDIT_BREAK_GLASS)
    for subject in (subjects.AUDIT_ENTRY, subjects.AUDIT_CHECKPOINT):
        await tap.connection.subscribe(subject)
    await tap.connection.flush()
    return tap


AUDIT_PUSHES = {
    "referrals: consumer on AUDIT": ("referrals", "$JS.API.CONSUMER.CREATE.AUDIT", pushed_into("audit.entry", "AUDIT")),
    "referrals: consumer on CLINIC_IN": (
        "referrals",
        "$JS.API.CONSUMER.CREATE.CLINIC_IN",
        pushed_into("audit.entry", "CLINIC_IN"),
    ),
    "notifications: consumer on AUDIT": (
        "notifications",
        "$JS.API.CONSUMER.CREATE.AUDIT",
        pushed_into("audit.entry", "AUDIT"),
    ),
    "notifications: consumer on HUB_EVENTS": (
        "notifications",
        "$JS.API.CONSUMER.CREATE.HUB_EVENTS",
        pushed_into("audit.entry", "HUB_EVENTS"),
    ),
    "audit: consumer on CLINIC_IN through the hub's API": (
        "audit",
        f"{HUB_PREFIX}.CONSUMER.CREATE.CLINIC_IN",
        pushed_into("audit.entry", "CLINIC_IN"),
    ),
    "audit: consumer on AUDIT_CHECKPOINTS": (
        "audit",
        "$JS.API.CONSUMER.CREATE.AUDIT_CHECKPOINTS",
        pushed_into("audit.entry", "AUDIT_CHECKPOINTS"),
    ),
    "audit: consumer on AUDIT": (
        "audit",
        "$JS.API.CONSUMER.CREATE.AUDIT.reflect.audit.entry",
        {
            "stream_name": "AUDIT",
            "config": {**pushed_into("audit.entry", "AUDIT", "audit.entry")["config"], "name": "reflect"},
        },
    ),
}


@pytest.mark.parametrize(("user", "subject", "body"), AUDIT_PUSHES.values(), ids=AUDIT_PUSHES.keys())
async def test_a_service_cannot_push_into_the_audit_log(hub, audit_tap, user, subject, body):
    attacker = await hub.hostile_user(user)
    length, metric = await hub.audit.refresh(), hub.audit_metric()
    outcome = await attacker.attempt(subject, body)
    created = (outcome.reply or {}).get("name", "") if not outcome.refused else ""
    try:
        verdict, problems = await audit_untouched(hub, length, metric)
    finally:
        if created:  # leave the module's audit log to the tests after this one
            with contextlib.suppress(Exception):
                await js_request(audit_tap.connection, f"$JS.API.CONSUMER.DELETE.{body['stream_name']}.{created}")
    report(
        f"{user}: push consumer into audit.entry ({subject})",
        "refused; AUDIT holds only the chain; chain appends",
        f"{outcome.describe()}; {verdict}",
    )
    assert outcome.refused, outcome
    assert not problems


@pytest.mark.usefixtures("audit_tap")
@pytest.mark.parametrize("user", ["referrals", "notifications"])
async def test_a_services_kv_watch_aimed_at_audit_entry_stays_in_the_hub_account(hub, user):
    attacker = await hub.hostile_user(user)
    hub_tap = await hub.admin.subscribe(subjects.AUDIT_ENTRY)  # interest in HUB: the delivery is observable
    await hub.admin.flush()
    length, metric = await hub.audit.refresh(), hub.audit_metric()
    outcome = await attacker.attempt(
        f"$JS.API.CONSUMER.CREATE.{REGISTRY_STREAM}", pushed_into(subjects.AUDIT_ENTRY, REGISTRY_STREAM)
    )
    try:
        landed_in_hub = await hub_tap.next_msg(timeout=5) if not outcome.refused else None
    except TimeoutError:
        landed_in_hub = None
    finally:
        await hub_tap.unsubscribe()
    verdict, problems = await audit_untouched(hub, length, metric)
    report(
        f"{user}: KV watch on {REGISTRY_STREAM} delivering to audit.entry",
        "stays in HUB; AUDIT holds only the chain; chain appends",
        f"{outcome.describe()}; "
        + ("delivered inside HUB (positive control); " if landed_in_hub else "nothing delivered in HUB; ")
        + verdict,
    )
    assert not problems
    assert outcome.refused or landed_in_hub is not None, "the watch was made but nothing reached HUB's audit.entry"


@pytest.mark.parametrize("user", ["referrals", "notifications", "auditor"])
@pytest.mark.parametrize("subject", [subjects.AUDIT_ENTRY, subjects.AUDIT_CHECKPOINT])
async def test_only_the_audit_service_publishes_on_the_audit_subjects(hub, user, subject):
    attacker = await hub.hostile_user(user)
    length, metric = await hub.audit.refresh(), hub.audit_metric()
    checkpoints = (await stream_state(hub.auditor, streams.AUDIT_CHECKPOINTS)).get("messages", 0)
    forged = b'{"type":"audit.entry","index":1}'
    stored = await attacker.attempt(subject, forged)
    core = await attacker.publish_refused(subject, forged)
    verdict, problems = await audit_untouched(hub, length, metric)
    added = (await stream_state(hub.auditor, streams.AUDIT_CHECKPOINTS)).get("messages", 0) - checkpoints
    report(
        f"{user}: publish on {subject}",
        "refused; AUDIT holds only the chain",
        f"{stored.describe()}, core publish {'violation' if core else 'NOT REFUSED'}; checkpoints +{added}; {verdict}",
    )
    assert stored.violation
    assert core
    assert added == 0
    assert not problems


# Speaking for a clinic, directly or through a consumer's deliver subject.


@pytest.mark.parametrize("service", permissions.SERVICE_USERS)
async def test_no_hub_service_can_speak_for_a_clinic_or_destroy_a_stream(hub, service):
    attacker = await hub.hostile_user(service)
    spoofed = await attacker.publish_refused(f"clinic.{A}.out.referral.request")
    before = await stream_state(hub.admin, streams.CLINIC_IN)
    prefix = HUB_PREFIX if service == "audit" else "$JS.API"
    purge = await attacker.attempt(f"{prefix}.STREAM.PURGE.CLINIC_IN")
    after = await stream_state(hub.admin, streams.CLINIC_IN)
    report(
        f"{service}: publish on clinic.{A}.out.>, {prefix}.STREAM.PURGE.CLINIC_IN",
        REFUSED,
        f"{'violation' if spoofed else 'NOT REFUSED'}, {purge.describe()}; CLINIC_IN "
        + ("unchanged" if after == before else "CHANGED"),
    )
    assert spoofed
    assert purge.refused
    assert after == before


# ops and auditor: read-only keys.


async def test_ops_reads_depths_and_lag_but_no_message(hub):
    attacker = await hub.hostile_user(permissions.OPS)
    depth = await attacker.attempt("$JS.API.STREAM.INFO.CLINIC_OUT")
    lag = await attacker.attempt("$JS.API.CONSUMER.INFO.CLINIC_OUT.referrals-intake")
    reads = [
        await attacker.attempt("$JS.API.STREAM.MSG.GET.CLINIC_OUT", {"seq": 1}),
        await attacker.attempt("$JS.API.DIRECT.GET.CLINIC_OUT", {"seq": 1}),
        await attacker.attempt("$JS.API.CONSUMER.MSG.NEXT.CLINIC_OUT.referrals-intake", {"batch": 1}),
        await attacker.attempt("$JS.API.CONSUMER.CREATE.CLINIC_IN", pushed_into("audit.entry", "CLINIC_IN")),
        await attacker.attempt("$JS.API.STREAM.DELETE.CLINIC_OUT"),
    ]
    audit = await attacker.publish_refused(subjects.AUDIT_ENTRY)
    report(
        "ops: stream and consumer info; message gets, pulls, consumer create, delete, audit.entry",
        "info answers; the rest refused",
        f"info {'answers' if not depth.refused and not lag.refused else 'REFUSED'}; {describe_all(reads)}; "
        f"audit.entry {'violation' if audit else 'NOT REFUSED'}",
    )
    assert (depth.reply or {}).get("state", {}).get("messages", 0) > 0
    assert "num_pending" in (lag.reply or {})
    assert all(read.violation for read in reads)
    assert audit


AUDITOR_ATTACKS = {
    "consumer on AUDIT": ("$JS.API.CONSUMER.CREATE.AUDIT", pushed_into("audit.entry", "AUDIT")),
    "durable on AUDIT": ("$JS.API.CONSUMER.DURABLE.CREATE.AUDIT.auditor", {"config": {"durable_name": "auditor"}}),
    "delete AUDIT": ("$JS.API.STREAM.DELETE.AUDIT", b""),
    "update AUDIT": ("$JS.API.STREAM.UPDATE.AUDIT", None),
    "purge AUDIT": ("$JS.API.STREAM.PURGE.AUDIT", b""),
    "delete an entry": ("$JS.API.STREAM.MSG.DELETE.AUDIT", {"seq": 1}),
}


@pytest.mark.parametrize(("subject", "body"), AUDITOR_ATTACKS.values(), ids=AUDITOR_ATTACKS.keys())
async def test_the_auditor_reads_the_audit_log_and_changes_nothing(hub, subject, body):
    attacker = await hub.hostile_user(permissions.AUDITOR)
    before = await stream_state(hub.auditor, streams.AUDIT)
    if body is None:  # an update that would allow deletes and shorten the retention
        body = {**before["config"], "deny_delete": False, "deny_purge": False, "max_age": 1_000_000_000}
    length, metric = await hub.audit.refresh(), hub.audit_metric()
    outcome = await attacker.attempt(subject, body)
    verdict, problems = await audit_untouched(hub, length, metric)
    after = await stream_state(hub.auditor, streams.AUDIT)
    same = after.get("config") == before.get("config") and after.get("created") == before.get("created")
    report(
        f"auditor: {subject}",
        "refused; AUDIT unchanged",
        f"{outcome.describe()}; AUDIT config {'unchanged' if same else 'CHANGED'}; {verdict}",
    )
    assert outcome.violation
    assert same
    assert not problems


# admin: the everyday operator key. Destructive attempts last.

ADMIN_AUDIT = {
    "stream info": ("$JS.API.STREAM.INFO.AUDIT", b""),
    "message get": ("$JS.API.STREAM.MSG.GET.AUDIT", {"seq": 1}),
    "direct get": ("$JS.API.DIRECT.GET.AUDIT", {"seq": 1}),
    "consumer into audit.entry": ("$JS.API.CONSUMER.CREATE.AUDIT", pushed_into("audit.entry", "AUDIT")),
    "delete": ("$JS.API.STREAM.DELETE.AUDIT", b""),
    "update": ("$JS.API.STREAM.UPDATE.AUDIT", {"name": "AUDIT", "subjects": ["audit.entry"], "max_age": 1}),
    "purge": ("$JS.API.STREAM.PURGE.AUDIT", b""),
    "entry delete": ("$JS.API.STREAM.MSG.DELETE.AUDIT", {"seq": 1}),
    "stored publish on audit.entry": ("audit.entry", b'{"type":"audit.entry","index":1}'),
}


@pytest.mark.parametrize(("subject", "body"), ADMIN_AUDIT.values(), ids=ADMIN_AUDIT.keys())
async def test_admin_cannot_reach_the_audit_log(hub, subject, body):
    attacker = await hub.hostile_user(permissions.ADMIN)
    before = await stream_state(hub.auditor, streams.AUDIT)
    length, metric = await hub.audit.refresh(), hub.audit_metric()
    outcome = await attacker.attempt(subject, body)
    verdict, problems = await audit_untouched(hub, length, metric)
    after = await stream_state(hub.auditor, streams.AUDIT)
    same = after.get("config") == before.get("config") and after.get("created") == before.get("created")
    report(
        f"admin: {subject}",
        "refused or not found (AUDIT is not in HUB); AUDIT unchanged",
        f"{outcome.describe()}; AUDIT config {'unchanged' if same else 'CHANGED'}; {verdict}",
    )
    assert outcome.refused, outcome
    assert same
    assert not problems


async def test_admin_cannot_update_a_stream_and_break_glass_can(hub):
    admin = await hub.hostile_user(permissions.ADMIN)
    glass = await hub.break_glass()
    before = await stream_state(hub.admin, streams.HUB_ADVISORIES)
    changed = {**before["config"], "description": "changed by break-glass"}
    refused = await admin.attempt(f"$JS.API.STREAM.UPDATE.{streams.HUB_ADVISORIES}", changed)
    unchanged = await stream_state(hub.admin, streams.HUB_ADVISORIES)
    allowed = await glass.attempt(f"$JS.API.STREAM.UPDATE.{streams.HUB_ADVISORIES}", changed)
    updated = await stream_state(hub.admin, streams.HUB_ADVISORIES)
    restored = await glass.attempt(f"$JS.API.STREAM.UPDATE.{streams.HUB_ADVISORIES}", before["config"])
    report(
        f"admin, then break-glass: STREAM.UPDATE.{streams.HUB_ADVISORIES}",
        "admin refused; break-glass updates",
        f"admin: {refused.describe()}; break-glass: {allowed.describe()}, "
        f"description {updated['config'].get('description', '')!r}",
    )
    assert refused.refused, refused
    assert unchanged == before
    assert not allowed.refused, allowed
    assert updated["config"].get("description") == "changed by break-glass"
    assert not restored.refused


ADMIN_DESTRUCTIVE = {
    **{
        f"delete {stream}": (f"$JS.API.STREAM.DELETE.{stream}", b"", stream)
        for stream in (
            streams.CLINIC_OUT,
            streams.CLINIC_IN,
            streams.HUB_EVENTS,
            streams.HUB_DEADLETTER,
            streams.HUB_ADVISORIES,
            *(f"KV_{config.bucket}" for config in topology.kv_configs()),
        )
    },
    "update CLINIC_IN": ("$JS.API.STREAM.UPDATE.CLINIC_IN", None, streams.CLINIC_IN),
    "purge CLINIC_OUT": ("$JS.API.STREAM.PURGE.CLINIC_OUT", b"", streams.CLINIC_OUT),
    "purge the registry": (f"$JS.API.STREAM.PURGE.{REGISTRY_STREAM}", b"", REGISTRY_STREAM),
    "delete a message": ("$JS.API.STREAM.MSG.DELETE.CLINIC_IN", {"seq": 1}, streams.CLINIC_IN),
    "snapshot CLINIC_IN": ("$JS.API.STREAM.SNAPSHOT.CLINIC_IN", {"deliver_subject": "_INBOX.hub.admin.snap"}, None),
    "restore CLINIC_IN": ("$JS.API.STREAM.RESTORE.CLINIC_IN", {"config": {"name": "CLINIC_IN"}}, None),
    "delete referrals-intake": ("$JS.API.CONSUMER.DELETE.CLINIC_OUT.referrals-intake", b"", None),
    "pause referrals-intake": ("$JS.API.CONSUMER.PAUSE.CLINIC_OUT.referrals-intake", PAUSE, None),
}


@pytest.mark.parametrize(("subject", "body", "stream"), ADMIN_DESTRUCTIVE.values(), ids=ADMIN_DESTRUCTIVE.keys())
async def test_admin_cannot_destroy_or_reconfigure(hub, subject, body, stream):
    attacker = await hub.hostile_user(permissions.ADMIN)
    watched = stream or streams.CLINIC_OUT
    before = await stream_state(hub.admin, watched)
    durable = await consumer_state(hub.admin, streams.CLINIC_OUT, REFERRALS_INTAKE.durable)
    if body is None:  # an update that would expire every inbox message within a second
        body = {**before["config"], "max_age": 1_000_000_000}
    outcome = await attacker.attempt(subject, body)
    after = await stream_state(hub.admin, watched)
    durable_after = await consumer_state(hub.admin, streams.CLINIC_OUT, REFERRALS_INTAKE.durable)
    report(
        f"admin: {subject}",
        REFUSED,
        f"{outcome.describe()}; {watched} {'unchanged' if after == before else 'CHANGED'}, "
        f"referrals-intake {'unchanged' if durable_after == durable else 'CHANGED'}",
    )
    assert outcome.refused, outcome
    assert after == before
    assert durable_after == durable


async def test_the_hub_still_works_after_every_attack(hub):
    request = referral_request(A, B, patient_ref="pt-last")
    sender = await hub.clinic(A)
    answer = await sender.send_and_confirm(request)
    length = await hub.audit.refresh()
    report(
        "after every attack on this hub: a clinic's referral",
        "confirmed; the chain verifies",
        f"answer {type(answer.message).__name__}; {length} entries, {'verifies' if hub.audit.intact else 'BROKEN'}",
    )
    assert hub.audit.intact
