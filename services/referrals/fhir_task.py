"""A referral as FHIR R4: a ServiceRequest (what was asked) and a Task (where it stands).

Shaped after the HL7 BSeR profile: the Task's ``businessStatus`` carries the BSeR code with
its display from the IG's CodeSystem, ``status`` the FHIR Task status, and the Task has a
placer (PLAC) and a filler (FILL) identifier. Plain dicts, so the output is exactly the JSON
a FHIR server would accept.

The Bundle stands on its own: each entry's ``fullUrl`` is a ``urn:uuid:`` with a name-based
(version 5) UUID made from the referral id, so exporting a referral twice names its
resources alike, and the Task's ``basedOn`` and ``focus`` point at the ServiceRequest's
``fullUrl``, which resolves inside the Bundle. Clinics and the patient are logical
references (identifiers), since the hub holds no Organization or Patient resources.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from referral_hub.contracts.referrals import ConsultNote, ReferralState
from referral_hub.referrals import lifecycle
from referral_hub.referrals.domain import HistoryItem, Referral

BSER_STATUS_SYSTEM: Final = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
BSER_DISPLAY: Final = {
    "2.0": "Service Request Created",
    "3.0": "Service Request Accepted",
    "4.0": "Service Request Declined",
    "5.1.1": "Service Request Event Scheduled",
    "5.1.2": "Scheduled Service Request Event Unattended",
    "5.1.3": "Scheduled Service Request Event Cancelled",
    "5.1.4": "Service Request Event Completed",
    "5.2": "Service Request Cancellation Requested",
    "6.0": "Service Request Fulfillment Cancelled",
    "7.0": "Service Request Fulfillment Completed",
}
"""The display of each code the hub uses, as the BSeR IG's CodeSystem (STU2) words it."""
IDENTIFIER_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
ICD10_SYSTEM: Final = "http://hl7.org/fhir/sid/icd-10-cm"
REFERRAL_ID_SYSTEM: Final = "urn:referral-hub:referral-id"
CLINIC_SYSTEM: Final = "urn:referral-hub:clinic"
PATIENT_REF_SYSTEM: Final = "urn:referral-hub:patient-ref"
MODALITY_SYSTEM: Final = "urn:referral-hub:modality"
RESOURCE_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-hub:fhir")
"""The namespace of the resources' name-based UUIDs."""
REASON_SYSTEM: Final = "urn:referral-hub:reason-code"
"""The system of a decline's or cancel's reason code: the clinic's own words, not a shared code list."""
STATUS_REASON_STATES: Final = frozenset(
    {ReferralState.DECLINED, ReferralState.CANCELLED, ReferralState.CANCEL_REQUESTED}
)
SERVICE_REQUEST_STATUS: Final = {
    ReferralState.CLOSED: "completed",
    ReferralState.DECLINED: "revoked",
    ReferralState.CANCELLED: "revoked",
}


def resource_id(resource_type: str, referral: Referral) -> str:
    """The UUID of one of a referral's resources: its ``id``, and its ``fullUrl`` after ``urn:uuid:``."""
    return str(uuid.uuid5(RESOURCE_NAMESPACE, f"{resource_type}/{referral.referral_id}"))


def business_status(referral: Referral) -> lifecycle.Status:
    """The referral's BSeR status, as its last transition announced it.

    A referral cancelled after an appointment was scheduled is "Scheduled Service Request
    Event Cancelled" (5.1.3), not the plain 6.0, as ``domain`` says in its event.
    """
    if referral.state is ReferralState.CANCELLED and any(
        item.state is ReferralState.SCHEDULED for item in referral.history
    ):
        return lifecycle.SCHEDULED_EVENT_CANCELLED
    return lifecycle.STATUS[referral.state]


def _clinic(clinic_id: str) -> dict[str, Any]:
    return {"type": "Organization", "identifier": {"system": CLINIC_SYSTEM, "value": clinic_id}}


def service_code(referral: Referral) -> dict[str, Any]:
    """What was ordered: the sender's codings as sent, or else the modality's; the words for people."""
    request = referral.request
    codings = [
        {key: value for key, value in (("system", c.system), ("code", c.code), ("display", c.display)) if value}
        for c in request.service_codings
    ] or [{"system": MODALITY_SYSTEM, "code": request.modality.value}]
    return {"coding": codings, "text": f"Referral for {request.modality.value.replace('_', ' ')}"}


def task_outputs(outcome: ConsultNote) -> list[dict[str, Any]]:
    """A completion's outcome as typed outputs, the shape the gateway reads them in."""
    outputs: list[dict[str, Any]] = [{"type": {"text": "visits"}, "valueInteger": outcome.visits}]
    outputs += [{"type": {"text": "technique"}, "valueString": technique} for technique in outcome.techniques]
    outputs += [
        {"type": {"text": name}, "valueString": text}
        for name, text in (("response", outcome.response), ("recommendations", outcome.recommendations))
        if text
    ]
    return outputs


def _execution_period(referral: Referral) -> dict[str, str] | None:
    """The appointment of the latest schedule step, as ``Task.executionPeriod``."""
    scheduled = next((item for item in reversed(referral.history) if item.appointment_at is not None), None)
    if scheduled is None or scheduled.appointment_at is None:
        return None
    period = {"start": scheduled.appointment_at.isoformat()}
    if scheduled.appointment_end is not None:
        period["end"] = scheduled.appointment_end.isoformat()
    return period


def _request_details(referral: Referral) -> dict[str, Any]:
    """The request's optional content: techniques as ``orderDetail``, flags as ``supportingInfo``, the note.

    The clinical flags are display-only references, since the hub holds no Condition or
    MedicationStatement resources; each says what it is (``condition:`` or ``medication:``).
    """
    request = referral.request
    details: dict[str, Any] = {}
    if request.requested_techniques:
        details["orderDetail"] = [{"text": technique} for technique in request.requested_techniques]
    flags = [f"condition: {c}" for c in request.clinical_flags.conditions] + [
        f"medication: {m}" for m in request.clinical_flags.medications
    ]
    if flags:
        details["supportingInfo"] = [{"display": flag} for flag in flags]
    if request.note:
        details["note"] = [{"text": request.note, "time": referral.history[0].at.isoformat()}]
    return details


def step_note(item: HistoryItem) -> dict[str, Any]:
    """A step's note or reason as a Task ``note``: the step's name, then what the clinic wrote."""
    return {
        "authorReference": _clinic(item.by_clinic),
        "time": item.at.isoformat(),
        "text": f"{item.transition.replace('_', ' ')}: {item.detail}",
    }


def _step_details(referral: Referral) -> dict[str, Any]:
    """What the steps said: notes and reasons as ``note``, and the refusal's reason.

    Interim notes are Communications of their own and stay out of ``note``. ``statusReason``
    is set only while the referral stands declined or cancelled (or asked to be), so a client
    that sends the Task back for its next step never repeats an old reason.
    """
    details: dict[str, Any] = {}
    notes = [step_note(item) for item in referral.history if item.detail and item.transition != "interim_note"]
    if notes:
        details["note"] = notes
    last = next((item for item in reversed(referral.history) if item.reason_code), None)
    if last is not None and referral.state in STATUS_REASON_STATES:
        reason: dict[str, Any] = {"coding": [{"system": REASON_SYSTEM, "code": last.reason_code}]}
        if last.detail:
            reason["text"] = last.detail
        details["statusReason"] = reason
    return details


def bundle(referral: Referral) -> dict[str, Any]:
    """A FHIR R4 collection Bundle holding the referral's ServiceRequest and Task."""
    request = referral.request
    status = business_status(referral)
    service_request_id = resource_id("ServiceRequest", referral)
    task_id = resource_id("Task", referral)
    service_request_url = f"urn:uuid:{service_request_id}"
    identifier = {"system": REFERRAL_ID_SYSTEM, "value": str(referral.referral_id)}
    reason: dict[str, Any] = {"text": request.reason}
    if request.icd10_codes:
        reason["coding"] = [{"system": ICD10_SYSTEM, "code": code} for code in request.icd10_codes]
    service_request = {
        "resourceType": "ServiceRequest",
        "id": service_request_id,
        "identifier": [identifier],
        "status": SERVICE_REQUEST_STATUS.get(referral.state, "active"),
        "intent": "order",
        "priority": "urgent" if request.urgency.value == "urgent" else "routine",
        "code": service_code(referral),
        "subject": {"type": "Patient", "identifier": {"system": PATIENT_REF_SYSTEM, "value": referral.patient_ref}},
        "authoredOn": referral.history[0].at.isoformat(),
        "requester": _clinic(referral.referring_clinic),
        "performer": [_clinic(referral.recipient_clinic)],
        "reasonCode": [reason],
        **_request_details(referral),
    }
    if request.note:
        service_request["note"] = [{"text": request.note}]
    own = [{"system": i.system, "value": i.value} if i.system else {"value": i.value} for i in request.identifiers]
    task = {
        "resourceType": "Task",
        "id": task_id,
        "identifier": [
            {
                **identifier,
                "type": {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "PLAC"}]},
                "assigner": _clinic(referral.referring_clinic),
            },
            {
                **identifier,
                "type": {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "FILL"}]},
                "assigner": _clinic(referral.recipient_clinic),
            },
            *own,
        ],
        "basedOn": [{"reference": service_request_url, "type": "ServiceRequest"}],
        "status": status.fhir_task_status,
        "businessStatus": {
            "coding": [
                {"system": BSER_STATUS_SYSTEM, "code": status.bser_code, "display": BSER_DISPLAY[status.bser_code]}
            ]
        },
        "intent": "order",
        "code": service_request["code"],
        "focus": {"reference": service_request_url, "type": "ServiceRequest"},
        "for": service_request["subject"],
        "authoredOn": referral.history[0].at.isoformat(),
        "lastModified": referral.history[-1].at.isoformat(),
        "requester": _clinic(referral.referring_clinic),
        "owner": _clinic(referral.recipient_clinic),
    }
    task |= _step_details(referral)
    if request.note:
        task["note"] = [{"text": request.note}, *task.get("note", [])]
    period = _execution_period(referral)
    if period is not None:
        task["executionPeriod"] = period
    outcome = next((item.outcome for item in reversed(referral.history) if item.outcome is not None), None)
    if outcome is not None:
        task["output"] = task_outputs(outcome)
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": service_request_url, "resource": service_request},
            {"fullUrl": f"urn:uuid:{task_id}", "resource": task},
        ],
    }
