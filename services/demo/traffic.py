"""Demo referrals between the demo clinics, so ``hubctl up`` visibly does something."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Final

from referral_hub.client import ClinicClient, new_id, utc_now
from referral_hub.contracts.base import Modality
from referral_hub.contracts.referrals import ReferralRequest, Urgency
from referral_hub.contracts.registry import Clinic

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
    )


async def send_demo_referrals(
    nats_url: str,
    clinics: list[Clinic],
    interval: float,
    say: Callable[[str], None],
    seed: int | None = None,
) -> None:
    """Forever: every ``interval`` seconds one clinic refers a patient to another."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    clients = {clinic.id: await ClinicClient.connect(nats_url, clinic.id) for clinic in clinics}
    try:
        while True:
            sender, recipient = rng.sample(clinics, 2)
            referral = demo_referral(sender, recipient, rng)
            receipt = await clients[sender.id].send(referral)
            say(
                f"-> {sender.id} refers {referral.patient_ref} to {recipient.id} "
                f"({referral.modality}, {referral.urgency}); stored as CLINIC_OUT #{receipt.sequence}",
            )
            await asyncio.sleep(interval)
    finally:
        for client in clients.values():
            await client.close()
