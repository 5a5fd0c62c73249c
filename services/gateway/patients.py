"""The patient behind a referral over FHIR: a readable ``Patient`` for the parties, sealed in transit.

The gateway acts for its clinics, so like the portal it holds their private sealing keys
(the key store, files 0600) and reads the registry for the other clinics' public keys. A
Task create may carry the person as a contained ``Patient`` (``Task.for`` = ``#id``) or as a
``Patient`` entry of the transaction Bundle: it is sealed to the two clinics before the
referral leaves, and the hub sees only the sealed form. ``GET Patient/{id}`` opens the
clinic's own copy; a clinic without one gets the same 404 as for an id that names nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from nats.js import JetStreamContext

from referral_hub.contracts.patient import DetailsError, PatientDetails, details_from_fields
from referral_hub.contracts.referrals import ReferralRequest
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.gateway.outcomes import FhirError
from referral_hub.referrals import fhir_task as referral_fhir
from referral_hub.referrals.domain import Referral
from referral_hub.runtime.hosting.tasks import cancel_and_wait
from referral_hub.runtime.jetstream.registry_cache import RegistryCache
from referral_hub.sealing import parties
from referral_hub.sealing.core import SealingError
from referral_hub.sealing.keystore import KeyStore

RECORD_NUMBER_SYSTEM: Final = "urn:referral-hub:referring-clinic-record"
PHONE_USE: Final = "mobile"


def patient_id(referral: Referral) -> str:
    """The id of a referral's ``Patient``: derived like its Task's, so it names nothing outside the referral."""
    return referral_fhir.resource_id("Patient", referral)


def patient_resource(referral: Referral, details: PatientDetails) -> dict[str, Any]:
    """FHIR R4 ``Patient`` from the opened details: name, birthDate, gender, telecom, address, identifier."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id(referral),
        "identifier": [{"system": referral_fhir.PATIENT_REF_SYSTEM, "value": referral.patient_ref}],
        "name": [{"use": "official", "family": details.family, "given": details.given.split()}],
        "birthDate": details.birth_date.isoformat(),
        "gender": details.gender.value,
        "telecom": [{"system": "phone", "value": phone, "use": PHONE_USE} for phone in details.phones],
    }
    if details.record_number:
        resource["identifier"].append({"system": RECORD_NUMBER_SYSTEM, "value": details.record_number})
    if details.email:
        resource["telecom"].append({"system": "email", "value": details.email})
    if details.address is not None:
        address = details.address
        resource["address"] = [
            {
                "line": list(address.lines),
                "city": address.city,
                "postalCode": address.postal_code,
                "country": address.country,
            }
        ]
    if details.preferred_language:
        resource["communication"] = [
            {"language": {"coding": [{"code": details.preferred_language}]}, "preferred": True}
        ]
    if not resource["telecom"]:
        del resource["telecom"]
    return resource


def details_from_patient(resource: Mapping[str, Any]) -> PatientDetails:
    """The details a client's ``Patient`` gives; 422 with the receptionist's words when they cannot be sent."""
    names = resource.get("name") or [{}]
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], dict) else {}
    telecom = [item for item in resource.get("telecom") or [] if isinstance(item, dict)]
    addresses = [item for item in resource.get("address") or [] if isinstance(item, dict)]
    address = addresses[0] if addresses else {}
    given = name.get("given") or []
    fields = {
        "given": " ".join(str(part) for part in given) if isinstance(given, list) else str(given),
        "family": str(name.get("family") or ""),
        "birth_date": str(resource.get("birthDate") or ""),
        "gender": str(resource.get("gender") or ""),
        "phone": ",".join(str(item.get("value") or "") for item in telecom if item.get("system") == "phone"),
        "email": next((str(item.get("value") or "") for item in telecom if item.get("system") == "email"), ""),
        "address_line": " ".join(str(line) for line in address.get("line") or []),
        "city": str(address.get("city") or ""),
        "postal_code": str(address.get("postalCode") or ""),
        "country": str(address.get("country") or ""),
    }
    try:
        return details_from_fields(fields, datetime.now(UTC).date())
    except DetailsError as exc:
        raise FhirError(422, RejectionCode.SCHEMA_VIOLATION, "Patient: " + "; ".join(exc.problems.values())) from exc


def contained_patient(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``Patient`` a Task carries in ``contained`` (and points at from ``for``), if any."""
    for resource in task.get("contained") or []:
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            return resource
    return None


def split_patient(bundle: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The transaction Bundle without its ``Patient`` entry, and that ``Patient`` (at most one)."""
    entries = [entry for entry in bundle.get("entry") or [] if isinstance(entry, dict)]
    patients = [
        e["resource"]
        for e in entries
        if isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "Patient"
    ]
    if len(patients) > 1:
        raise FhirError(422, RejectionCode.SCHEMA_VIOLATION, "a referral transaction holds at most one Patient")
    rest = [
        e
        for e in entries
        if not (isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "Patient")
    ]
    return {**bundle, "entry": rest}, (patients[0] if patients else None)


class GatewayPatients:
    """The key store of the clinics the gateway acts for, and the registry's public keys."""

    def __init__(self, store: KeyStore | None) -> None:
        """``store`` holds the clinics' private keys; without one, a Patient is refused and never shown."""
        self.store = store
        self.registry = RegistryCache()
        self._following: asyncio.Task[None] | None = None

    def start(self, js: JetStreamContext) -> None:
        """Follow the registry (read-only) for the clinics' current public keys."""
        self._following = asyncio.create_task(self.registry.follow(js), name="gateway-registry")

    async def stop(self) -> None:
        """Stop following the registry."""
        await cancel_and_wait([self._following] if self._following is not None else [])

    def _clinics(self) -> dict[str, Any]:
        return {clinic.id: clinic for clinic in self.registry.clinics()}

    def sealed(self, command: ReferralRequest, patient: Mapping[str, Any] | None) -> ReferralRequest:
        """``command`` carrying the ``Patient``'s details sealed to its two clinics (unchanged without one)."""
        if patient is None:
            return command
        details = details_from_patient(patient)
        if self.store is None:
            raise FhirError(422, RejectionCode.SEALED_DETAILS_MISMATCH, "this gateway holds no sealing keys")
        try:
            sealed = parties.seal_to(
                self.store,
                self._clinics(),
                details,
                referral_id=command.referral_id,
                message_id=command.message_id,
                sealer=command.sender_clinic,
                holders=(command.sender_clinic, command.recipient_clinic),
            )
        except SealingError as exc:
            raise FhirError(422, RejectionCode.SEALED_DETAILS_MISMATCH, f"the Patient cannot be sealed: {exc}") from exc
        return msgspec.structs.replace(command, patient_details=sealed)

    def read(self, clinic: str, referral: Referral) -> PatientDetails | None:
        """``clinic``'s copy of the referral's details, opened; ``None`` when it has none this gateway opens."""
        sealed = referral.request.patient_details
        if sealed is None or self.store is None:
            return None
        with contextlib.suppress(SealingError):
            return parties.read(self.store, self._clinics(), sealed, referral.referral_id, clinic)
        return None
