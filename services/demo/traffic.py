"""Demo referrals between the demo clinics, so ``hubctl up`` visibly does something."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from referral_hub.client import ClinicClient, new_id, utc_now
from referral_hub.contracts.alerts import AlertRaise, Severity, TriggerKind
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.referrals import (
    ConsultNote,
    ReferralAccept,
    ReferralClose,
    ReferralCommand,
    ReferralComplete,
    ReferralRequest,
    ReferralSchedule,
    Urgency,
)
from referral_hub.contracts.registry import Clinic
from referral_hub.demo.pager import DemoActivity
from referral_hub.demo.people import with_person
from referral_hub.sealing.keystore import KeyStore

REASONS: Final = {
    Modality.MASSAGE: "Myofascial tension, upper trapezius, after rotator-cuff rehab",
    Modality.PHYSICAL_THERAPY: "Post-operative knee rehabilitation, week 3",
    Modality.CHIROPRACTIC: "Mechanical low back pain, no red flags on screening",
    Modality.ACUPUNCTURE: "Chronic tension-type headache, not responding to massage alone",
}
ICD10: Final = {
    Modality.MASSAGE: ("M62.838",),
    Modality.PHYSICAL_THERAPY: ("Z47.1",),
    Modality.CHIROPRACTIC: ("M54.50",),
    Modality.ACUPUNCTURE: ("G44.209",),
}


DEMO_FLAGS: Final = (
    ClinicalFlags(),
    ClinicalFlags(),
    ClinicalFlags(),
    ClinicalFlags(medications=("warfarin 5 mg daily",)),
    ClinicalFlags(conditions=("osteoporosis",)),
)
"""Most demo patients have nothing on record; some carry flags that screening will match."""


def demo_alert(raiser: Clinic, patient_ref: str) -> AlertRaise:
    """The anticoagulant alert of the product's story: it must reach the whole care team."""
    return AlertRaise(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=raiser.id,
        actor=raiser.members[0].id,
        correlation_id=new_id(),
        alert_id=new_id(),
        patient_ref=patient_ref,
        trigger_kind=TriggerKind.MEDICATION,
        trigger="apixaban",
        modalities=(Modality.MASSAGE, Modality.ACUPUNCTURE, Modality.CHIROPRACTIC),
        techniques=("deep tissue", "needling", "high velocity manipulation"),
        severity=Severity.RELATIVE,
        note="Started apixaban for atrial fibrillation; light pressure only",
    )


def demo_referral(sender: Clinic, recipient: Clinic, rng: random.Random) -> ReferralRequest:
    """A plausible referral from ``sender`` to ``recipient``, with a pseudonymous patient."""
    modality = rng.choice(recipient.modalities)
    return ReferralRequest(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=sender.id,
        actor=sender.members[0].id,
        correlation_id=new_id(),
        referral_id=new_id(),
        patient_ref=f"pt-{rng.randrange(16**6):06x}",
        recipient_clinic=recipient.id,
        modality=modality,
        urgency=rng.choice((Urgency.ROUTINE, Urgency.ROUTINE, Urgency.URGENT)),
        reason=REASONS[modality],
        icd10_codes=ICD10[modality],
        clinical_flags=rng.choice(DEMO_FLAGS),
    )


ALERT_CHANCE: Final = 0.3
"""How often a demo recipient, at scheduling (its accept long processed), learns of an anticoagulant."""
LIFECYCLE: Final = ("accept", "schedule", "complete", "close")
"""The steps after ``request`` that close a referral's loop, in order."""
NEXT_STEP: Final = dict(zip(("request", *LIFECYCLE[:-1]), LIFECYCLE, strict=True))


@dataclass
class OpenReferral:
    """A demo referral and the last step taken on it."""

    request: ReferralRequest
    sender: Clinic
    recipient: Clinic
    last: str = "request"


def lifecycle_command(
    step: str, request: ReferralRequest, sender: Clinic, recipient: Clinic
) -> tuple[Clinic, ReferralCommand]:
    """The command for ``step`` of ``request``'s lifecycle, and the clinic that sends it.

    The recipient accepts, schedules and completes; the sender closes.
    """
    actor = sender if step == "close" else recipient
    common: dict[str, Any] = {
        "message_id": new_id(),
        "occurred_at": utc_now(),
        "sender_clinic": actor.id,
        "actor": actor.members[0].id,
        "correlation_id": request.correlation_id,
        "referral_id": request.referral_id,
        "patient_ref": request.patient_ref,
    }
    if step == "accept":
        return actor, ReferralAccept(**common)
    if step == "schedule":
        return actor, ReferralSchedule(**common, appointment_at=utc_now() + timedelta(days=3))
    if step == "complete":
        outcome = ConsultNote(
            visits=6, techniques=("manual therapy",), response="Improved", recommendations="Home program"
        )
        return actor, ReferralComplete(**common, outcome=outcome)
    return actor, ReferralClose(**common)


def next_command(referral: OpenReferral) -> tuple[Clinic, ReferralCommand] | None:
    """The next lifecycle step of a demo referral and who takes it; None once it is closed."""
    step = NEXT_STEP.get(referral.last)
    if step is None:
        return None
    return lifecycle_command(step, referral.request, referral.sender, referral.recipient)


async def send_demo_referrals(
    nats_url: str,
    clinics: list[Clinic],
    interval: float,
    say: Callable[[str], None],
    activity: DemoActivity | None = None,
) -> None:
    """Forever: every ``interval`` seconds one clinic refers a patient and one open referral moves on.

    Recipients accept, schedule and complete; senders close. The terminal shows whole
    closed loops, not just new requests. ``activity`` learns each patient referred and alert
    raised, so the demo pager answers only the demo's own pages.
    """
    activity = activity or DemoActivity()
    rng = random.Random()  # noqa: S311 - demo data, not security
    clients = {clinic.id: await ClinicClient.connect(nats_url, clinic.id) for clinic in clinics}
    registry, keys = {clinic.id: clinic for clinic in clinics}, KeyStore.from_environment()
    open_referrals: list[OpenReferral] = []
    try:
        while True:
            sender, recipient = rng.sample(clinics, 2)
            referral = with_person(demo_referral(sender, recipient, rng), rng, registry, keys)
            activity.patient_referred(referral.patient_ref)
            receipt = await clients[sender.id].send(referral)
            open_referrals.append(OpenReferral(referral, sender, recipient))
            say(
                f"-> {sender.id} refers {referral.patient_ref} to {recipient.id} "
                f"({referral.modality}, {referral.urgency}); stored as CLINIC_OUT #{receipt.sequence}",
            )
            moving = open_referrals.pop(0) if len(open_referrals) > 1 else None
            step = next_command(moving) if moving is not None else None
            if moving is not None and step is not None:
                actor, command = step
                await clients[actor.id].send(command)
                moving.last = NEXT_STEP[moving.last]
                referral_id = str(command.referral_id)[:8]
                say(f"-> {actor.id} {moving.last}s referral {referral_id} ({moving.request.patient_ref})")
                if moving.last != "close":
                    open_referrals.append(moving)
                if moving.last == "schedule" and rng.random() < ALERT_CHANCE:
                    alert = demo_alert(moving.recipient, moving.request.patient_ref)
                    activity.alert_raised(str(alert.alert_id))
                    await clients[moving.recipient.id].send(alert)
                    say(f"!! {moving.recipient.id} alerts the care team of {alert.patient_ref}: {alert.trigger}")
            await asyncio.sleep(interval)
    finally:
        for client in clients.values():
            await client.close()
