"""Building FHIR input as a clinic's software would, and validating the gateway's output."""

from __future__ import annotations

import uuid
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.binary import Binary
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.careteam import CareTeam
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.subscription import Subscription
from fhir.resources.R4B.task import Task

MODELS = {
    "Task": Task,
    "Bundle": Bundle,
    "OperationOutcome": OperationOutcome,
    "CapabilityStatement": CapabilityStatement,
    "ServiceRequest": ServiceRequest,
    "Parameters": Parameters,
    "Subscription": Subscription,
    "Communication": Communication,
    "DocumentReference": DocumentReference,
    "CarePlan": CarePlan,
    "CareTeam": CareTeam,
    "Flag": Flag,
    "DetectedIssue": DetectedIssue,
    "AuditEvent": AuditEvent,
    "Binary": Binary,
}
LOCAL_ID_SYSTEM = "urn:example:harbor-pt:referral"


def valid(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource``, after fhir.resources' R4B model for its type accepted it."""
    MODELS[resource["resourceType"]].model_validate(resource)
    return resource


def clinic_ref(clinic: str) -> dict[str, Any]:
    return {"type": "Organization", "identifier": {"system": "urn:referral-hub:clinic", "value": clinic}}


def new_task(
    recipient: str = "lotus-acu",
    patient: str = "pt-0001",
    local_id: str | None = None,
    modality: str = "acupuncture",
    requester: str = "harbor-pt",
) -> dict[str, Any]:
    """A referral Task as BSeR shapes one: who asks whom, for whom, for what."""
    return {
        "resourceType": "Task",
        "identifier": [{"system": LOCAL_ID_SYSTEM, "value": local_id or str(uuid.uuid4())}],
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": "urn:referral-hub:modality", "code": modality}]},
        "for": {"type": "Patient", "identifier": {"system": "urn:referral-hub:patient-ref", "value": patient}},
        "requester": clinic_ref(requester),
        "owner": clinic_ref(recipient),
        "reasonCode": {"text": "Chronic tension-type headache"},
        "description": "Chronic tension-type headache",
    }


def rejection_code(outcome: dict[str, Any]) -> str:
    valid(outcome)
    return str(outcome["issue"][0]["details"]["coding"][0]["code"])
