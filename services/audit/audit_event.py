"""Audit entries as FHIR R4 AuditEvent resources. Pure.

The mapping follows the AuditEvent guidance for messaging:
- ``type`` says whether the entry concerns a patient record, or is a DICOM Security Alert
  (a refusal in ``rejections.SECURITY_CODES``, such as a spoofed sender);
- ``subtype`` is the hub message type;
- ``agent`` carries the clinic (the requestor) and the member;
- ``source`` names the hub service;
- ``entity`` carries the referral, the patient, the alert and the source message, with
  the payload digest and the chain hash as details.
"""

from __future__ import annotations

from typing import Any, Final

from referral_hub.audit.domain import SECURITY_ALERT
from referral_hub.contracts.audit import AuditEntry, AuditOutcome

DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SOURCE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACTION: Final = {"submit": "C", "deliver": "R", "event": "E", "deadletter": "E", SECURITY_ALERT: "E"}
ACTION_BY_TYPE: Final = {"access.viewed": "R"}
"""A portal's record of a member viewing patient data is a read, whatever path stored it."""
FAILED_TYPES: Final = frozenset({"access.login_failed"})
SECURITY_ALERT_TYPE: Final = {"system": DCM, "code": "110113", "display": "Security Alert"}


def _identifier(kind: str, value: str) -> dict[str, Any]:
    return {"identifier": {"system": f"urn:referral-hub:{kind}", "value": value}}


def _entity(kind: str, value: str, type_code: str, display: str) -> dict[str, Any]:
    return {"what": _identifier(kind, value), "type": {"system": ENTITY_TYPE, "code": type_code, "display": display}}


def to_audit_event(entry: AuditEntry, refused: str = "") -> dict[str, Any]:
    """One FHIR R4 AuditEvent for one audit entry; ``refused``: the code the hub later refused a submission with.

    A submission's entry is written as the message is stored, before any service decides on
    it; its dead letter says how it ended, and the export says so on the submission too.
    """
    about_patient = bool(entry.patient_ref)
    agents: list[dict[str, Any]] = []
    if entry.clinic:
        agents.append({"who": _identifier("clinic", entry.clinic), "requestor": True})
    if entry.member:
        agents.append({"who": _identifier("member", entry.member), "requestor": not entry.clinic})
    if not agents:
        agents.append({"who": _identifier("service", entry.service), "requestor": True})
    entities = [
        _entity(kind, value, code, display)
        for kind, value, code, display in (
            ("referral", entry.referral_id, "2", "System Object"),
            ("patient", entry.patient_ref, "1", "Person"),
            ("alert", entry.alert_id, "2", "System Object"),
        )
        if value
    ]
    message = _entity("message", entry.source_message_id, "2", "System Object")
    message["detail"] = [
        {"type": "payload-sha256", "valueString": entry.payload_sha256},
        {"type": "audit-entry-hash", "valueString": entry.entry_hash},
        {"type": "source", "valueString": f"{entry.source_stream}#{entry.source_sequence}"},
    ]
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(entry.index),
        "type": SECURITY_ALERT_TYPE
        if entry.action == SECURITY_ALERT
        else {
            "system": DCM,
            "code": "110110" if about_patient else "110100",
            "display": "Patient Record" if about_patient else "Application Activity",
        },
        "subtype": [{"system": "urn:referral-hub:message-type", "code": entry.message_type}],
        "action": ACTION_BY_TYPE.get(entry.message_type) or ACTION.get(entry.action, "E"),
        "period": {"start": entry.occurred_at.isoformat()},
        "recorded": entry.recorded_at.isoformat(),
        "outcome": "0"
        if entry.outcome is AuditOutcome.SUCCESS and entry.message_type not in FAILED_TYPES and not refused
        else "4",
        "agent": agents,
        "source": {
            "observer": {"display": f"referral-hub {entry.service}"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": [*entities, message],
    }
    if entry.rejection_code or refused:
        event["outcomeDesc"] = entry.rejection_code or f"refused:{refused}"
    return event
