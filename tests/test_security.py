"""The hub's own controls on a real nats-server running the generated authorization.

Every test in this module runs against a server configured by ``runtime.broker.server_config``: the
hub's services, the operator and each clinic connect with their own nkey. Here: spoofed
senders, rate and size limits, care-team scoping, and the seeds themselves (files, rotation,
logs). What the broker itself refuses, to clinics and to each hub user, is attacked with raw
requests in ``tests/security/``.
"""

from __future__ import annotations

import asyncio
import stat

import msgspec
import pytest
from nats.js.errors import APIError

from referral_hub.audit.domain import SECURITY_ALERT
from referral_hub.client import ClinicClient
from referral_hub.contracts.alerts import AlertRaised
from referral_hub.contracts.audit import AuditOutcome
from referral_hub.contracts.base import Modality
from referral_hub.contracts.plans import PlanUpdated
from referral_hub.contracts.referrals import ReferralRequested
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.server_config import generate
from referral_hub.runtime.jetstream import streams, topology
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from referral_hub.runtime.messaging.admission import BURST_ENV, MAX_COMMAND_BYTES, RATE_ENV

from .helpers import (
    audit_entries,
    dead_letters,
    eventually,
    referral_request,
    refusal,
    secure_server,
    stream_messages,
    wait_idle,
)
from .test_alerts import PATIENT, anticoagulant_alert, team_through_referral
from .test_lifecycle import plan

CLINICS = [clinic.id for clinic in load_registry_file().clinics]
A, B = "harbor-pt", "lotus-acu"


@pytest.fixture
def nats_server(tmp_path, monkeypatch):
    server = secure_server(tmp_path, monkeypatch, CLINICS)
    server.start()
    yield server
    server.stop()


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
    assert await stream_messages(provisioned, streams.CLINIC_OUT) == []
    await sender.close()


def test_seed_files_are_owner_only_and_the_server_config_holds_no_secret(tmp_path):
    written = generate(tmp_path, CLINICS, permissions.ServerOptions(store_dir=str(tmp_path / "js")))
    seeds = sorted(tmp_path.glob("*/*.nk"))
    assert len(seeds) == len(CLINICS) + len(permissions.HUB_USERS)
    config = written.config_file.read_text()
    for seed in seeds:
        assert stat.S_IMODE(seed.stat().st_mode) == 0o600
        secret = seed.read_text().strip()
        assert secret.startswith("SU")
        assert secret not in config
        assert credentials.public_key(secret.encode()) in config


def test_rotating_one_clinic_replaces_its_seed_and_keeps_the_others(tmp_path):
    options = permissions.ServerOptions(store_dir=str(tmp_path / "js"))
    generate(tmp_path, CLINICS, options)
    before = {path.name: path.read_text() for path in tmp_path.glob("*/*.nk")}
    generate(tmp_path, CLINICS, options, rotate=[A])
    after = {path.name: path.read_text() for path in tmp_path.glob("*/*.nk")}
    assert {name for name in before if before[name] != after[name]} == {f"{A}.nk"}


async def test_a_rotated_key_is_refused_after_reload_and_the_new_one_works(nats_server, tmp_path):
    old_seed = tmp_path / "old.nk"
    credentials.write_secret(old_seed, credentials.clinic_seed_path(tmp_path / "auth", A).read_bytes())
    written = generate(
        tmp_path / "auth", CLINICS, permissions.ServerOptions(store_dir=str(tmp_path / "unused")), rotate=[A]
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
