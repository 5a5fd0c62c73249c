"""The person behind a referral in the hosted portal: the form's patient fieldset, sealing it, showing it to parties.

The portal acts for the clinics it hosts, so it holds their private sealing keys (the key
store, files 0600 beside its NATS credentials). It seals what the front desk types to the
sending and receiving clinics before the referral leaves, re-seals to a clinic a referral is
forwarded to, and opens a clinic's own copies for its pages. A member only ever sees what
their clinic's copy holds: a clinic with no copy is shown nothing, and an unreadable copy is
said, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Final
from uuid import UUID

import msgspec

from referral_hub.client import InboxItem
from referral_hub.contracts.base import Message
from referral_hub.contracts.patient import DetailsError, PatientDetails, SealedDetails, details_from_fields
from referral_hub.contracts.referrals import ReferralForward, ReferralRequest, ReferralRequested
from referral_hub.contracts.registry import Clinic
from referral_hub.sealing import parties
from referral_hub.sealing.core import SealingError
from referral_hub.sealing.keystore import KeyStore

PREFIX: Final = "pd_"
FIELDS: Final = ("given", "family", "birth_date", "gender", "phone", "email", "record_number")
CACHE_SIZE: Final = 4096


def details_of(form: Mapping[str, str], today: date) -> tuple[PatientDetails | None, dict[str, str]]:
    """The form's patient fieldset as details (``None`` when left empty), or its problems by form field name."""
    fields = {name: form.get(PREFIX + name, "") for name in FIELDS}
    if not any(value.strip() for name, value in fields.items() if name != "gender"):  # the select always sends one
        return None, {}
    try:
        return details_from_fields(fields, today), {}
    except DetailsError as exc:
        return None, {PREFIX + name: words for name, words in exc.problems.items()}


class PatientReader:
    """Seals and opens patient details for the clinics this portal hosts, remembering what it opened."""

    def __init__(self, store: KeyStore | None) -> None:
        """``store`` holds the hosted clinics' keys; without one the portal neither seals nor shows details."""
        self.store = store
        self._opened: dict[tuple[str, str], PatientDetails | None] = {}

    def seal_request(
        self, clinics: Mapping[str, Clinic], request: ReferralRequest, details: PatientDetails
    ) -> ReferralRequest:
        """``request`` with ``details`` sealed to its sender and recipient; :class:`SealingError` says why not."""
        if self.store is None:
            msg = "this portal has no sealing key store, so it cannot send patient details"
            raise SealingError(msg)
        sealed = parties.seal_to(
            self.store,
            clinics,
            details,
            referral_id=request.referral_id,
            message_id=request.message_id,
            sealer=request.sender_clinic,
            holders=(request.sender_clinic, request.recipient_clinic),
        )
        return msgspec.structs.replace(request, patient_details=sealed)

    def resealed(self, clinics: Mapping[str, Clinic], items: Iterable[InboxItem], message: Message) -> Message:
        """A forward carrying the details re-sealed to the clinic it names, when this clinic has a copy."""
        if not isinstance(message, ReferralForward) or self.store is None:
            return message
        source = _seals(items, message.sender_clinic).get(str(message.referral_id))
        if source is None:
            return message
        sealed = parties.reseal(
            self.store,
            clinics,
            source,
            reader=message.sender_clinic,
            message_id=message.message_id,
            to_clinic=message.to_clinic,
        )
        return msgspec.structs.replace(message, patient_details=sealed)

    def read(
        self, clinics: Mapping[str, Clinic], clinic: str, sealed: SealedDetails, referral_id: UUID
    ) -> PatientDetails | None:
        """``clinic``'s copy opened, or ``None`` when it has none this portal can open."""
        key = (clinic, sealed.digest)
        if key not in self._opened:
            if len(self._opened) >= CACHE_SIZE:
                self._opened.clear()
            try:
                self._opened[key] = (
                    parties.read(self.store, clinics, sealed, referral_id, clinic) if self.store else None
                )
            except SealingError:
                self._opened[key] = None
        return self._opened[key]

    def by_referral(
        self, clinics: Mapping[str, Clinic], clinic: str, items: Iterable[InboxItem]
    ) -> dict[str, PatientDetails]:
        """The details ``clinic`` can read, by referral id, from its inbox."""
        found: dict[str, PatientDetails] = {}
        for referral_id, sealed in _seals(items, clinic).items():
            details = self.read(clinics, clinic, sealed, UUID(referral_id))
            if details is not None:
                found[referral_id] = details
        return found


def _seals(items: Iterable[InboxItem], clinic: str) -> dict[str, SealedDetails]:
    """The newest seal with a copy for ``clinic`` per referral in its inbox."""
    seals: dict[str, SealedDetails] = {}
    for item in items:
        message = item.message
        sealed = message.patient_details if isinstance(message, ReferralRequested) else None
        if sealed is not None and clinic in sealed.holders:
            seals[str(getattr(message, "referral_id", ""))] = sealed
    return seals
