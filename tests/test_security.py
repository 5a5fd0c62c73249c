"""Clinic isolation, enforced by a real nats-server running the generated authorization.

Every test in this module runs against a server configured by ``runtime.natsconfig``: the
hub's services, the operator and each clinic connect with their own nkey.
"""

from __future__ import annotations

import asyncio
import json
import stat

import msgspec
import nats
import nats.errors
import pytest
from nats.js import api
from nats.js.errors import APIError

from referral_hub.audit.domain import SECURITY_ALERT
from referral_hub.client import ClinicClient
from referral_hub.contracts.alerts import AlertRaised
from referral_hub.contracts.audit import AuditOutcome
from referral_hub.contracts.base import Modality
from referral_hub.contracts.plans import PlanUpdated
from referral_hub.contracts.referrals import ReferralRequested
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.runtime import credentials, natsauth, topology
from referral_hub.runtime.admission import BURST_ENV, MAX_COMMAND_BYTES, RATE_ENV
from referral_hub.runtime.natsconfig import generate
from referral_hub.runtime.registry import load_registry_file

from .helpers import (
    audit_entries,
    connect_as_clinic,
    dead_letters,
    eventually,
    referral_request,
    secure_server,
    stream_messages,
    wait_idle,
)
from .test_alerts import PATIENT, anticoagulant_alert, team_through_referral
from .test_lifecycle import plan

CLINICS = [clinic.id for clinic in load_registry_file().clinics]
A, B = "harbor-pt", "lotus-acu"
REFUSED = (nats.errors.TimeoutError, nats.errors.NoRespondersError)
"""A request the server refused to route never gets its answer."""


@pytest.fixture
def nats_server(tmp_path, monkeypatch):
    server = secure_server(tmp_path, monkeypatch, CLINICS)
    server.start()
    yield server
    server.stop()


def violations(errors: list[Exception]) -> str:
    return "\n".join(str(error).lower() for error in errors)


async def until_violation(errors: list[Exception], text: str) -> None:
    async def seen() -> bool:
        return text.lower() in violations(errors)

    await eventually(seen, timeout=5)


async def test_a_clinic_cannot_subscribe_to_another_clinics_inbox(nats_server, provisioned):
    errors: list[Exception] = []
    clinic_a = await connect_as_clinic(nats_server.url, A, errors)
    subscription = await clinic_a.subscribe(f"clinic.{B}.in.>")
    await provisioned.publish(f"clinic.{B}.in.rejection", b"meant for B only")
    await until_violation(errors, f'permissions violation for subscription to "clinic.{B}.in.>"')
    with pytest.raises(nats.errors.TimeoutError):
        await subscription.next_msg(timeout=0.3)
    await clinic_a.close()


@pytest.mark.usefixtures("provisioned")
async def test_a_clinic_cannot_create_a_consumer_on_another_clinics_subjects(nats_server):
    errors: list[Exception] = []
    clinic_a = await connect_as_clinic(nats_server.url, A, errors)
    js = clinic_a.jetstream(timeout=0.5)
    theirs = api.ConsumerConfig(name="peek", filter_subject=f"clinic.{B}.in.>", deliver_subject=clinic_a.new_inbox())
    with pytest.raises(REFUSED):
        await js.add_consumer(topology.CLINIC_IN, theirs)
    await until_violation(errors, f"$js.api.consumer.create.clinic_in.peek.clinic.{B}.in.>")
    with pytest.raises(REFUSED):
        await js.add_consumer(topology.CLINIC_IN, api.ConsumerConfig(deliver_subject=clinic_a.new_inbox()))
    await until_violation(errors, 'permissions violation for publish to "$js.api.consumer.create.clinic_in"')
    await clinic_a.close()


@pytest.mark.parametrize(
    "config",
    [
        {"filter_subject": f"clinic.{B}.in.>"},
        {"filter_subjects": [f"clinic.{A}.in.>", f"clinic.{B}.in.>"]},
        {"filter_subject": ">"},
    ],
    ids=["other-filter", "extra-filter", "everything"],
)
async def test_a_consumer_request_cannot_widen_the_filter_its_subject_names(nats_server, provisioned, config):
    errors: list[Exception] = []
    clinic_a = await connect_as_clinic(nats_server.url, A, errors)
    request = {
        "stream_name": topology.CLINIC_IN,
        "config": {"name": "sneak", "deliver_subject": clinic_a.new_inbox(), "ack_policy": "none", **config},
    }
    reply = await clinic_a.request(
        f"$JS.API.CONSUMER.CREATE.{topology.CLINIC_IN}.sneak.clinic.{A}.in.>", json.dumps(request).encode(), timeout=2
    )
    assert "error" in json.loads(reply.data)
    names = await provisioned.jetstream().consumers_info(topology.CLINIC_IN)
    assert "sneak" not in {info.name for info in names}
    await clinic_a.close()


READS = {
    "inbox message": lambda js: js.get_msg(topology.CLINIC_IN, 1),
    "inbox direct get": lambda js: js.get_msg(topology.CLINIC_IN, 1, direct=True),
    "inbox stream info": lambda js: js.stream_info(topology.CLINIC_IN),
    "audit message": lambda js: js.get_msg(topology.AUDIT, 1),
    "audit stream info": lambda js: js.stream_info(topology.AUDIT),
    "out stream message": lambda js: js.get_msg(topology.CLINIC_OUT, 1),
    "audit consumer pull": lambda js: js._nc.request(  # noqa: SLF001 - the raw API request a hostile client would send
        f"$JS.API.CONSUMER.MSG.NEXT.{topology.CLINIC_OUT}.audit-clinic-out", b'{"batch":1}', timeout=0.5
    ),
    "consumer info": lambda js: js.consumer_info(topology.CLINIC_OUT, "referrals-intake"),
    "registry": lambda js: js.get_msg(f"KV_{topology.REGISTRY_KV}", 1),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
@pytest.mark.usefixtures("provisioned")
async def test_a_clinic_cannot_read_streams_directly(nats_server, hub, read):
    sender = await hub.clinic(B)
    await sender.send_and_confirm(referral_request(B, A, patient_ref="pt-private"))
    errors: list[Exception] = []
    clinic_a = await connect_as_clinic(nats_server.url, A, errors)
    with pytest.raises(REFUSED):
        await read(clinic_a.jetstream(timeout=0.5))
    await until_violation(errors, "permissions violation for publish to")
    await clinic_a.close()


async def test_a_clinic_cannot_publish_on_another_clinics_out_subjects(nats_server, provisioned):
    errors: list[Exception] = []
    clinic_a = await connect_as_clinic(nats_server.url, A, errors)
    spoof = msgspec.json.encode(referral_request(B, A))
    with pytest.raises(REFUSED):
        await clinic_a.jetstream(timeout=0.5).publish(f"clinic.{B}.out.referral.request", spoof)
    await clinic_a.publish(f"clinic.{B}.out.referral.request", spoof)
    await until_violation(errors, f'permissions violation for publish to "clinic.{B}.out.referral.request"')
    assert await stream_messages(provisioned, topology.CLINIC_OUT) == []
    await clinic_a.close()


@pytest.mark.parametrize(
    "subject",
    [
        "hub.event.referral.requested",
        f"clinic.{B}.in.rejection",
        f"clinic.{A}.in.rejection",
        "hub.deadletter.referrals",
        "audit.entry",
        f"$KV.{topology.REGISTRY_KV}.{A}",
        f"$KV.{topology.CARETEAMS_KV}.anything",
        f"$JS.API.STREAM.DELETE.{topology.AUDIT}",
        f"$JS.API.STREAM.PURGE.{topology.CLINIC_IN}",
    ],
)
@pytest.mark.usefixtures("provisioned")
async def test_a_clinic_cannot_publish_on_internal_subjects(nats_server, subject):
    errors: list[Exception] = []
    clinic_a = await connect_as_clinic(nats_server.url, A, errors)
    await clinic_a.publish(subject, b"{}")
    await until_violation(errors, f'permissions violation for publish to "{subject.lower()}"')
    await clinic_a.close()


@pytest.mark.parametrize("service", natsauth.SERVICE_USERS)
async def test_no_hub_service_can_speak_for_a_clinic_or_destroy_a_stream(nats_server, provisioned, service):
    errors: list[Exception] = []

    async def collect(error: Exception) -> None:
        errors.append(error)

    connection = await nats.connect(
        nats_server.url, error_cb=collect, **credentials.for_hub_user(service).connect_options()
    )
    await connection.publish(f"clinic.{A}.out.referral.request", b"{}")
    await until_violation(errors, f'permissions violation for publish to "clinic.{A}.out.referral.request"')
    with pytest.raises(REFUSED):
        await connection.jetstream(timeout=0.5).purge_stream(topology.CLINIC_IN)
    await until_violation(errors, "$js.api.stream.purge.clinic_in")
    await connection.close()
    assert (await provisioned.jetstream().stream_info(topology.CLINIC_IN)).config.name == topology.CLINIC_IN


@pytest.mark.usefixtures("provisioned")
async def test_ops_reads_depths_and_lag_but_no_message(nats_server, hub):
    await (await hub.clinic(A)).send_and_confirm(referral_request(A, B))
    errors: list[Exception] = []

    async def collect(error: Exception) -> None:
        errors.append(error)

    ops = await nats.connect(
        nats_server.url, error_cb=collect, **credentials.for_hub_user(natsauth.OPS).connect_options()
    )
    js = ops.jetstream(timeout=0.5)
    assert (await js.stream_info(topology.CLINIC_OUT)).state.messages == 1
    assert (await js.consumer_info(topology.CLINIC_OUT, "referrals-intake")).num_pending == 0
    with pytest.raises(REFUSED):
        await js.get_msg(topology.CLINIC_OUT, 1)
    await until_violation(errors, "$js.api.stream.msg.get.clinic_out")
    await ops.close()


async def refusal(url: str, **options: object) -> str:
    """The server's reason for refusing a connection, or "" if it was accepted.

    The server may close the socket before nats-py reads its ``-ERR`` line, which shows as
    a reset connection; that attempt says nothing, so it is made again.
    """
    for _ in range(10):
        try:
            connection = await nats.connect(url, allow_reconnect=False, connect_timeout=2, **options)
        except nats.errors.Error as exc:
            return str(exc)
        except ConnectionResetError:
            await asyncio.sleep(0.05)
            continue
        await connection.close()
        return ""
    return "reset every time"


async def test_a_connection_without_a_registered_key_is_refused(nats_server, tmp_path):
    assert "Authorization Violation" in await refusal(nats_server.url)
    stranger = tmp_path / "stranger.nk"
    credentials.write_secret(stranger, credentials.new_user_seed())
    assert "Authorization Violation" in await refusal(nats_server.url, nkeys_seed=str(stranger))


@pytest.mark.usefixtures("nats_server", "provisioned")
async def test_a_clinic_with_its_own_key_sends_and_reads_only_its_inbox(hub):
    sender, recipient = await hub.clinic(A), await hub.clinic(B)
    request = referral_request(A, B)
    answer = await sender.send_and_confirm(request)
    assert isinstance(answer.message, ReferralRequested)
    received = [item.message async for item in recipient.inbox()]
    assert [message.referral_id for message in received if isinstance(message, ReferralRequested)] == [
        request.referral_id
    ]
    assert await recipient.inbox_count() == len(received)
    beat = await asyncio.wait_for(anext(recipient.heartbeats()), timeout=30)
    assert beat.clinic == B


@pytest.mark.usefixtures("nats_server")
async def test_a_spoofed_sender_is_rejected_and_audited_as_a_security_alert(provisioned, hub):
    spoofer = await hub.clinic(A)
    spoof = referral_request(B, "kneadwell-massage", actor="raj.patel")
    await spoofer.publish_raw("referral.request", msgspec.json.encode(spoof), msg_id=str(spoof.message_id))
    await wait_idle(provisioned)

    async def rejected() -> list[Rejection]:
        return [item.message async for item in spoofer.inbox() if isinstance(item.message, Rejection)]

    rejection = (await eventually(rejected))[0]
    assert rejection.code is RejectionCode.SENDER_MISMATCH
    assert [letter.code for letter in await dead_letters(provisioned)] == [RejectionCode.SENDER_MISMATCH]

    async def security_entries():
        entries = await audit_entries(provisioned)
        return [entry for entry in entries if entry.action == SECURITY_ALERT]

    alert = (await eventually(security_entries))[0]
    assert (alert.clinic, alert.rejection_code, alert.outcome) == (A, "sender_mismatch", AuditOutcome.REJECTED)
    assert await (await hub.clinic(B)).inbox_count() == 0


@pytest.fixture
def tight_rate_limit(monkeypatch):
    monkeypatch.setenv(RATE_ENV, "1")
    monkeypatch.setenv(BURST_ENV, "3")


@pytest.mark.usefixtures("tight_rate_limit", "nats_server")
async def test_a_flooding_clinic_gets_rate_limited_rejections_not_silence(provisioned, hub):
    flooder = await hub.clinic(A)
    requests = [referral_request(A, B, patient_ref=f"pt-{n:04d}") for n in range(12)]
    await asyncio.gather(*(flooder.send(request) for request in requests))
    await wait_idle(provisioned, timeout=20)
    answers = [item.message async for item in flooder.inbox()]
    limited = {m.causation_id for m in answers if isinstance(m, Rejection) and m.code is RejectionCode.RATE_LIMITED}
    accepted = {m.causation_id for m in answers if isinstance(m, ReferralRequested)}
    assert len(accepted) >= 3
    assert len(limited) >= 6
    assert limited | accepted == {request.message_id for request in requests}
    letters = [letter for letter in await dead_letters(provisioned) if letter.code is RejectionCode.RATE_LIMITED]
    assert len(letters) == len(limited)


@pytest.mark.usefixtures("nats_server")
async def test_an_oversized_submission_gets_a_typed_rejection(provisioned, hub):
    sender = await hub.clinic(A)
    bloated = referral_request(A, B, reason="x" * 100)
    payload = msgspec.json.encode(bloated).replace(
        b'"reason":"', b'"padding":"' + b"p" * MAX_COMMAND_BYTES + b'","reason":"'
    )
    await sender.publish_raw("referral.request", payload, msg_id=str(bloated.message_id))
    await wait_idle(provisioned)
    rejections = [item.message async for item in sender.inbox() if isinstance(item.message, Rejection)]
    assert [(r.code, r.offending_message_id) for r in rejections] == [
        (RejectionCode.MESSAGE_TOO_LARGE, str(bloated.message_id))
    ]
    assert (await dead_letters(provisioned))[0].payload == payload


async def test_a_submission_over_the_stream_limit_is_refused_at_publish(nats_server, provisioned):
    sender = await ClinicClient.connect(nats_server.url, A)
    with pytest.raises(APIError, match="message size exceeds maximum allowed"):
        await sender.publish_raw("referral.request", b"{" + b" " * (topology.CLINIC_OUT_MAX_MSG_BYTES + 1) + b"}")
    assert await stream_messages(provisioned, topology.CLINIC_OUT) == []
    await sender.close()


def test_seed_files_are_owner_only_and_the_server_config_holds_no_secret(tmp_path):
    written = generate(tmp_path, CLINICS, natsauth.ServerOptions(store_dir=str(tmp_path / "js")))
    seeds = sorted(tmp_path.glob("*/*.nk"))
    assert len(seeds) == len(CLINICS) + len(natsauth.HUB_USERS)
    config = written.config_file.read_text()
    for seed in seeds:
        assert stat.S_IMODE(seed.stat().st_mode) == 0o600
        secret = seed.read_text().strip()
        assert secret.startswith("SU")
        assert secret not in config
        assert credentials.public_key(secret.encode()) in config


def test_rotating_one_clinic_replaces_its_seed_and_keeps_the_others(tmp_path):
    options = natsauth.ServerOptions(store_dir=str(tmp_path / "js"))
    generate(tmp_path, CLINICS, options)
    before = {path.name: path.read_text() for path in tmp_path.glob("*/*.nk")}
    generate(tmp_path, CLINICS, options, rotate=[A])
    after = {path.name: path.read_text() for path in tmp_path.glob("*/*.nk")}
    assert {name for name in before if before[name] != after[name]} == {f"{A}.nk"}


async def test_a_rotated_key_is_refused_after_reload_and_the_new_one_works(nats_server, tmp_path):
    old_seed = tmp_path / "old.nk"
    credentials.write_secret(old_seed, credentials.clinic_seed_path(tmp_path / "auth", A).read_bytes())
    written = generate(
        tmp_path / "auth", CLINICS, natsauth.ServerOptions(store_dir=str(tmp_path / "unused")), rotate=[A]
    )
    nats_server.reload(written.auth_block)

    async def old_key_refused() -> bool:
        return "Authorization Violation" in await refusal(nats_server.url, nkeys_seed=str(old_seed))

    await eventually(old_key_refused)
    client = await ClinicClient.connect(nats_server.url, A)
    assert client.connection.is_connected
    await client.close()


async def test_no_secret_reaches_a_log_line(nats_server, provisioned, hub, capfd, tmp_path):
    await (await hub.clinic(A)).send_and_confirm(referral_request(A, B))
    spoof = referral_request(B, A)
    await (await hub.clinic(A)).publish_raw("referral.request", msgspec.json.encode(spoof))
    await wait_idle(provisioned)
    captured = capfd.readouterr()
    logged = captured.out + captured.err + (nats_server.data_dir / "nats-server.log").read_text()
    assert "rejection_code" in logged
    for seed in (tmp_path / "auth").glob("*/*.nk"):
        secret = seed.read_text().strip()
        assert secret not in logged
        assert secret[2:20] not in logged


@pytest.mark.usefixtures("nats_server", "provisioned")
async def test_a_clinic_off_the_care_team_receives_nothing_about_that_patient(hub):
    outsider = "summit-chiro"
    await team_through_referral(hub, A, B, Modality.ACUPUNCTURE)
    await (await hub.clinic(B)).send(anticoagulant_alert(B))
    await (await hub.clinic(B)).send(plan(B, 1, patient_ref=PATIENT))
    await wait_idle(hub.connection)

    about_patient = [
        item.message
        async for item in (await hub.clinic(outsider)).inbox()
        if getattr(item.message, "patient_ref", None) == PATIENT
    ]
    assert about_patient == []
    member_saw = {type(item.message) async for item in (await hub.clinic(A)).inbox()}
    assert {AlertRaised, PlanUpdated} <= member_saw
