"""DocumentReference and Binary: documents attached to a referral, in the store the portal shares.

Storing, listing, reading with its hash check and the audit record are
``referral_hub.documents``'; these handlers check the token's party to the referral and
render FHIR.
"""

from __future__ import annotations

import base64
from typing import Any, Final

import structlog
from litestar import Request, Response, get, post

from referral_hub.contracts.rejections import RejectionCode
from referral_hub.documents import domain as documents
from referral_hub.documents.domain import DocumentMeta
from referral_hub.gateway import document_resources, fhir_search, negotiation, outcomes
from referral_hub.gateway.adapters import ClinicLink
from referral_hub.gateway.outcomes import FhirError, GatewayCode
from referral_hub.gateway.task_commands import Envelope
from referral_hub.gateway.web import Gateway, caught_up, fhir, gateway_of, json_body, task_view
from referral_hub.runtime.jetstream import topology

log = structlog.get_logger(__name__)

DOCUMENT_BODY_BYTES: Final = 28 * 1024 * 1024
"""A 20 MiB document as base64 in JSON, with room for the resource around it."""


async def _record_access(link: ClinicLink, envelope: Envelope, meta: DocumentMeta, what: str) -> None:
    """Put the document's SHA-256 in the hub's audit log: an access record on the clinic's own out subject."""
    record = documents.access_record(meta, clinic=envelope.clinic, actor=envelope.actor, now=envelope.now, what=what)
    await link.client.send(record)


@post("/fhir/DocumentReference", status_code=201, request_max_body_size=DOCUMENT_BODY_BYTES)
async def create_document(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A document (a referral letter, an imaging report) attached to one of the clinic's referrals."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DocumentReference", "c")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a DocumentReference")
    upload = document_resources.document_upload(body, topology.GATEWAY_DOCUMENT_MAX_BYTES)
    link, view = await task_view(gateway, grant.clinic, upload.task_id)
    envelope = await gateway.envelope(grant.clinic)
    try:
        meta = documents.describe(
            data=upload.data,
            referral_id=view.referral.referral_id,
            patient_ref=view.referral.patient_ref,
            title=upload.title,
            content_type=upload.content_type,
            author=grant.clinic,
            created=envelope.now,
            max_bytes=topology.GATEWAY_DOCUMENT_MAX_BYTES,
        )
        await gateway.store.documents.put(meta, upload.data)
    except documents.DocumentQuotaError as exc:
        raise FhirError(422, GatewayCode.QUOTA_EXCEEDED, str(exc)) from exc
    except documents.DocumentRejectedError as exc:
        raise outcomes.schema(str(exc)) from exc
    await _record_access(link, envelope, meta, "uploaded")
    log.info("gateway_document_stored", clinic=grant.clinic, document=meta.id, size=meta.size)
    location = {"Location": f"{gateway.settings.fhir_base}/DocumentReference/{meta.id}"}
    return fhir(document_resources.document_resource(meta, gateway.settings.fhir_base), 201, location)


async def _document(gateway: Gateway, clinic: str, document_id: str) -> tuple[ClinicLink, DocumentMeta]:
    """A stored document's metadata, if ``clinic`` is a party to its referral; else 404.

    A document the portal stored a moment ago can name a referral this clinic's folded view
    has not reached yet, so the view catches up before the answer is 404.
    """
    link = await gateway.connections.link(clinic)
    try:
        meta = await gateway.store.documents.meta(document_id)
    except documents.DocumentNotFoundError:
        meta = None
    if meta is not None and meta.referral_id not in link.referrals.by_referral:
        await caught_up(link)
    if meta is None or meta.referral_id not in link.referrals.by_referral:
        raise outcomes.not_found("DocumentReference", document_id)  # noqa: EM101 - the resource's name, not a message
    return link, meta


@get("/fhir/DocumentReference/{document_id:str}")
async def read_document(request: Request[Any, Any, Any], document_id: str) -> Response[bytes]:
    """A document's metadata, for the referral's parties only."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DocumentReference", "r")
    _, meta = await _document(gateway, grant.clinic, document_id)
    return fhir(document_resources.document_resource(meta, gateway.settings.fhir_base))


@get("/fhir/DocumentReference")
async def search_documents(request: Request[Any, Any, Any]) -> Response[bytes]:
    """One referral's documents: ``related=Task/<id>`` (or the bare id), oldest first.

    As for a Task search, a referral this clinic is not a party to (or that does not exist)
    gives an empty searchset, never a 404 that would say it exists. ``related`` is required:
    documents are indexed per referral.
    """
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DocumentReference", "s")
    unknown = set(request.query_params) - {"related"}
    related = request.query_params.getall("related") if "related" in request.query_params else []
    if unknown or len(related) != 1:
        words = "search DocumentReference by one related=Task/<id>"
        raise FhirError(400, GatewayCode.UNSUPPORTED, words)
    task_id = related[0].rpartition("/")[2]
    link = await caught_up(await gateway.connections.link(grant.clinic))
    view = link.referrals.task(task_id)
    found = await gateway.store.documents.for_referral(view.referral.referral_id) if view is not None else []
    resources = [document_resources.document_resource(meta, gateway.settings.fhir_base) for meta in found]
    links = {"self": f"{gateway.settings.fhir_base}/DocumentReference?related=Task/{task_id}"}
    return fhir(fhir_search.searchset(gateway.settings.fhir_base, resources, len(resources), links))


@get("/fhir/Binary/{document_id:str}")
async def read_binary(request: Request[Any, Any, Any], document_id: str) -> Response[bytes]:
    """A document's bytes, for the referral's parties only; the read is recorded in the audit log."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Binary", "r")
    link, meta = await _document(gateway, grant.clinic, document_id)
    try:
        data = await gateway.store.documents.read(meta)
    except documents.DocumentCorruptError as exc:
        raise FhirError(500, RejectionCode.PROCESSING_FAILED, "the stored document does not match its hash") from exc
    except documents.DocumentNotFoundError as exc:
        raise outcomes.not_found("Binary", document_id) from exc  # noqa: EM101 - the resource's name, not a message
    await _record_access(link, await gateway.envelope(grant.clinic), meta, "read")
    if negotiation.wants_resource(request.headers.get("accept")):
        # Asked for FHIR JSON: the Binary resource, its content in base64.
        resource = {
            "resourceType": "Binary",
            "id": meta.id,
            "contentType": meta.content_type,
            "data": base64.b64encode(data).decode("ascii"),
        }
        return fhir(resource, headers={"ETag": f'"{meta.sha256}"'})
    # Served as its own type to FHIR clients, but never run as a page on the gateway's origin.
    headers = {"ETag": f'"{meta.sha256}"', "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    return Response(data, media_type=meta.content_type, headers=headers)


HANDLERS: Final = (create_document, read_document, search_documents, read_binary)
