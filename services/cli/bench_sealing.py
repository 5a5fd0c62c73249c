"""``hubctl bench referrals``'s second phase: the same lifecycles with the patient's details sealed.

Each demo referral carries a synthetic person sealed to its two clinics, and the recipient
side opens its copy when the hub's answer arrives, as a hosted portal would. The time spent
sealing and opening is measured per referral in the same run, beside the transition it rides
on, so the cost is a share of the very transitions it slowed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import msgspec

from referral_hub.contracts.patient import PatientDetails
from referral_hub.contracts.referrals import ReferralRequest
from referral_hub.contracts.registry import Clinic, Registry
from referral_hub.sealing import parties
from referral_hub.sealing.keystore import KeyStore

BENCH_PERSON = PatientDetails(
    given="Benchy",
    family="Synthetic-Person",
    birth_date=date(1980, 1, 1),
    phones=("+1 555 0100 000",),
    email="benchy@example.org",
)
"""Clearly fake: the 555-01xx range is reserved for fiction."""


def keyed_registry(registry: Registry, directory: Path) -> tuple[Registry, KeyStore]:
    """``registry`` with a fresh sealing key per clinic, and the key store holding their private halves."""
    store = KeyStore(directory)
    clinics = tuple(
        msgspec.structs.replace(clinic, sealing_keys=(store.generate(clinic.id).public,)) for clinic in registry.clinics
    )
    return Registry(clinics=clinics), store


@dataclass
class Sealer:
    """Seals a request's details to both clinics and opens the recipient's copy, timing both."""

    store: KeyStore
    registry: dict[str, Clinic]
    crypto_ms: list[float] = field(default_factory=list)

    def seal(self, request: ReferralRequest) -> ReferralRequest:
        """``request`` carrying the bench person sealed by its sender to itself and its recipient."""
        started = time.perf_counter()
        sealed = parties.seal_to(
            self.store,
            self.registry,
            BENCH_PERSON,
            referral_id=request.referral_id,
            message_id=request.message_id,
            sealer=request.sender_clinic,
            holders=(request.sender_clinic, request.recipient_clinic),
        )
        self.crypto_ms.append((time.perf_counter() - started) * 1000)
        return msgspec.structs.replace(request, patient_details=sealed)

    def open(self, request: ReferralRequest) -> PatientDetails:
        """The recipient's copy opened, its time added to the referral's sealing time."""
        started = time.perf_counter()
        assert request.patient_details is not None  # noqa: S101 - seal() put it there
        details = parties.read(
            self.store, self.registry, request.patient_details, request.referral_id, request.recipient_clinic
        )
        self.crypto_ms[-1] += (time.perf_counter() - started) * 1000
        return details
