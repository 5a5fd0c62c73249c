"""DocumentReference and Binary: documents attached to a referral, kept in the object store."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Final

import msgspec
import nats.errors
import structlog
from litestar import Request, Response, get, post
from nats.js.api import ObjectMeta
from nats.js.errors import ObjectNotFoundError

from referral_hub.contracts.access import AccessViewed
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.gateway import domain
from referral_hub.gateway.adapters import ClinicLink
from referral_hub.gateway.domain import Envelope, FhirError
from referral_hub.gateway.web import Gateway, fhir, gateway_of, json_body, task_view
from referral_hub.runtime import topology

log = structlog.get_logger(__name__)


# --- DocumentReference and Binary ------------------------------------------------------------

DOCUMENT_BODY_BYTES: Final = 28 * 1024 * 1024
"""A 20 MiB document as base64 in JSON, with room for the resource around it."""


async def _record_access(link: ClinicLink, envelope: Envelope, meta: domain.DocumentMeta, what: str) -> None:
    """Put the document's SHA-256 in the hub's audit log: an access record on the clinic's own out subject."""
    record = AccessViewed(
        message_id=uuid.uuid4(),
        occurred_at=envelope.now,
        sender_clinic=envelope.clinic,
        actor=envelope.actor,
        correlation_id=uuid.uuid4(),
        page=f"DocumentReference/{meta.id} {what} sha256:{meta.sha256}",
        referral_id=str(meta.referral_id),
        patient_ref=meta.patient_ref,
    )
    await link.client.send(record)


@post("/fhir/DocumentReference", status_code=201, request_max_body_size=DOCUMENT_BODY_BYTES)
async def create_document(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A document (a referral letter, an imaging report) attached to one of the clinic's referrals."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DocumentReference", "c")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a DocumentReference")
    upload = domain.document_upload(body, topology.GATEWAY_DOCUMENT_MAX_BYTES)
    link, view = await task_view(gateway, grant.clinic, upload.task_id)
    envelope = await gateway.envelope(grant.clinic)
    meta = domain.DocumentMeta(
        id=str(uuid.uuid4()),
        referral_id=view.referral.referral_id,
        task_id=upload.task_id,
        patient_ref=view.referral.patient_ref,
        title=upload.title,
        content_type=upload.content_type,
        size=len(upload.data),
        sha256=hashlib.sha256(upload.data).hexdigest(),
        author=grant.clinic,
        created=envelope.now,
    )
    await gateway.store.documents.put(
        meta.id, upload.data, ObjectMeta(name=meta.id, description=msgspec.json.encode(meta).decode())
    )
    await _record_access(link, envelope, meta, "uploaded")
    log.info("gateway_document_stored", clinic=grant.clinic, document=meta.id, size=meta.size)
    return fhir(domain.document_resource(meta, gateway.settings.fhir_base), 201)


async def _document(gateway: Gateway, clinic: str, document_id: str) -> tuple[ClinicLink, domain.DocumentMeta]:
    """A stored document's metadata, if ``clinic`` is a party to its referral; else 404."""
    link = await gateway.connections.link(clinic)
    try:
        info = await gateway.store.documents.get_info(document_id)
        meta = msgspec.json.decode(info.description or "", type=domain.DocumentMeta)
    except (ObjectNotFoundError, msgspec.DecodeError, nats.errors.Error):
        meta = None
    if meta is None or meta.referral_id not in link.referrals.by_referral:
        raise domain.not_found("DocumentReference", document_id)  # noqa: EM101 - the resource's name, not a message
    return link, meta


@get("/fhir/DocumentReference/{document_id:str}")
async def read_document(request: Request[Any, Any, Any], document_id: str) -> Response[bytes]:
    """A document's metadata, for the referral's parties only."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DocumentReference", "r")
    _, meta = await _document(gateway, grant.clinic, document_id)
    return fhir(domain.document_resource(meta, gateway.settings.fhir_base))


@get("/fhir/Binary/{document_id:str}")
async def read_binary(request: Request[Any, Any, Any], document_id: str) -> Response[bytes]:
    """A document's bytes, for the referral's parties only; the read is recorded in the audit log."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Binary", "r")
    link, meta = await _document(gateway, grant.clinic, document_id)
    stored = await gateway.store.documents.get(document_id)
    data = stored.data or b""
    if hashlib.sha256(data).hexdigest() != meta.sha256:
        raise FhirError(500, RejectionCode.PROCESSING_FAILED, "the stored document does not match its hash")
    await _record_access(link, await gateway.envelope(grant.clinic), meta, "read")
    return Response(data, media_type=meta.content_type, headers={"ETag": f'"{meta.sha256}"'})


HANDLERS: Final = (create_document, read_document, read_binary)
