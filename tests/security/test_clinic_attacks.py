"""A partner clinic with valid credentials, attacking the hub with raw nats-py.

A clinic's account has no JetStream and imports only its own subjects, its inbox
consumer's ``MSG.NEXT`` and ``ACK`` and its inbox read request (``runtime.broker.permissions``). Every
attack here is refused by the server, and each test shows that nothing changed: consumer
configurations, the streams an attack aimed at, and the audit chain, which keeps appending
and verifying.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import msgspec
import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from referral_hub.client import ClinicClient
from referral_hub.contracts.codec import decode_hub_message
from referral_hub.contracts.inbox import InboxHeartbeat
from referral_hub.contracts.referrals import ReferralRequested
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.jetstream import streams, subjects, topology
from tests.helpers import eventually, referral_request, refusal

from .hostile import (
    AttackedHub,
    Outcome,
    consumer_names,
    consumer_state,
    describe_all,
    messages_on,
    report,
    strays,
    stream_state,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

A, B = "harbor-pt", "lotus-acu"
CAPPED = "riverside-wellness"
"""Only the account-limit tests connect as this clinic, so its connections and subscriptions are theirs."""
REFUSED = "refused; nothing changed"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(secured_hub: AttackedHub) -> AttackedHub:
    """The module's hub, with messages in A's and B's inboxes (a push consumer would have work to do)."""
    for sender, recipient in ((B, A), (A, B)):
        failure = await secured_hub.positive_control(sender, recipient)
        assert not failure, failure
    return secured_hub


class Taps:
    """Interest on the subjects attacks aim at, as an operator's ``nats sub`` or a clinic's own reader gives.

    nats-server delivers a push consumer's messages only while a client subscribes to its
    literal deliver subject (a stream capturing it is not enough, nor is a wildcard
    subscription); these make sure that, had an attack created one, its deliveries would
    really have landed.
    """

    def __init__(self) -> None:
        self.beats: list[Msg] = []

    async def beat(self, message: Msg) -> None:
        self.beats.append(message)

    def foreign_beats(self) -> list[bytes]:
        foreign = []
        for message in self.beats:
            try:
                beat = decode_hub_message(message.data)
            except Exception:  # noqa: BLE001 - anything that does not decode is foreign
                foreign.append(message.data)
                continue
            if not isinstance(beat, InboxHeartbeat) or beat.clinic != B:
                foreign.append(message.data)
        return foreign


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def taps(hub: AttackedHub) -> Taps:
    found = Taps()
    audit_account = await hub.break_glass(permissions.AUDIT_BREAK_GLASS)
    for subject in (subjects.AUDIT_ENTRY, subjects.AUDIT_CHECKPOINT):
        await audit_account.connection.subscribe(subject)
    for subject in (f"clinic.{B}.out.x", "hub.event.x", f"$KV.{topology.REGISTRY_KV}.x"):
        await hub.admin.subscribe(subject)
    own = await hub.hostile_clinic(B)
    await own.connection.subscribe(subjects.clinic_heartbeat(B), cb=found.beat)
    await own.connection.flush()
    await eventually(lambda: _true(len(found.beats) > 0))
    return found


async def _true(value: bool) -> bool:  # noqa: FBT001 - a probe for eventually
    return value


# 1. A push consumer's deliver_subject aimed at the hub's own subjects.

DELIVER_TARGETS = {
    "audit.entry": (None, ""),
    "audit.checkpoint": (streams.AUDIT_CHECKPOINTS, "audit.checkpoint"),
    f"clinic.{B}.heartbeat": (None, ""),
    f"clinic.{B}.out.x": (streams.CLINIC_OUT, f"clinic.{B}.out.x"),
    "hub.event.x": (streams.HUB_EVENTS, "hub.event.x"),
    f"$KV.{topology.REGISTRY_KV}.x": (f"KV_{topology.REGISTRY_KV}", f"$KV.{topology.REGISTRY_KV}.x"),
}


async def stored_at(hub: AttackedHub, target: str) -> int:
    """Messages stored by the stream that captures ``target``: on it, or under any subject foreign to that stream."""
    stream, subject = DELIVER_TARGETS[target]
    if stream is None:
        return 0
    if stream == streams.AUDIT_CHECKPOINTS:
        return (await stream_state(hub.auditor, stream)).get("messages", 0)
    return await messages_on(hub.admin, stream, subject) + sum((await strays(hub.admin, stream)).values())


def push_consumer(name: str, target: str) -> dict[str, Any]:
    return {
        "name": name,
        "filter_subject": subjects.clinic_inbox(A),
        "deliver_subject": target,
        "ack_policy": "none",
        "deliver_policy": "all",
    }


@pytest.mark.parametrize("target", DELIVER_TARGETS)
async def test_a_clinic_cannot_aim_a_push_consumer_at_a_hub_subject(hub, taps, target):
    attacker = await hub.hostile_clinic(A)
    consumers = await consumer_names(hub.admin, streams.CLINIC_IN)
    length, metric, stored = await hub.audit.refresh(), hub.audit_metric(), await stored_at(hub, target)
    name = f"tap-{list(DELIVER_TARGETS).index(target)}"
    config = push_consumer(name, target)
    body = {"stream_name": streams.CLINIC_IN, "config": config}
    durable = {"stream_name": streams.CLINIC_IN, "config": {**config, "durable_name": name}}
    outcomes = [
        # The form the old per-clinic permission admitted: the clinic's own filter in the API subject.
        await attacker.attempt(f"$JS.API.CONSUMER.CREATE.{streams.CLINIC_IN}.{name}.clinic.{A}.in.>", body),
        await attacker.attempt(f"$JS.API.CONSUMER.CREATE.{streams.CLINIC_IN}", body),
        await attacker.attempt(f"$JS.API.CONSUMER.DURABLE.CREATE.{streams.CLINIC_IN}.{name}", durable),
    ]
    beats = len(taps.beats)
    control = await hub.positive_control(B, A)  # A's inbox grows: a consumer would have pushed this too
    await eventually(lambda: _true(len(taps.beats) > beats + 1))  # B's heartbeat subscription is live
    added = await consumer_names(hub.admin, streams.CLINIC_IN) - consumers
    grown, delta = hub.audit.read_to - length, hub.audit_metric() - metric
    foreign = [*hub.audit.foreign, *(f"heartbeat {data[:50]!r}" for data in taps.foreign_beats())]
    landed = await stored_at(hub, target) - stored
    report(
        f"clinic {A}: push consumer on its inbox delivering to {target}",
        "refused; no consumer; nothing stored; chain appends",
        f"{describe_all(outcomes)}; consumers added: {sorted(added) or 'none'}; stored at target: +{landed}; "
        f"chain +{grown} entries, metric +{delta:g}, {'verifies' if hub.audit.intact else 'BROKEN'}"
        + (f"; FOREIGN: {foreign[0]}" if foreign else "")
        + (f"; CONTROL: {control}" if control else ""),
    )
    assert all(outcome.refused for outcome in outcomes), outcomes
    assert not added
    assert landed == 0
    assert not foreign
    assert not control
    assert grown > 0
    assert hub.audit.intact
    assert delta == grown


# 2. Creating or updating a consumer that carries a hub durable's name.


def hijacked(spec: topology.ConsumerSpec, **changes: Any) -> dict[str, Any]:
    """The durable's own configuration with ``changes``: what an update would install."""
    config = json.loads(json.dumps(spec.config().as_dict()))
    config.pop("filter_subjects", None)
    config.update(changes)
    return config


AUDIT_CLINIC_IN = next(spec for spec in topology.AUDIT_CONSUMERS if spec.stream == streams.CLINIC_IN)
INBOX_B = topology.clinic_inbox_consumer(B)
HUB_DURABLES = {
    "audit-clinic-in, filtered create": (
        AUDIT_CLINIC_IN,
        f"$JS.API.CONSUMER.CREATE.{streams.CLINIC_IN}.{AUDIT_CLINIC_IN.durable}.clinic.{A}.in.>",
        hijacked(AUDIT_CLINIC_IN, filter_subject=subjects.clinic_inbox(A)),
    ),
    "audit-clinic-in, durable create": (
        AUDIT_CLINIC_IN,
        f"$JS.API.CONSUMER.DURABLE.CREATE.{streams.CLINIC_IN}.{AUDIT_CLINIC_IN.durable}",
        hijacked(AUDIT_CLINIC_IN, max_ack_pending=1),
    ),
    "referrals-intake, filtered create": (
        topology.REFERRALS_INTAKE,
        f"$JS.API.CONSUMER.CREATE.{streams.CLINIC_OUT}.referrals-intake.clinic.{A}.out.>",
        hijacked(topology.REFERRALS_INTAKE, filter_subject=subjects.clinic_out(A, ">")),
    ),
    "referrals-intake, durable create": (
        topology.REFERRALS_INTAKE,
        f"$JS.API.CONSUMER.DURABLE.CREATE.{streams.CLINIC_OUT}.referrals-intake",
        hijacked(topology.REFERRALS_INTAKE, max_deliver=1),
    ),
    f"inbox-{B} retargeted at A's inbox": (
        INBOX_B,
        f"$JS.API.CONSUMER.CREATE.{streams.CLINIC_IN}.{INBOX_B.durable}.clinic.{A}.in.>",
        hijacked(INBOX_B, filter_subject=subjects.clinic_inbox(A)),
    ),
}


@pytest.mark.parametrize(("spec", "subject", "config"), HUB_DURABLES.values(), ids=HUB_DURABLES.keys())
async def test_a_clinic_cannot_create_or_update_a_hub_durable(hub, spec, subject, config):
    attacker = await hub.hostile_clinic(A)
    before = await consumer_state(hub.admin, spec.stream, spec.durable)
    outcome = await attacker.attempt(subject, {"stream_name": spec.stream, "config": config})
    after = await consumer_state(hub.admin, spec.stream, spec.durable)
    control = await hub.positive_control(A, B)  # B's inbox delivery is still audited, through audit-clinic-in
    report(
        f"clinic {A}: {subject.removeprefix('$JS.API.')} ({spec.durable})",
        REFUSED,
        f"{outcome.describe()}; {spec.durable} {'unchanged' if after == before else 'CHANGED'}"
        + (f"; CONTROL: {control}" if control else ""),
    )
    assert outcome.refused, outcome
    assert after == before
    assert not control


# 3. Resource exhaustion: consumers, connections, subscriptions.


async def test_a_clinic_cannot_create_consumers_in_bulk(hub):
    attacker = await hub.hostile_clinic(A)
    before = {stream: await consumer_names(hub.admin, stream) for stream in (streams.CLINIC_IN, streams.CLINIC_OUT)}
    outcomes = await asyncio.gather(
        *(
            attacker.attempt(
                f"$JS.API.CONSUMER.CREATE.{streams.CLINIC_IN}.flood-{n}.clinic.{A}.in.>",
                {
                    "stream_name": streams.CLINIC_IN,
                    "config": {"name": f"flood-{n}", "filter_subject": f"clinic.{A}.in.>"},
                },
            )
            for n in range(50)
        )
    )
    after = {stream: await consumer_names(hub.admin, stream) for stream in before}
    added = sorted(name for stream in before for name in after[stream] - before[stream])
    report(
        f"clinic {A}: 50 consumer creations in a loop",
        "all refused; none created",
        f"{describe_all(list(outcomes))}; created: {len(added)}",
    )
    assert all(outcome.refused for outcome in outcomes)
    assert not added


async def test_a_clinic_cannot_open_more_connections_than_its_account_allows(hub):
    limit = permissions.AccountLimits().max_connections
    options = credentials.for_clinic(CAPPED).connect_options()
    opened = []
    try:
        for _ in range(limit):
            connection = await nats.connect(hub.url, allow_reconnect=False, connect_timeout=2, **options)
            opened.append(connection)
        refused = await refusal(hub.url, **options)
        await opened.pop().close()
        readmitted = await refusal(hub.url, **options)
    finally:
        for connection in opened:
            await connection.close()
    report(
        f"clinic {CAPPED}: connection {limit + 1} while {limit} are open",
        "refused by the server; one more after one closes",
        f"{len(opened) + 1} accepted, then: {refused or 'ACCEPTED'}; after one closed: {readmitted or 'accepted'}",
    )
    assert "maximum account active connections exceeded" in refused
    assert readmitted == ""


async def test_a_clinic_cannot_hold_more_subscriptions_than_its_account_allows(hub):
    limit = permissions.AccountLimits().max_subscriptions
    connection = await nats.connect(hub.url, allow_reconnect=False, **credentials.for_clinic(CAPPED).connect_options())
    try:
        prefix = permissions.clinic_inbox_prefix(CAPPED)
        for n in range(limit):
            await connection.subscribe(f"{prefix}.many.{n}")
        await connection.flush()
        within = connection.is_connected
        await connection.subscribe(f"{prefix}.many.{limit}")
        with contextlib.suppress(nats.errors.Error):
            await connection.flush()

        async def closed() -> bool:
            return connection.is_closed

        with contextlib.suppress(AssertionError):
            await eventually(closed, timeout=5)
        error = str(connection.last_error or "")
    finally:
        await connection.close()
    report(
        f"clinic {CAPPED}: subscription {limit + 1} on one account",
        "refused by the server",
        f"{limit} accepted ({'connected' if within else 'DISCONNECTED'}), then: {error or 'ACCEPTED'}",
    )
    assert within
    assert "maximum subscriptions exceeded" in error


# 6. Reading another clinic's inbox.


async def test_a_clinic_cannot_ask_the_hub_for_another_clinics_inbox(hub):
    attacker = await hub.hostile_clinic(A)
    theirs = await attacker.attempt(subjects.inbox_read(B), {"after": 0, "limit": 100})
    mine = await attacker.attempt(subjects.inbox_read(A), {"after": 0, "limit": 100})
    report(
        f"clinic {A}: request {subjects.inbox_read(B)}",
        "refused; no data (its own read answers)",
        f"{theirs.describe()}; its own read: {len((mine.reply or {}).get('messages', []))} messages",
    )
    assert theirs.violation
    assert mine.reply is not None
    assert mine.reply["messages"], "positive control: A's own inbox read returns its messages"


async def test_a_clinic_cannot_pull_another_clinics_inbox_consumer(hub):
    attacker = await hub.hostile_clinic(A)
    before = await consumer_state(hub.admin, INBOX_B.stream, INBOX_B.durable)
    pending = (await hub.admin.jetstream().consumer_info(INBOX_B.stream, INBOX_B.durable)).num_pending
    theirs = await attacker.attempt(
        f"$JS.API.CONSUMER.MSG.NEXT.{INBOX_B.stream}.{INBOX_B.durable}", {"batch": 10, "no_wait": True}
    )
    own = topology.clinic_inbox_consumer(A)
    mine = await attacker.attempt(
        f"$JS.API.CONSUMER.MSG.NEXT.{own.stream}.{own.durable}", {"batch": 1, "no_wait": True}
    )
    after = await consumer_state(hub.admin, INBOX_B.stream, INBOX_B.durable)
    still = (await hub.admin.jetstream().consumer_info(INBOX_B.stream, INBOX_B.durable)).num_pending
    report(
        f"clinic {A}: $JS.API.CONSUMER.MSG.NEXT.CLINIC_IN.inbox-{B}",
        "refused; no data (its own pull answers)",
        f"{theirs.describe()}; inbox-{B} pending {pending} -> {still}; "
        f"its own pull: {'answered with a message' if not mine.refused else mine.describe()}",
    )
    assert theirs.violation
    assert after == before
    assert still == pending
    assert not mine.refused, "positive control: A pulls its own inbox consumer"


async def test_a_clinic_cannot_acknowledge_another_clinics_messages(hub):
    recipient = await hub.clinic(B)
    own = await recipient.js.pull_subscribe_bind(durable=INBOX_B.durable, stream=INBOX_B.stream)
    try:
        (delivered,) = await own.fetch(1, timeout=5)
        attacker = await hub.hostile_clinic(A)
        refused = await attacker.publish_refused(delivered.reply, b"+ACK")
        unacked = (await hub.admin.jetstream().consumer_info(INBOX_B.stream, INBOX_B.durable)).num_ack_pending
        await delivered.ack_sync()
        acked = (await hub.admin.jetstream().consumer_info(INBOX_B.stream, INBOX_B.durable)).num_ack_pending
    finally:
        await own.unsubscribe()
    report(
        f"clinic {A}: ack of {B}'s delivered message ($JS.ACK.CLINIC_IN.inbox-{B}...)",
        "refused; still unacked until B acks",
        f"{'permissions violation' if refused else 'NO VIOLATION'}; ack pending {unacked}, after B's own ack {acked}",
    )
    assert refused
    assert unacked == 1
    assert acked == 0


async def test_a_clinic_cannot_subscribe_to_another_clinics_inbox(hub):
    attacker = await hub.hostile_clinic(A)
    refused, subscription = await attacker.subscribe_refused(subjects.clinic_inbox(B))
    recipient = await hub.hostile_clinic(B)
    genuine = await recipient.connection.subscribe(subjects.clinic_inbox(B))
    await recipient.connection.flush()
    control = await hub.positive_control(A, B)
    delivered = await genuine.next_msg(timeout=5)
    await genuine.unsubscribe()
    leaked = subscription.pending_msgs
    report(
        f"clinic {A}: subscribe clinic.{B}.in.>",
        "refused; no data (B's own subscription gets it)",
        f"{'permissions violation' if refused else 'NO VIOLATION'}; A got {leaked}; B got {delivered.subject}",
    )
    assert refused
    assert not control
    assert leaked == 0


# Carried over from tests/test_security.py: reads, spoofed publishes, internal subjects, unknown keys.

READS = {
    "inbox message": ("$JS.API.STREAM.MSG.GET.CLINIC_IN", {"seq": 1}),
    "inbox direct get": ("$JS.API.DIRECT.GET.CLINIC_IN", {"seq": 1}),
    "inbox last for B": (f"$JS.API.DIRECT.GET.CLINIC_IN.clinic.{B}.in.referral.requested", b""),
    "inbox stream info": ("$JS.API.STREAM.INFO.CLINIC_IN", b""),
    "audit message": ("$JS.API.STREAM.MSG.GET.AUDIT", {"seq": 1}),
    "audit stream info": ("$JS.API.STREAM.INFO.AUDIT", b""),
    "out stream message": ("$JS.API.STREAM.MSG.GET.CLINIC_OUT", {"seq": 1}),
    "audit consumer pull": ("$JS.API.CONSUMER.MSG.NEXT.CLINIC_OUT.audit-clinic-out", {"batch": 1}),
    "consumer info": ("$JS.API.CONSUMER.INFO.CLINIC_OUT.referrals-intake", b""),
    "registry": (f"$JS.API.DIRECT.GET.KV_{topology.REGISTRY_KV}", {"seq": 1}),
    "stream list": ("$JS.API.STREAM.LIST", b""),
    "account info": ("$JS.API.INFO", b""),
}


@pytest.mark.parametrize(("subject", "body"), READS.values(), ids=READS.keys())
async def test_a_clinic_cannot_read_streams_directly(hub, subject, body):
    attacker = await hub.hostile_clinic(A)
    outcome: Outcome = await attacker.attempt(subject, body)
    report(f"clinic {A}: {subject}", "refused; no data", outcome.describe())
    assert outcome.violation


async def test_a_clinic_cannot_publish_on_another_clinics_out_subjects(hub):
    attacker = await hub.hostile_clinic(A)
    spoof = referral_request(B, A, patient_ref="pt-spoof")
    before = await messages_on(hub.admin, streams.CLINIC_OUT, subjects.clinic_out(B, ">"))
    stored = await attacker.attempt(subjects.clinic_out(B, "referral.request"), msgspec.json.encode(spoof))
    core = await attacker.publish_refused(subjects.clinic_out(B, "referral.request"), msgspec.json.encode(spoof))
    control = await hub.positive_control(B, A)  # B's own submission is stored: exactly one more
    after = await messages_on(hub.admin, streams.CLINIC_OUT, subjects.clinic_out(B, ">"))
    report(
        f"clinic {A}: publish on clinic.{B}.out.referral.request",
        "refused; only B's own message stored",
        f"{stored.describe()}, core publish {'violation' if core else 'NOT REFUSED'}; clinic.{B}.out +{after - before}",
    )
    assert stored.violation
    assert core
    assert not control
    assert after == before + 1


INTERNAL_SUBJECTS = [
    "hub.event.referral.requested",
    f"clinic.{B}.in.rejection",
    f"clinic.{A}.in.rejection",
    f"clinic.{B}.heartbeat",
    f"clinic.{A}.heartbeat",
    "hub.deadletter.referrals",
    subjects.AUDIT_ENTRY,
    subjects.AUDIT_CHECKPOINT,
    f"$KV.{topology.REGISTRY_KV}.{A}",
    f"$KV.{topology.CARETEAMS_KV}.anything",
    f"$JS.API.STREAM.DELETE.{streams.AUDIT}",
    f"$JS.API.STREAM.PURGE.{streams.CLINIC_IN}",
    f"$JS.API.CONSUMER.DELETE.{streams.CLINIC_IN}.inbox-{A}",
    f"$JS.ACK.{streams.CLINIC_OUT}.referrals-intake.1.1.1.0.0",
]


@pytest.mark.parametrize("subject", INTERNAL_SUBJECTS)
async def test_a_clinic_cannot_publish_on_internal_subjects(hub, subject):
    attacker = await hub.hostile_clinic(A)
    refused = await attacker.publish_refused(subject)
    report(f"clinic {A}: publish on {subject}", "refused", "permissions violation" if refused else "NOT REFUSED")
    assert refused


async def test_a_connection_without_a_registered_key_is_refused(hub, tmp_path):
    anonymous = await refusal(hub.url)
    stranger = tmp_path / "stranger.nk"
    credentials.write_secret(stranger, credentials.new_user_seed())
    unknown = await refusal(hub.url, nkeys_seed=str(stranger))
    report(
        "no key / an unregistered nkey",
        "Authorization Violation",
        f"{anonymous or 'ACCEPTED'} / {unknown or 'ACCEPTED'}",
    )
    assert "Authorization Violation" in anonymous
    assert "Authorization Violation" in unknown


async def test_a_clinic_with_its_own_key_sends_and_reads_only_its_inbox(hub):
    sender = await ClinicClient.connect(hub.url, A)
    recipient = await ClinicClient.connect(hub.url, B)
    try:
        request = referral_request(A, B, patient_ref="pt-own-key")
        answer = await sender.send_and_confirm(request)
        received = [item.message async for item in recipient.inbox()]
        beat = await asyncio.wait_for(anext(recipient.heartbeats()), timeout=10)
    finally:
        await sender.close()
        await recipient.close()
    ids = [message.referral_id for message in received if isinstance(message, ReferralRequested)]
    report(
        "clinic with its own key: send, read its inbox, heartbeat",
        "works (positive control)",
        f"answer {type(answer.message).__name__}; inbox {len(received)} messages; heartbeat for {beat.clinic}",
    )
    assert isinstance(answer.message, ReferralRequested)
    assert request.referral_id in ids
    assert beat.clinic == B
