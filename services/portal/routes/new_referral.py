"""The new-referral form: validated, sent as the clinic, its attachments stored once the hub accepts it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.response import Template

from referral_hub.contracts.referrals import ReferralRequest
from referral_hub.contracts.rejections import Rejection
from referral_hub.portal import domain, forms, patient_details
from referral_hub.portal.routes.documents import (
    UPLOAD_BODY_BYTES,
    attached_files,
    attachment_status,
    not_stored_words,
    store_documents,
)
from referral_hub.portal.web import PREFIX, Member, Portal, form_fields, page_context, portal_of, see_other
from referral_hub.runtime.jetstream import topology
from referral_hub.sealing.core import SealingError

# --- New referral -----------------------------------------------------------------------------


def _offers(portal: Portal) -> dict[str, tuple[str, ...]]:
    return {clinic.id: tuple(m.value for m in clinic.modalities) for clinic in portal.clinics.values()}


@get("/referrals/new")
async def new_referral_page(request: Request[Any, Any, Any]) -> Template:
    """The new-referral form."""
    portal = portal_of(request)
    member = await portal.current(request)
    return Template(
        "new_referral.html", context=page_context(member, **_new_form_context(portal, member, forms.FormResult()))
    )


def _new_form_context(portal: Portal, member: Member, result: forms.FormResult) -> dict[str, object]:
    choices = [
        (f"{clinic.id}|{modality}", f"{clinic.name} — {modality.replace('_', ' ')}")
        for clinic in portal.clinics.values()
        if clinic.id != member.clinic.id
        for modality in (m.value for m in clinic.modalities)
    ]
    today = datetime.now(UTC).date().isoformat()
    return {"choices": choices, "errors": result.errors, "values": result.values, "today": today}


@post("/referrals/new", status_code=303, request_max_body_size=UPLOAD_BODY_BYTES)
async def new_referral_submit(request: Request[Any, Any, Any]) -> Response[Any]:
    """Validate, send as the clinic, and show the hub's answer (a hold with its rules, or a refusal).

    Attachments are checked with the form and stored once the hub has accepted the
    referral, so they belong to a referral that exists; any not stored are named on the
    referral page.
    """
    portal = portal_of(request)
    member = await portal.current(request)
    fields = await form_fields(request)
    result = forms.new_referral(fields, member.actor, _offers(portal))
    details, problems = patient_details.details_of(fields, datetime.now(UTC).date())
    result.errors |= problems
    parts = await attached_files(request)
    files, problem = forms.attachments(parts, topology.GATEWAY_DOCUMENT_MAX_BYTES)
    if problem:
        result.errors["attachments"] = problem
    if result.message is None or problem or problems:
        context = page_context(member, **_new_form_context(portal, member, result))
        return Template("new_referral.html", context=context, status_code=attachment_status(parts))
    message = result.message
    if details is not None and isinstance(message, ReferralRequest):
        try:
            message = portal.patients.seal_request(portal.clinics, message, details)
        except SealingError as exc:
            result.errors["form"] = f"The patient's details could not be sealed: {exc}"
            context = page_context(member, **_new_form_context(portal, member, result))
            return Template("new_referral.html", context=context, status_code=409)
    answer = await portal.connections.send_and_confirm(member.clinic.id, message)
    if isinstance(answer.message, Rejection):
        result.errors["form"] = domain.rejection_words(answer.message)
        context = page_context(member, **_new_form_context(portal, member, result))
        return Template("new_referral.html", context=context, status_code=400)
    referral_id = UUID(str(getattr(result.message, "referral_id", "")))
    failed = await store_documents(portal, member, referral_id, str(getattr(result.message, "patient_ref", "")), files)
    if failed:
        await portal.flash(member, not_stored_words(failed))
    return see_other(f"{PREFIX}/referrals/{referral_id}")


HANDLERS: Final = (new_referral_page, new_referral_submit)
