"""A clinic off a patient's care team, holding valid credentials, refers the patient: against a real nats-server.

Harbor PT and Lotus Acupuncture treat the patient; Lotus raises an absolute alert against
massage whose note holds a lab value and a phone number, and Harbor's referral put a
medication on the team's record. Summit Chiropractic, not on the team, refers the same
patient_ref to Kneadwell Massage, not on it either. The referral is held, as before; what
Summit's and Kneadwell's inboxes store (read raw from the inbox stream, and as the clinics
read it) holds none of the team's free text, trigger or medication; nobody off the team is
paged with it; the team is told. Then Summit probes referral ids: every answer is the one it
gets for an id nobody uses.
"""

from __future__ import annotations

from uuid import UUID

import pytest
from nats.js.errors import KeyNotFoundError

from referral_hub.client import new_id
from referral_hub.contracts.alerts import AlertRaised, Severity, TriggerKind
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.codec import decode_hub_message, encode
from referral_hub.contracts.paging import NotificationQueued
from referral_hub.contracts.referrals import ReferralRequested, ReferralState, ReferralTransitioned
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.contracts.screening import FlagAudience, ScreeningFlagged
from referral_hub.notifications.page_rules import page_id_for
from referral_hub.runtime.jetstream import streams, subjects, topology

from .helpers import RunningHub, alert_raise, referral_request, stream_messages, wait_idle
from .lifecycle_model import MEMBERS, command

PT, ACU, MASSAGE, CHIRO = "harbor-pt", "lotus-acu", "kneadwell-massage", "summit-chiro"
PATIENT = "pt-outsider"
TRIGGER = "apixaban"
NOTE = "INR 3.4 on 12 Nov; call Dr Ames on 555-0142 before any deep work"
TEAM_MEDICATION = "apixaban 5 mg twice daily (Harbor intake)"
SECRETS = (TRIGGER, NOTE, "INR 3.4", "555-0142", TEAM_MEDICATION, "raj.patel", "mei.chen", "Raj Patel")


async def stored_inbox(hub: RunningHub, clinic: str) -> list[bytes]:
    """Everything the hub stored for ``clinic``'s inbox, as stored."""
    prefix = subjects.clinic_inbox(clinic).removesuffix(">")
    return [
        data for subject, data in await stream_messages(hub.connection, streams.CLINIC_IN) if subject.startswith(prefix)
    ]


async def flags_of(hub: RunningHub, clinic: str) -> list[ScreeningFlagged]:
    return [
        item.message async for item in (await hub.clinic(clinic)).inbox() if isinstance(item.message, ScreeningFlagged)
    ]


async def team_with_an_absolute_massage_alert(hub: RunningHub) -> UUID:
    """Harbor refers the patient (with its medication) to Lotus, Lotus accepts and raises the alert."""
    request = referral_request(
        sender=PT, recipient=ACU, patient_ref=PATIENT, clinical_flags=ClinicalFlags(medications=(TEAM_MEDICATION,))
    )
    await (await hub.clinic(PT)).send_and_confirm(request)
    accepted = await (await hub.clinic(ACU)).send_and_confirm(command("accept", ACU, request.referral_id, PATIENT))
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
    raised = await (await hub.clinic(ACU)).send_and_confirm(alert)
    assert isinstance(raised.message, AlertRaised), raised.message
    return alert.alert_id


async def test_clinics_off_the_care_team_learn_the_teams_severity_never_its_phi(hub: RunningHub) -> None:
    alert_id = await team_with_an_absolute_massage_alert(hub)
    outsider = referral_request(
        sender=CHIRO, recipient=MASSAGE, actor=MEMBERS[CHIRO], patient_ref=PATIENT, modality=Modality.MASSAGE
    )

    requested = await (await hub.clinic(CHIRO)).send_and_confirm(outsider)
    await wait_idle(hub.connection)

    assert isinstance(requested.message, ReferralRequested)
    assert requested.message.state == ReferralState.NEEDS_REVIEW
    for clinic in (CHIRO, MASSAGE):
        stored = await stored_inbox(hub, clinic)
        assert stored, clinic
        assert [s for s in SECRETS for data in stored if s.encode() in data] == [], clinic
        [flag] = await flags_of(hub, clinic)
        assert [s for s in SECRETS if s in encode(flag).decode()] == [], clinic
        assert flag.audience is FlagAudience.OUTSIDE_CARE_TEAM
        assert (flag.referral_id, flag.held, flag.highest_severity) == (outsider.referral_id, True, Severity.ABSOLUTE)
        assert (flag.matches, flag.care_team_severity) == ((), Severity.ABSOLUTE)
    for member in (PT, ACU):
        notices = [f for f in await flags_of(hub, member) if f.referral_id == outsider.referral_id]
        assert [(n.audience, n.referring_clinic, n.recipient_clinic) for n in notices] == [
            (FlagAudience.CARE_TEAM, CHIRO, MASSAGE)
        ]
        assert {m.rule_id for m in notices[0].matches} == {f"alert:{alert_id}", "anticoag-deep-massage"}
    queued = [
        decode_hub_message(data)
        for subject, data in await stream_messages(hub.connection, streams.HUB_EVENTS)
        if subject == subjects.domain_event("notification.queued")
    ]
    told = {(q.clinic, q.topic) for q in queued if isinstance(q, NotificationQueued)}
    assert {(CHIRO, "safety.notify"), (MASSAGE, "safety.notify")} <= told
    assert {(PT, "screening.care_team"), (ACU, "screening.care_team")} <= told
    pages = await hub.connection.jetstream().key_value(topology.PAGES_KV)
    for clinic in (CHIRO, MASSAGE):
        with pytest.raises(KeyNotFoundError):
            await pages.get(str(page_id_for(f"flag:{flag.flag_id}:{clinic}")))

    answer = command("override", ACU, outsider.referral_id, PATIENT)
    released = await (await hub.clinic(ACU)).send_and_confirm(answer)
    assert isinstance(released.message, ReferralTransitioned), released.message
    await wait_idle(hub.connection)
    seen = [
        item.message
        async for item in (await hub.clinic(CHIRO)).inbox()
        if isinstance(item.message, ReferralTransitioned) and item.message.referral_id == outsider.referral_id
    ]
    assert [(t.transition, t.state, t.sender_clinic, t.detail) for t in seen] == [
        ("override", ReferralState.REQUESTED, "hub", "")
    ]


async def test_a_clinic_probing_referral_ids_gets_the_answer_an_unused_id_gets(hub: RunningHub) -> None:
    theirs = referral_request(sender=PT, recipient=ACU, patient_ref=PATIENT)
    await (await hub.clinic(PT)).send_and_confirm(theirs)
    prober = await hub.clinic(CHIRO)
    unused = new_id()

    async def answer(referral_id: UUID, transition: str) -> Rejection:
        sent = command(transition, CHIRO, referral_id, PATIENT)
        got = await prober.send_and_confirm(sent)
        assert isinstance(got.message, Rejection), got.message
        return got.message

    for transition in ("accept", "decline", "schedule", "interim_note", "cancel", "override"):
        probed, baseline = await answer(theirs.referral_id, transition), await answer(unused, transition)
        assert (
            (probed.code, probed.current_state)
            == (baseline.code, baseline.current_state)
            == (
                RejectionCode.UNKNOWN_REFERRAL,
                "",
            )
        )
        assert probed.reason == baseline.reason.replace(str(unused), str(theirs.referral_id))
    clash = referral_request(
        sender=CHIRO, recipient=MASSAGE, actor=MEMBERS[CHIRO], modality=Modality.MASSAGE, referral_id=theirs.referral_id
    )
    taken = (await prober.send_and_confirm(clash)).message
    assert isinstance(taken, Rejection)
    assert (taken.code, taken.current_state) == (RejectionCode.DUPLICATE_REFERRAL_ID, "")
    assert not [word for word in ("requested", PT, ACU, PATIENT) if word in taken.reason]
