"""A referral's documents: files attached from a form, stored and audited; downloads that never run here."""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

import nats.errors
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException, NotFoundException
from litestar.response import Template

from referral_hub.documents import domain as documents
from referral_hub.portal import document_views, domain, forms
from referral_hub.portal.routes.referrals import referral_context, referral_view
from referral_hub.portal.web import PREFIX, Member, Portal, portal_of, see_other
from referral_hub.runtime.jetstream import topology

log = structlog.get_logger(__name__)
UPLOAD_BODY_BYTES: Final = topology.GATEWAY_DOCUMENT_MAX_BYTES + 5 * 1024 * 1024
"""A form with files: one document at the 20 MiB limit and the form around it; several files share it."""
DOWNLOAD_CSP: Final = "sandbox; default-src 'none'"
"""A downloaded document is never a page of the portal: no script, no origin, nothing loaded."""


# --- Documents --------------------------------------------------------------------------------


async def attached_files(request: Request[Any, Any, Any]) -> list[forms.Attachment]:
    """The form's ``attachments`` file parts (a multipart form; none in a plain one)."""
    data = await request.form()
    return [
        forms.Attachment(part.filename or "", part.content_type or "", await part.read())
        for part in data.getall("attachments", [])
        if isinstance(part, UploadFile)
    ]


def attachment_status(parts: list[forms.Attachment]) -> int:
    """413 when a file is over the limit, else 400: the form's error says which and why."""
    return 413 if any(len(part.data) > topology.GATEWAY_DOCUMENT_MAX_BYTES for part in parts) else 400


async def store_documents(
    portal: Portal, member: Member, referral_id: UUID, patient_ref: str, files: list[forms.Attachment]
) -> list[str]:
    """Store each file under the referral and audit its upload; the names of those not stored.

    A file the store refuses or cannot take is named back to the member, never dropped
    silently; the others are stored and listed.
    """
    failed = []
    for file in files:
        now = domain.utc_now()
        try:
            meta = documents.describe(
                data=file.data,
                referral_id=referral_id,
                patient_ref=patient_ref,
                title=file.filename,
                content_type=file.content_type,
                author=member.clinic.id,
                created=now,
                max_bytes=topology.GATEWAY_DOCUMENT_MAX_BYTES,
            )
            await portal.storage().documents.put(meta, file.data)
        except (documents.DocumentError, nats.errors.Error) as exc:
            log.warning("portal_document_not_stored", clinic=member.clinic.id, error=str(exc))
            failed.append(file.filename or "a file")
            continue
        record = documents.access_record(meta, clinic=member.clinic.id, actor=member.member, now=now, what="uploaded")
        await portal.record(member, record)
        log.info("portal_document_stored", clinic=member.clinic.id, document=meta.id, size=meta.size)
    return failed


def not_stored_words(failed: list[str]) -> str:
    """The files :func:`store_documents` could not store, named to the member with what to do."""
    return f"These files were not stored: {', '.join(failed)}. Nothing else changed; attach them again."


@post("/referrals/{referral_id:uuid}/documents", status_code=303, request_max_body_size=UPLOAD_BODY_BYTES)
async def upload_documents(request: Request[Any, Any, Any], referral_id: UUID) -> Response[Any]:
    """Attach files to a referral this clinic is a party to (404 for any other, like every cross-clinic URL)."""
    portal = portal_of(request)
    member = await portal.current(request)
    view = await referral_view(portal, member, referral_id)
    parts = await attached_files(request)
    files, problem = forms.attachments(parts, topology.GATEWAY_DOCUMENT_MAX_BYTES)
    if not files and not problem:
        problem = "Choose a file to attach."
    if problem:
        context = await referral_context(portal, member, view, document_error=problem)
        return Template("referral.html", context=context, status_code=attachment_status(parts))
    failed = await store_documents(portal, member, referral_id, view.patient_ref, files)
    if failed:
        context = await referral_context(portal, member, view, document_error=not_stored_words(failed))
        return Template("referral.html", context=context, status_code=503)
    return see_other(f"{PREFIX}/referrals/{referral_id}")


@get("/referrals/{referral_id:uuid}/documents/{document_id:uuid}")
async def download_document(request: Request[Any, Any, Any], referral_id: UUID, document_id: UUID) -> Response[Any]:
    """A document of a referral this clinic is a party to, as a download that can never run on this origin.

    ``Content-Disposition: attachment``, ``nosniff``, a sandboxing CSP, and a script-capable
    type (HTML, SVG) sent as ``application/octet-stream``. The read is audited before the
    bytes go out, with the document's SHA-256, as the gateway does.
    """
    portal = portal_of(request)
    member = await portal.current(request)
    await referral_view(portal, member, referral_id)
    store = portal.storage().documents
    try:
        meta = await store.meta(str(document_id))
        if meta.referral_id != referral_id:
            raise NotFoundException
        data = await store.read(meta)
    except documents.DocumentNotFoundError as exc:
        raise NotFoundException from exc
    except documents.DocumentCorruptError as exc:
        log.error("portal_document_corrupt", document=str(document_id))  # noqa: TRY400 - the reason is the log line
        raise HTTPException(status_code=500, detail="The stored document does not match its hash.") from exc
    now = domain.utc_now()
    await portal.record(
        member, documents.access_record(meta, clinic=member.clinic.id, actor=member.member, now=now, what="read")
    )
    return Response(
        content=data,
        media_type=document_views.download_type(meta.content_type),
        headers={
            "Content-Disposition": f'attachment; filename="{document_views.download_name(meta.title)}"',
            "Content-Security-Policy": DOWNLOAD_CSP,
            "X-Content-Type-Options": "nosniff",
        },
    )


HANDLERS: Final = (upload_documents, download_document)
