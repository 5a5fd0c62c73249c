"""Clearly synthetic people for demo referrals, sealed to the two clinics like any referral's patient.

Names say they are samples, phone numbers are in the 555-01xx range reserved for fiction,
and e-mail addresses are at example.org (RFC 2606): nobody mistakes a demo for a record.
"""

from __future__ import annotations

import random
from datetime import date
from typing import Final

import msgspec

from referral_hub.contracts.patient import AdministrativeGender, PatientDetails
from referral_hub.contracts.referrals import ReferralRequest
from referral_hub.contracts.registry import Clinic
from referral_hub.sealing import parties
from referral_hub.sealing.keystore import KeyStore

_NAMES: Final = (
    ("Ada", "Samplewood", AdministrativeGender.FEMALE),
    ("Bruno", "Placeholder", AdministrativeGender.MALE),
    ("Cleo", "Fictional", AdministrativeGender.FEMALE),
    ("Dev", "Testington", AdministrativeGender.OTHER),
    ("Elif", "Demoson", AdministrativeGender.FEMALE),
    ("Farid", "Synthetic", AdministrativeGender.MALE),
)


def demo_person(rng: random.Random) -> PatientDetails:
    """One synthetic person, different on each call."""
    given, family, gender = rng.choice(_NAMES)
    return PatientDetails(
        given=given,
        family=family,
        birth_date=date(rng.randrange(1940, 2008), rng.randrange(1, 13), rng.randrange(1, 29)),
        gender=gender,
        phones=(f"+1 555 01{rng.randrange(100):02d} {rng.randrange(10000):04d}",),
        email=f"{given.lower()}.{family.lower()}@example.org",
    )


def with_person(
    request: ReferralRequest, rng: random.Random, registry: dict[str, Clinic], store: KeyStore | None
) -> ReferralRequest:
    """``request`` carrying a synthetic person sealed to its clinics, when this machine holds the sender's key."""
    if store is None or not store.holds(request.sender_clinic):
        return request
    recipient = registry.get(request.recipient_clinic)
    if recipient is None or recipient.sealing_key is None:
        return request
    sealed = parties.seal_to(
        store,
        registry,
        demo_person(rng),
        referral_id=request.referral_id,
        message_id=request.message_id,
        sealer=request.sender_clinic,
        holders=(request.sender_clinic, request.recipient_clinic),
    )
    return msgspec.structs.replace(request, patient_details=sealed)
