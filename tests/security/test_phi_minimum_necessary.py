"""A clinic off a patient's care team, with its valid key, refers the patient to fish for the team's PHI.

Harbor PT and Lotus Acupuncture treat the patient; Harbor's referral put a medication on
the team's record, and Lotus raised an absolute alert against massage whose note holds a lab
value and a phone number. Summit Chiropractic, on no team of this patient, publishes a raw
referral of the same ``patient_ref`` to Kneadwell Massage, then reads everything a clinic can
reach: its inbox through the hub's read request and through its inbox consumer. Neither
outsider ever holds the team's trigger, medication, note or members, nor which rules or alert
matched, their rationale, or which clinics are on the team: each learns only that the team
holds a contraindication relevant to massage, and its severity; the referral is held; the
audit chain records it all.
"""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from referral_hub.contracts.alerts import AlertRaised, Severity, TriggerKind
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.codec import decode_hub_message
from referral_hub.contracts.referrals import ReferralRequest, ReferralRequested, ReferralState, ReferralTransitioned
from referral_hub.contracts.screening import FlagAudience, ScreeningFlagged
from referral_hub.runtime.jetstream import subjects, topology
from tests.helpers import alert_raise, referral_request
from tests.lifecycle_model import MEMBERS, command

from .hostile import AttackedHub, Hostile, report

pytestmark = pytest.mark.asyncio(loop_scope="module")

PT, ACU, MASSAGE, CHIRO = "harbor-pt", "lotus-acu", "kneadwell-massage", "summit-chiro"
PATIENT = "pt-fished"
TRIGGER = "rivaroxaban"
BATCH = 100
NOTE = "INR 3.9 on 20 Nov; ring Dr Okoro on 555-0199 before any deep work"
TEAM_MEDICATION = "rivaroxaban 20 mg daily (Harbor intake)"
SECRETS = (TRIGGER, NOTE, "INR 3.9", "555-0199", TEAM_MEDICATION, MEMBERS[ACU], MEMBERS[PT])
TEAM_SHAPE = (PT, ACU, "anticoag", "alert:", "anticoagulated")
"""What would tell an outsider which rule matched, which alert to probe, and who treats the patient."""
RAISED: dict[str, str] = {}
"""The id of the team's alert, once the module's hub has raised it."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(secured_hub: AttackedHub) -> AttackedHub:
    """The care team (Harbor, Lotus) with a medication on record and an absolute alert against massage."""
    request = referral_request(
        sender=PT, recipient=ACU, patient_ref=PATIENT, clinical_flags=ClinicalFlags(medications=(TEAM_MEDICATION,))
    )
    await (await secured_hub.clinic(PT)).send_and_confirm(request)
    accepted = await (await secured_hub.clinic(ACU)).send_and_confirm(
        command("accept", ACU, request.referral_id, PATIENT)
    )
    assert isinstance(accepted.message, ReferralTransitioned), accepted.message
    alert = alert_raise(
        ACU,
        PATIENT,
        trigger=TRIGGER,
        trigger_kind=TriggerKind.MEDICATION,
        modalities=(Modality.MASSAGE,),
        techniques=(),
        severity=Severity.ABSOLUTE,
        note=NOTE,
    )
    raised = await (await secured_hub.clinic(ACU)).send_and_confirm(alert)
    assert isinstance(raised.message, AlertRaised), raised.message
    RAISED["alert_id"] = str(alert.alert_id)
    return secured_hub


async def pull_all(clinic: Hostile, clinic_id: str) -> list[bytes]:
    """Everything the clinic's inbox consumer hands out, by raw ``MSG.NEXT`` requests, acknowledged."""
    spec = topology.clinic_inbox_consumer(clinic_id)
    received: list[Msg] = []
    ended = asyncio.Event()
    before = 0

    async def keep(message: Msg) -> None:
        received.append(message)
        # A no_wait pull ends with a status message when it runs out, or with its full batch.
        if (message.headers or {}).get("Status") or len(received) - before >= BATCH:
            ended.set()

    inbox = clinic.connection.new_inbox()
    subscription = await clinic.connection.subscribe(inbox, cb=keep)
    try:
        while True:
            before = len(received)
            ended.clear()
            await clinic.connection.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}",
                json.dumps({"batch": BATCH, "no_wait": True}).encode(),
                reply=inbox,
            )
            await asyncio.wait_for(ended.wait(), 10)
            fresh = received[before:]
            data = [message for message in fresh if not (message.headers or {}).get("Status")]
            for message in data:
                await clinic.connection.publish(message.reply, b"+ACK")
            if not data:
                return [message.data for message in received if not (message.headers or {}).get("Status")]
    finally:
        await subscription.unsubscribe()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fishing(hub: AttackedHub) -> ReferralRequest:
    """Summit, off the team, publishes a raw referral of the team's patient to Kneadwell, off it too."""
    attacker = await hub.hostile_clinic(CHIRO)
    request = referral_request(
        sender=CHIRO, recipient=MASSAGE, actor=MEMBERS[CHIRO], patient_ref=PATIENT, modality=Modality.MASSAGE
    )
    await attacker.connection.jetstream().publish(
        subjects.clinic_out(CHIRO, "referral.request"),
        msgspec.json.encode(request),
        headers={"Nats-Msg-Id": str(request.message_id)},
    )
    return request


@pytest.mark.parametrize("reader", [CHIRO, MASSAGE], ids=["requester off the team", "recipient off the team"])
async def test_a_clinic_off_the_care_team_never_reads_the_teams_phi(hub, fishing, reader):
    length = await hub.audit.refresh()
    clinic = await hub.hostile_clinic(reader)

    async def flagged() -> list[bytes]:
        answer = await clinic.attempt(subjects.inbox_read(reader), {"after": 0, "limit": 200})
        page = [json.dumps(stored["message"]).encode() for stored in (answer.reply or {}).get("messages", [])]
        return page if any(b'"screening.flagged"' in data for data in page) else []

    deadline = asyncio.get_running_loop().time() + 15
    page: list[bytes] = []
    while not page and asyncio.get_running_loop().time() < deadline:
        page = await flagged()
    pulled = await pull_all(clinic, reader)
    shape = (*TEAM_SHAPE, RAISED["alert_id"])
    leaked = sorted({secret for secret in (*SECRETS, *shape) for data in (*page, *pulled) if secret.encode() in data})
    messages = [decode_hub_message(data) for data in page]
    flags = [m for m in messages if isinstance(m, ScreeningFlagged) and m.referral_id == fishing.referral_id]
    requested = [m for m in messages if isinstance(m, ReferralRequested) and m.referral_id == fishing.referral_id]
    team = await (await hub.hostile_clinic(ACU)).attempt(subjects.inbox_read(ACU), {"after": 0, "limit": 200})
    detectable = [secret for secret in (TRIGGER, NOTE, RAISED["alert_id"]) if secret in json.dumps(team.reply)]
    control = await hub.positive_control(PT, ACU)
    report(
        f"clinic {CHIRO} (off the care team) refers {PATIENT}; {reader} reads its inbox (read request, raw pulls)",
        "flag says only: the team holds a contraindication for massage, and its severity; held",
        f"{len(page)} read, {len(pulled)} pulled; audiences {[flag.audience.value for flag in flags]}; "
        f"team PHI, rule, alert or clinic seen: {leaked or 'none'}; chain +{hub.audit.read_to - length}, "
        f"{'verifies' if hub.audit.intact else 'BROKEN'}",
    )
    assert detectable == [TRIGGER, NOTE, RAISED["alert_id"]], (
        "positive control: the team's own inbox shows what the check looks for"
    )
    assert page, "positive control: the outsider's inbox holds the flag"
    assert pulled
    assert not leaked
    assert [flag.audience for flag in flags] == [FlagAudience.OUTSIDE_CARE_TEAM]
    assert flags[0].held
    assert (flags[0].matches, flags[0].care_team_severity) == ((), Severity.ABSOLUTE)
    if reader == CHIRO:
        assert [m.state for m in requested] == [ReferralState.NEEDS_REVIEW]
    assert not control
    assert hub.audit.intact
