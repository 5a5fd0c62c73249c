"""A clinic's referrals as Tasks, folded from its own inbox. Pure.

Both parties see every step (``referrals.domain.announcements``), folded into the same
:class:`~referral_hub.referrals.domain.Referral` record the referrals service keeps, so the
Task a clinic reads is exactly the one ``referrals.fhir_task`` exports. A referral's version,
as ``meta.versionId`` and the ``ETag``, is the number of lifecycle steps the clinic has seen.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from referral_hub.contracts.codec import HubMessage
from referral_hub.contracts.referrals import (
    ReferralEvent,
    ReferralRequest,
    ReferralRequested,
    ReferralTransitioned,
)
from referral_hub.referrals import fhir_task as referral_fhir
from referral_hub.referrals.domain import HistoryItem, Referral


@dataclass
class TaskView:
    """One referral as a clinic sees it, and the clinic's external identifier for it."""

    referral: Referral
    version: int
    identifiers: tuple[tuple[str, str], ...] = ()


@dataclass
class ClinicReferrals:
    """Every referral in one clinic's inbox, by referral id and by Task id."""

    clinic: str
    by_referral: dict[uuid.UUID, TaskView] = field(default_factory=dict)
    by_task: dict[str, uuid.UUID] = field(default_factory=dict)
    last_event_number: int = 0

    def apply(self, message: HubMessage, event_number: int) -> None:
        """Fold one inbox message in; anything but a lifecycle step leaves the view as it was."""
        self.last_event_number = max(self.last_event_number, event_number)
        if isinstance(message, ReferralRequested):
            self._requested(message)
        elif isinstance(message, ReferralTransitioned):
            self._transitioned(message)

    def _requested(self, event: ReferralRequested) -> None:
        existing = self.by_referral.get(event.referral_id)
        if existing is not None:
            return
        request = ReferralRequest(
            message_id=event.causation_id or event.message_id,
            occurred_at=event.occurred_at,
            sender_clinic=event.referring_clinic,
            actor=event.actor,
            correlation_id=event.correlation_id,
            referral_id=event.referral_id,
            patient_ref=event.patient_ref,
            recipient_clinic=event.recipient_clinic,
            modality=event.modality,
            urgency=event.urgency,
            reason=event.reason,
            icd10_codes=event.icd10_codes,
            clinical_flags=event.clinical_flags,
            requested_techniques=event.requested_techniques,
            note=event.note,
            service_codings=event.service_codings,
            identifiers=event.identifiers,
            patient_details=event.patient_details,
        )
        step = _step(event, "request")
        referral = Referral(
            referral_id=event.referral_id,
            patient_ref=event.patient_ref,
            referring_clinic=event.referring_clinic,
            recipient_clinic=event.recipient_clinic,
            urgency=event.urgency,
            state=event.state,
            request=request,
            history=(step,),
        )
        self._keep(TaskView(referral, 1))

    def _transitioned(self, event: ReferralTransitioned) -> None:
        view = self.by_referral.get(event.referral_id)
        if view is None:
            return
        step = _step(event, event.transition)
        view.referral = msgspec.structs.replace(
            view.referral,
            state=event.state,
            recipient_clinic=event.recipient_clinic,
            history=(*view.referral.history, step),
        )
        view.version += 1

    def _keep(self, view: TaskView) -> None:
        self.by_referral[view.referral.referral_id] = view
        self.by_task[referral_fhir.resource_id("Task", view.referral)] = view.referral.referral_id

    def task(self, task_id: str) -> TaskView | None:
        """The referral whose Task has ``task_id``, if this clinic is a party to it."""
        referral_id = self.by_task.get(task_id)
        return self.by_referral.get(referral_id) if referral_id else None


def _step(event: ReferralEvent, transition: str) -> HistoryItem:
    extra: dict[str, Any] = {}
    if isinstance(event, ReferralTransitioned):
        extra = {
            "detail": event.detail,
            "reason_code": event.reason_code,
            "appointment_at": event.appointment_at,
            "appointment_end": event.appointment_end,
            "outcome": event.outcome,
            "forwarded_to": event.forwarded_to,
        }
    return HistoryItem(
        message_id=event.causation_id or event.message_id,
        transition=transition,
        by_clinic=event.sender_clinic,
        actor=event.actor,
        at=event.occurred_at,
        state=event.state,
        correlation_id=event.correlation_id,
        **extra,
    )


def task_resource(view: TaskView) -> dict[str, Any]:
    """The referral's Task, as ``referrals.fhir_task`` exports it, with its version.

    The export's ``basedOn`` and ``focus`` name the ServiceRequest by the ``urn:uuid:`` that
    resolves inside its Bundle; a Task served on its own names it ``ServiceRequest/<id>``,
    which resolves with a GET on this server.
    """
    task: dict[str, Any] = referral_fhir.bundle(view.referral)["entry"][1]["resource"]
    service_request = {"reference": f"ServiceRequest/{referral_fhir.resource_id('ServiceRequest', view.referral)}"}
    task["basedOn"] = [{**service_request, "type": "ServiceRequest"}]
    task["focus"] = {**service_request, "type": "ServiceRequest"}
    if view.referral.request.patient_details is not None:
        task["for"] = {**task["for"], "reference": f"Patient/{referral_fhir.resource_id('Patient', view.referral)}"}
    task["meta"] = {"versionId": str(view.version), "lastUpdated": task["lastModified"]}
    return task


def at_version(view: TaskView, version: int) -> TaskView | None:
    """The referral as it stood at ``version`` (its first steps), for ``vread``; ``None`` if it never had it.

    Every step the clinic saw raised the version by one, so the first ``version`` steps are
    that version; the state is the last of them, the recipient the last one forwarded to.
    """
    referral = view.referral
    if not 1 <= version <= min(view.version, len(referral.history)):
        return None
    history = referral.history[:version]
    recipient = next(
        (item.forwarded_to for item in reversed(history) if item.forwarded_to),
        referral.request.recipient_clinic,
    )
    past = msgspec.structs.replace(referral, history=history, state=history[-1].state, recipient_clinic=recipient)
    return TaskView(past, version, view.identifiers)


def service_request_resource(view: TaskView) -> dict[str, Any]:
    """The referral's ServiceRequest, as ``referrals.fhir_task`` exports it."""
    resource: dict[str, Any] = referral_fhir.bundle(view.referral)["entry"][0]["resource"]
    if view.referral.request.patient_details is not None:
        reference = f"Patient/{referral_fhir.resource_id('Patient', view.referral)}"
        resource["subject"] = {**resource["subject"], "reference": reference}
    resource["meta"] = {"versionId": str(view.version), "lastUpdated": view.referral.history[-1].at.isoformat()}
    return resource


def transaction_response(view: TaskView, status: int, fhir_base: str, kinds: Sequence[str]) -> dict[str, Any]:
    """The ``transaction-response`` of a referral transaction: one entry per request entry, in its order.

    Each entry carries the resource as stored, its ``location`` (the version a ``vread``
    serves) and ``etag``. The Task's ``basedOn`` and ``focus`` name the ServiceRequest by
    its server id, whatever ``urn:uuid:`` the request used for it.
    """
    words = "201 Created" if status == 201 else "200 OK"  # noqa: PLR2004 - HTTP status
    stored = {"Task": task_resource(view), "ServiceRequest": service_request_resource(view)}
    entries = []
    for kind in kinds:
        resource = stored[kind]
        resource_id = resource["id"]
        entries.append(
            {
                "fullUrl": f"{fhir_base}/{kind}/{resource_id}",
                "resource": resource,
                "response": {
                    "status": words,
                    "location": f"{kind}/{resource_id}/_history/{view.version}",
                    "etag": f'W/"{view.version}"',
                    "lastModified": resource["meta"]["lastUpdated"],
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
