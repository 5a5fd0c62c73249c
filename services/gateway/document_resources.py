"""DocumentReference in and out, pure: an upload's parts checked, stored metadata rendered.

The store, its index and the metadata itself are ``referral_hub.documents``', shared with
the portal; this is only the FHIR shape of them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from referral_hub.contracts.rejections import RejectionCode
from referral_hub.documents.domain import DocumentMeta
from referral_hub.gateway.communications import task_reference
from referral_hub.gateway.outcomes import FhirError, schema
from referral_hub.referrals import fhir_task as referral_fhir


@dataclass(frozen=True)
class Upload:
    """A DocumentReference's parts, decoded and checked."""

    task_id: str
    title: str
    content_type: str
    data: bytes


def document_upload(resource: Mapping[str, Any], max_bytes: int) -> Upload:
    """The Task, title, type and bytes of a new DocumentReference (one base64 attachment)."""
    if resource.get("resourceType") != "DocumentReference":
        msg = "the resource must be a DocumentReference"
        raise schema(msg)
    related = ((resource.get("context") or {}).get("related")) or []
    task_id = task_reference({"basedOn": related})
    content = resource.get("content") or []
    attachment = content[0].get("attachment") if content and isinstance(content[0], dict) else None
    if not isinstance(attachment, dict) or not isinstance(attachment.get("data"), str):
        msg = "content[0].attachment.data (base64) is required"
        raise schema(msg)
    try:
        data = base64.b64decode(attachment["data"], validate=True)
    except ValueError as exc:
        msg = "attachment.data is not base64"
        raise schema(msg) from exc
    if len(data) > max_bytes:
        msg = f"the document is {len(data)} bytes; at most {max_bytes} are accepted"
        raise FhirError(413, RejectionCode.MESSAGE_TOO_LARGE, msg)
    content_type = str(attachment.get("contentType") or "application/octet-stream")
    title = str(attachment.get("title") or resource.get("description") or "document")[:120]
    return Upload(task_id, title, content_type, data)


def document_resource(meta: DocumentMeta, fhir_base: str) -> dict[str, Any]:
    """A stored document as a DocumentReference whose attachment URL is its Binary."""
    return {
        "resourceType": "DocumentReference",
        "id": meta.id,
        "status": "current",
        "identifier": [{"system": "urn:ietf:rfc:6920", "value": f"ni:///sha-256;{meta.sha256}"}],
        "subject": {
            "type": "Patient",
            "identifier": {"system": referral_fhir.PATIENT_REF_SYSTEM, "value": meta.patient_ref},
        },
        "date": meta.created.isoformat(),
        "author": [
            {"type": "Organization", "identifier": {"system": referral_fhir.CLINIC_SYSTEM, "value": meta.author}}
        ],
        "description": meta.title,
        "content": [
            {
                "attachment": {
                    "contentType": meta.content_type,
                    "url": f"{fhir_base}/Binary/{meta.id}",
                    "size": meta.size,
                    "title": meta.title,
                    "creation": meta.created.isoformat(),
                }
            }
        ],
        "context": {"related": [{"reference": f"Task/{meta.task_id}"}]},
    }
