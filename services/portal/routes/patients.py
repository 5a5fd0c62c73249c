"""A patient's page: care team, plans, screening flags and their disputes, alerts; and the actions on them."""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.response import Redirect, Template

from referral_hub.contracts.plans import PlanUpdated
from referral_hub.contracts.rejections import Rejection
from referral_hub.portal import domain, forms, patient_views
from referral_hub.portal.web import (
    PREFIX,
    Member,
    Portal,
    form_fields,
    page_context,
    portal_of,
    see_other,
    send_or_refuse,
)

# --- Patients ---------------------------------------------------------------------------------


async def _patient(portal: Portal, member: Member, patient_ref: str) -> patient_views.PatientView:
    """The patient as this clinic's inbox tells it; 404 when it never mentioned the patient."""
    mirror = await portal.connections.mirror(member.clinic.id)
    view = patient_views.patient_view(
        mirror.items, patient_ref, member.clinic.timezone, member.clinic.id, member.member
    )
    if view is None:
        raise NotFoundException
    return view


def _patient_context(member: Member, view: patient_views.PatientView, **values: object) -> dict[str, object]:
    defaults: dict[str, object] = {
        "errors": {},
        "values": {},
        "plan_errors": {},
        "plan_values": {
            "plan_version": str(view.next_plan_version),
            "effective_date": domain.utc_now().date().isoformat(),
        },
        "refused": "",
        "sent": "",
        "patient": None,
    }
    return page_context(member, view=view, **{**defaults, **values})


@get("/patients/{patient_ref:str}")
async def patient_page(request: Request[Any, Any, Any], patient_ref: str, plan_sent: int = 0) -> Template:
    """What this clinic knows of a patient: care team, plans by version, screening, referrals, alerts."""
    portal = portal_of(request)
    member = await portal.current(request)
    view = await _patient(portal, member, patient_ref)
    await portal.viewed(member, "patient", patient_ref=view.patient_ref)
    extra: dict[str, object] = {}
    if plan_sent > 0:
        extra["sent"] = f"Version {plan_sent} of this clinic's plan is stored by the hub and went to the care team."
        today = domain.utc_now().date().isoformat()
        # The stored version may not have reached this replica's copy of the inbox yet.
        next_version = max(view.next_plan_version, plan_sent + 1)
        extra["plan_values"] = {"plan_version": str(next_version), "effective_date": today}
    mirror = await portal.connections.mirror(member.clinic.id)
    known = [item for item in mirror.items if getattr(item.message, "patient_ref", None) == view.patient_ref]
    extra["patient"] = next(
        reversed(portal.patients.by_referral(portal.clinics, member.clinic.id, known).values()), None
    )
    return Template("patient.html", context=_patient_context(member, view, **extra))


async def _known_patient(portal: Portal, member: Member, patient_ref: str) -> None:
    await _patient(portal, member, patient_ref)


PLAN_ANSWER_WAIT: Final = 10.0
"""How long the plan form waits for the hub's answer: its ``plan.updated`` (stored) or a refusal."""
PLAN_UNANSWERED: Final = "The hub did not answer; nothing is known to have changed — retry."


@post("/patients/{patient_ref:str}/plan", status_code=303)
async def plan_update(request: Request[Any, Any, Any], patient_ref: str) -> Response[Any]:
    """Publish a new version of this clinic's plan; "sent" only once the hub confirms it stored it.

    The hub answers the author with the plan's ``plan.updated`` or a refusal (a stale version
    names the current one). No answer in time is said as such, never taken for success.
    """
    portal = portal_of(request)
    member = await portal.current(request)
    view = await _patient(portal, member, patient_ref)
    if not view.on_team:
        raise NotFoundException
    form = await form_fields(request)
    result = forms.plan_update(form, member.actor, view.patient_ref, view.own_modality)
    if result.message is None:
        context = _patient_context(member, view, plan_errors=result.errors, plan_values=result.values)
        return Template("patient.html", context=context, status_code=400)
    answer = await portal.connections.send_and_wait(member.clinic.id, result.message, PLAN_ANSWER_WAIT)
    if answer is not None and isinstance(answer.message, PlanUpdated):
        version = answer.message.plan_version
        return see_other(f"{PREFIX}/patients/{patient_ref}", query_params={"plan_sent": str(version)})
    values = dict(result.values)
    words, status = PLAN_UNANSWERED, 503
    if answer is not None and isinstance(answer.message, Rejection):
        if answer.message.current_version:
            values["plan_version"] = str(answer.message.current_version + 1)
        words, status = domain.rejection_words(answer.message), 409
    view = await _patient(portal, member, patient_ref)
    context = _patient_context(member, view, plan_errors={"form": words}, plan_values=values)
    return Template("patient.html", context=context, status_code=status)


@post("/patients/{patient_ref:str}/flags/{flag_id:uuid}/dispute", status_code=303)
async def dispute_match(request: Request[Any, Any, Any], patient_ref: str, flag_id: UUID) -> Response[Any]:
    """Dispute one match of a screening flag this clinic received; the hub tells every clinic that got the flag."""
    portal = portal_of(request)
    member = await portal.current(request)
    form = await form_fields(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    flag = patient_views.screening_match(mirror.items, patient_ref, flag_id, form.get("rule_id", ""))
    if flag is None:
        raise NotFoundException
    back = (
        f"{PREFIX}/referrals/{flag.referral_id}"
        if form.get("back") == "referral" and flag.referral_id is not None
        else f"{PREFIX}/patients/{patient_ref}"
    )
    result = forms.dispute(form, member.actor, patient_ref, flag_id)
    if result.message is None:
        why = "Say why the match does not apply: " + "; ".join(result.errors.values())
        await portal.flash(member, why)
        return see_other(back)
    return await send_or_refuse(portal, member, result.message, back)


@post("/patients/{patient_ref:str}/alerts", status_code=303)
async def raise_alert(request: Request[Any, Any, Any], patient_ref: str) -> Response[Any]:
    """Raise a contraindication alert to the patient's care team."""
    portal = portal_of(request)
    member = await portal.current(request)
    view = await _patient(portal, member, patient_ref)
    result = forms.alert_raise(await form_fields(request), member.actor, patient_ref)
    if result.message is None:
        context = _patient_context(member, view, errors=result.errors, values=result.values)
        return Template("patient.html", context=context, status_code=400)
    return await send_or_refuse(portal, member, result.message, f"{PREFIX}/patients/{patient_ref}")


@post("/patients/{patient_ref:str}/alerts/{alert_id:uuid}/{action:str}", status_code=303)
async def alert_action(request: Request[Any, Any, Any], patient_ref: str, alert_id: UUID, action: str) -> Redirect:
    """Acknowledge or resolve an alert."""
    portal = portal_of(request)
    member = await portal.current(request)
    await _known_patient(portal, member, patient_ref)
    if action == "ack":
        message = forms.alert_ack(member.actor, patient_ref, alert_id)
    elif action == "resolve":
        result = forms.alert_resolve(await form_fields(request), member.actor, patient_ref, alert_id)
        if result.message is None:
            raise HTTPException(status_code=400, detail="; ".join(result.errors.values()))
        message = result.message
    else:
        raise NotFoundException
    return await send_or_refuse(portal, member, message, f"{PREFIX}/patients/{patient_ref}")


HANDLERS: Final = (patient_page, raise_alert, alert_action, plan_update, dispute_match)
