"""A referral as FHIR R4: a ServiceRequest (what was asked) and a Task (where it stands).

Shaped after the HL7 BSeR profile: the Task's ``businessStatus`` carries the BSeR code,
``status`` the FHIR Task status, and the Task has a placer (PLAC) and a filler (FILL)
identifier. Plain dicts, so the output is exactly the JSON a FHIR server would accept.
"""

from __future__ import annotations

from typing import Any, Final

from referral_hub.contracts.referrals import ReferralState
from referral_hub.referrals import lifecycle
from referral_hub.referrals.domain import Referral

BSER_STATUS_SYSTEM: Final = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
IDENTIFIER_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
ICD10_SYSTEM: Final = "http://hl7.org/fhir/sid/icd-10-cm"
REFERRAL_ID_SYSTEM: Final = "urn:referral-hub:referral-id"
SERVICE_REQUEST_STATUS: Final = {
    ReferralState.CLOSED: "completed",
    ReferralState.DECLINED: "revoked",
    ReferralState.CANCELLED: "revoked",
}


def bundle(referral: Referral) -> dict[str, Any]:
    """A FHIR R4 collection Bundle holding the referral's ServiceRequest and Task."""
    request = referral.request
    status = lifecycle.STATUS[referral.state]
    service_request_id = f"sr-{referral.referral_id}"
    identifier = {"system": REFERRAL_ID_SYSTEM, "value": str(referral.referral_id)}
    service_request = {
        "resourceType": "ServiceRequest",
        "id": service_request_id,
        "identifier": [identifier],
        "status": SERVICE_REQUEST_STATUS.get(referral.state, "active"),
        "intent": "order",
        "priority": "urgent" if request.urgency.value == "urgent" else "routine",
        "code": {"text": f"Referral for {request.modality.value.replace('_', ' ')}"},
        "subject": {"identifier": {"system": "urn:referral-hub:patient-ref", "value": referral.patient_ref}},
        "authoredOn": referral.history[0].at.isoformat(),
        "requester": {"identifier": {"value": referral.referring_clinic}},
        "performer": [{"identifier": {"value": referral.recipient_clinic}}],
        "reasonCode": [
            {
                "coding": [{"system": ICD10_SYSTEM, "code": code} for code in request.icd10_codes],
                "text": request.reason,
            },
        ],
    }
    task = {
        "resourceType": "Task",
        "id": f"task-{referral.referral_id}",
        "identifier": [
            {
                **identifier,
                "type": {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "PLAC"}]},
                "assigner": {"identifier": {"value": referral.referring_clinic}},
            },
            {
                **identifier,
                "type": {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "FILL"}]},
                "assigner": {"identifier": {"value": referral.recipient_clinic}},
            },
        ],
        "basedOn": [{"reference": f"ServiceRequest/{service_request_id}"}],
        "status": status.fhir_task_status,
        "businessStatus": {
            "coding": [{"system": BSER_STATUS_SYSTEM, "code": status.bser_code, "display": status.bser_display}]
        },
        "intent": "order",
        "focus": {"reference": f"ServiceRequest/{service_request_id}"},
        "for": service_request["subject"],
        "authoredOn": referral.history[0].at.isoformat(),
        "lastModified": referral.history[-1].at.isoformat(),
        "requester": {"identifier": {"value": referral.referring_clinic}},
        "owner": {"identifier": {"value": referral.recipient_clinic}},
    }
    outcome = next((item.outcome for item in reversed(referral.history) if item.outcome is not None), None)
    if outcome is not None:
        task["output"] = [
            {
                "type": {"text": "consult note"},
                "valueString": (
                    f"visits: {outcome.visits}; techniques: {', '.join(outcome.techniques)}; "
                    f"response: {outcome.response}; recommendations: {outcome.recommendations}"
                ),
            },
        ]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{service_request_id}", "resource": service_request},
            {"fullUrl": f"urn:uuid:task-{referral.referral_id}", "resource": task},
        ],
    }
