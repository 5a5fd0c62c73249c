"""A clinic that knows another clinic's Task identifier tries to spoil its create, on plain NATS; the create holds.

Referral and message ids were derived from the creating clinic's id and its Task identifier
with a public namespace, so Kneadwell Massage, holding its own valid key, could compute
Harbor PT's before Harbor sent it: publishing first with that message id made Harbor's
``POST /Task`` a silent duplicate (503 three times), and using that referral id first made it
``409 duplicate_referral_id`` forever. Kneadwell does both here, with the old formula and
with the identifier Harbor will use; Harbor's create is 201, and its retry names the same
referral.
"""

from __future__ import annotations

import uuid

import httpx

from referral_hub.contracts.base import Modality
from referral_hub.contracts.referrals import ReferralRequested
from tests.helpers import RunningHub, referral_request

from .conftest import Systems
from .fhir_helpers import LOCAL_ID_SYSTEM, new_task

PUBLIC_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-hub:gateway")
"""The namespace the ids were derived with: public, in the source."""


async def test_a_create_whose_identifier_another_clinic_knows_is_still_created_once(
    gateway: Systems, hub: RunningHub
) -> None:
    value = "HPT-2026-0042"
    attacker = await hub.clinic("kneadwell-massage")
    squat = referral_request(
        sender="kneadwell-massage",
        recipient="lotus-acu",
        modality=Modality.ACUPUNCTURE,
        message_id=uuid.uuid5(PUBLIC_NAMESPACE, f"request|harbor-pt|{LOCAL_ID_SYSTEM}|{value}"),
        referral_id=uuid.uuid5(PUBLIC_NAMESPACE, f"harbor-pt|{LOCAL_ID_SYSTEM}|{value}"),
    )
    squatted = await attacker.send_and_confirm(squat)
    assert isinstance(squatted.message, ReferralRequested), squatted.message
    token = await gateway.token("harbor-pt")
    sent = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    async with httpx.AsyncClient(timeout=30) as http:
        created = await http.post(f"{gateway.gateway.fhir}/Task", json=new_task(local_id=value), headers=sent)
        retried = await http.post(f"{gateway.gateway.fhir}/Task", json=new_task(local_id=value), headers=sent)

    assert created.status_code == 201, created.text
    assert retried.status_code == 200, retried.text
    assert retried.json()["id"] == created.json()["id"]
