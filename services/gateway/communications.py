"""Interim consult notes as Communications, pure: a new one becomes ``referral.interim_note``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from referral_hub.contracts.referrals import (
    ReferralInterimNote,
)
from referral_hub.gateway.outcomes import convert, schema
from referral_hub.gateway.task_commands import Envelope, command_fields
from referral_hub.gateway.task_views import TaskView
from referral_hub.referrals import fhir_task as referral_fhir


def task_reference(resource: Mapping[str, Any]) -> str:
    """The Task id a Communication is ``basedOn`` (``Task/<id>`` or a full URL ending so)."""
    for based_on in resource.get("basedOn") or []:
        reference = based_on.get("reference", "") if isinstance(based_on, dict) else ""
        head, _, task_id = str(reference).rpartition("/")
        if head.endswith("Task") and task_id:
            return task_id
    msg = "Communication.basedOn must reference the referral's Task"
    raise schema(msg)


def interim_note(envelope: Envelope, view: TaskView, resource: Mapping[str, Any]) -> ReferralInterimNote:
    """The hub's ``referral.interim_note`` for a new Communication about a referral."""
    if resource.get("resourceType") != "Communication":
        msg = "the resource must be a Communication"
        raise schema(msg)
    texts = [p.get("contentString") for p in resource.get("payload") or [] if isinstance(p, dict)]
    note = " ".join(t for t in texts if isinstance(t, str))
    if not note:
        msg = "Communication.payload needs a contentString, the note"
        raise schema(msg)
    return convert({**command_fields(envelope, view), "note": note}, ReferralInterimNote)


def communications(view: TaskView) -> list[dict[str, Any]]:
    """The referral's interim notes as Communications, oldest first."""
    referral = view.referral
    task_id = referral_fhir.resource_id("Task", referral)
    found = []
    for step in referral.history:
        if step.transition != "interim_note":
            continue
        found.append(
            {
                "resourceType": "Communication",
                "id": str(uuid.uuid5(referral_fhir.RESOURCE_NAMESPACE, f"Communication/{step.message_id}")),
                "status": "completed",
                "basedOn": [{"reference": f"Task/{task_id}"}],
                "subject": {
                    "type": "Patient",
                    "identifier": {"system": referral_fhir.PATIENT_REF_SYSTEM, "value": referral.patient_ref},
                },
                "category": [{"text": "interim consult note"}],
                "sent": step.at.isoformat(),
                "sender": {
                    "type": "Organization",
                    "identifier": {"system": referral_fhir.CLINIC_SYSTEM, "value": step.by_clinic},
                },
                "payload": [{"contentString": step.detail}],
            }
        )
    return found
