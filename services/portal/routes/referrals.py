"""A referral's page (state, timeline, documents, the steps this clinic may take now) and its lifecycle steps."""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

import nats.errors
from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.response import Template

from referral_hub.contracts.rejections import Rejection
from referral_hub.documents import domain as documents
from referral_hub.portal import document_views, domain, forms, referral_views
from referral_hub.portal.web import PREFIX, Member, Portal, form_fields, page_context, portal_of, see_other
from referral_hub.sealing.core import SealingError

# --- Referrals --------------------------------------------------------------------------------


async def referral_view(portal: Portal, member: Member, referral_id: UUID) -> referral_views.ReferralView:
    """The referral as this clinic's inbox tells it; 404 when the clinic is not a party to it."""
    mirror = await portal.connections.mirror(member.clinic.id)
    view = referral_views.referral_view(mirror.items, referral_id, member.clinic.id, member.clinic.timezone)
    if view is None:
        raise NotFoundException
    return view


async def referral_context(
    portal: Portal, member: Member, view: referral_views.ReferralView, **values: object
) -> dict[str, object]:
    """What ``referral.html`` shows: the view, its documents, and any refusal or form errors.

    A document list the store cannot give is said on the page; the rest of the referral shows.
    """
    defaults: dict[str, object] = {"refused": "", "errors": {}, "document_error": ""}
    try:
        found = await portal.storage().documents.for_referral(UUID(view.referral_id))
    except (documents.DocumentError, nats.errors.Error):
        found = []
        defaults["document_error"] = "The referral's documents cannot be listed right now; reload in a moment."
    given = {name: value for name, value in values.items() if value or name != "document_error"}
    sealed = view.request.patient_details if view.request is not None else None
    patient = portal.patients.read(portal.clinics, member.clinic.id, sealed, UUID(view.referral_id)) if sealed else None
    return page_context(
        member,
        view=view,
        patient=patient,
        documents=document_views.document_rows(found, member.clinic.timezone),
        reasons=forms.REASON_CODES,
        forward_choices=forward_choices(portal, member, view),
        **{**defaults, **given},
    )


def forward_choices(portal: Portal, member: Member, view: referral_views.ReferralView) -> list[tuple[str, str]]:
    """The registry's clinics that practise the referral's modality, but this one and the referrer: (id, name)."""
    modality = view.request.modality if view.request else None
    return [
        (clinic.id, clinic.name)
        for clinic in portal.clinics.values()
        if clinic.id not in {member.clinic.id, view.referring_clinic}
        and (modality is None or modality in clinic.modalities)
    ]


@get("/referrals/{referral_id:uuid}")
async def referral_page(request: Request[Any, Any, Any], referral_id: UUID) -> Template:
    """A referral: state with its BSeR code, the timeline, its documents, the steps this clinic may take now."""
    portal = portal_of(request)
    member = await portal.current(request)
    view = await referral_view(portal, member, referral_id)
    await portal.viewed(member, "referral", referral_id=view.referral_id, patient_ref=view.patient_ref)
    await portal.storage().mark_read(member.clinic.id, member.member, view.event_numbers)
    context = await referral_context(portal, member, view)
    return Template("referral.html", context=context)


@post("/referrals/{referral_id:uuid}/{step:str}", status_code=303)
async def referral_step(request: Request[Any, Any, Any], referral_id: UUID, step: str) -> Response[Any]:
    """One lifecycle step, sent as the clinic; a refusal comes back in plain words."""
    portal = portal_of(request)
    member = await portal.current(request)
    view = await referral_view(portal, member, referral_id)
    choices = {clinic for clinic, _ in forward_choices(portal, member, view)}
    form = await form_fields(request)
    result = forms.transition(step, form, member.actor, referral_id, view.patient_ref, forward_to=choices)
    if result.message is None:
        context = await referral_context(portal, member, view, errors=result.errors, current_step=step)
        return Template("referral.html", context=context, status_code=400)
    mirror = await portal.connections.mirror(member.clinic.id)
    try:
        message = portal.patients.resealed(portal.clinics, mirror.items, result.message)
    except SealingError as exc:
        context = await referral_context(
            portal, member, view, refused=f"The patient's details could not be re-sealed: {exc}"
        )
        return Template("referral.html", context=context, status_code=409)
    answer = await portal.connections.send_and_confirm(member.clinic.id, message)
    if isinstance(answer.message, Rejection):
        view = await referral_view(portal, member, referral_id)
        context = await referral_context(portal, member, view, refused=domain.rejection_words(answer.message))
        return Template("referral.html", context=context, status_code=409)
    return see_other(f"{PREFIX}/referrals/{referral_id}")


HANDLERS: Final = (referral_page, referral_step)
