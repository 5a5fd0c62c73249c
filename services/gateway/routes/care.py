"""The care team's resources: CarePlan, CareTeam (read only), Flag (alerts) and DetectedIssue (screening)."""

from __future__ import annotations

import uuid
from typing import Any, Final

import structlog
from litestar import Request, Response, get, patch, post, put

from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.gateway import care, fhir_search, outcomes, task_commands
from referral_hub.gateway.adapters import ClinicLink
from referral_hub.gateway.outcomes import FhirError, GatewayCode
from referral_hub.gateway.web import Gateway, caught_up, fhir, gateway_of, json_body, parameters

log = structlog.get_logger(__name__)


# --- Care team resources: CarePlan, CareTeam, Flag, DetectedIssue ----------------------------

PLAN_ANSWER_SECONDS: Final = 10.0
"""How long a ``plan.update`` waits for the hub's answer (its ``plan.updated`` or a refusal) before 503."""
CARE_SEARCH: Final = frozenset({"patient", "subject"})


def _bundle(gateway: Gateway, kind: str, resources: list[dict[str, Any]]) -> Response[bytes]:
    links = {"self": f"{gateway.settings.fhir_base}/{kind}"}
    return fhir(fhir_search.searchset(gateway.settings.fhir_base, resources, len(resources), links))


async def _care_link(gateway: Gateway, clinic: str) -> ClinicLink:
    """The clinic's link, caught up to its inbox's newest number (care reads are rarer than Task reads)."""
    return await caught_up(await gateway.connections.link(clinic))


def _object(body: Any, kind: str) -> dict[str, Any]:  # noqa: ANN401 - FHIR JSON
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, f"the body must be a {kind}")
    return dict(body)


async def _send_plan(gateway: Gateway, clinic: str, body: dict[str, Any], version: int, status: int) -> Response[bytes]:
    """Send version ``version`` of the clinic's plan; success only once the hub confirms it stored it.

    The hub refuses a version that does not follow its own. Its ``plan.updated`` is folded
    into the clinic's view before the answer resolves, so the plan reads back at once.
    """
    command = care.plan_update(await gateway.envelope(clinic), body, version)
    link = await gateway.connections.link(clinic)
    answer = await link.send_and_watch(command, PLAN_ANSWER_SECONDS)
    stored = care.plan_confirmation(answer.message if answer is not None else None, PLAN_ANSWER_SECONDS)
    log.info("gateway_plan_stored", clinic=clinic, version=stored.plan_version)
    resource = care.care_plan_resource(stored, clinic)
    headers = {"ETag": outcomes.etag(version)}
    if status == 201:  # noqa: PLR2004 - HTTP status
        headers["Location"] = f"{gateway.settings.fhir_base}/CarePlan/{resource['id']}"
    return fhir(resource, status, headers)


@post("/fhir/CarePlan", status_code=201)
async def create_care_plan(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The clinic's first plan for a patient on its care team (``plan.update`` version 1)."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CarePlan", "c")
    body = _object(await json_body(request), "CarePlan")
    return await _send_plan(gateway, grant.clinic, body, 1, 201)


@put("/fhir/CarePlan/{plan_id:str}")
async def update_care_plan(request: Request[Any, Any, Any], plan_id: str) -> Response[bytes]:
    """A new version of the clinic's own plan; ``If-Match: W/"n"`` names the version it replaces.

    The hub holds the plan's version and refuses one that does not follow it, so a stale
    ``If-Match`` is 412 and nothing changes, however many replicas or clients race.
    """
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CarePlan", "u")
    body = _object(await json_body(request), "CarePlan")
    replaces = await _replaces(gateway, grant.clinic, body, request.headers.get("if-match"))
    command = care.plan_update(await gateway.envelope(grant.clinic), body, replaces + 1)
    if plan_id != care.care_plan_id(command.patient_ref, grant.clinic):
        msg = "a clinic updates only its own plan: the id is the one its CarePlan for this patient has"
        raise FhirError(422, RejectionCode.SCHEMA_VIOLATION, msg)
    return await _send_plan(gateway, grant.clinic, body, replaces + 1, 200 if replaces else 201)


async def _replaces(gateway: Gateway, clinic: str, body: dict[str, Any], if_match: str | None) -> int:
    """The plan version a ``PUT`` replaces: ``If-Match``'s, or none (0) when the clinic has no plan for the patient yet.

    Without ``If-Match`` a ``PUT`` creates (``updateCreate``), but only a plan the clinic
    does not have: replacing one needs its version (428). Should the hub hold a plan this
    view has not seen yet, the hub refuses version 1 (412), so nothing is overwritten.
    """
    if if_match is not None:
        return care.if_match_version(if_match)
    patient = care.plan_update(await gateway.envelope(clinic), body, 1).patient_ref
    link = await _care_link(gateway, clinic)
    if (patient, clinic) in link.care.plans:
        care.if_match_version(None)
    return 0


@get("/fhir/CarePlan/{plan_id:str}")
async def read_care_plan(request: Request[Any, Any, Any], plan_id: str) -> Response[bytes]:
    """A care-team clinic's current plan (this clinic's own too), as its ``plan.updated`` reached this clinic."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CarePlan", "r")
    link = await _care_link(gateway, grant.clinic)
    for plan in care.plans_of(link.care, None):
        resource = care.care_plan_resource(plan, plan.plan_clinic)
        if resource["id"] == plan_id:
            return fhir(resource, headers={"ETag": outcomes.etag(plan.plan_version)})
    raise outcomes.not_found("CarePlan", plan_id)  # noqa: EM101 - the resource's name, not a message


@get("/fhir/CarePlan")
async def search_care_plan(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The care team's plans this clinic was sent, ``patient=`` one patient."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CarePlan", "s")
    patient = care.patient_parameter(parameters(request), CARE_SEARCH)
    link = await _care_link(gateway, grant.clinic)
    plans = care.plans_of(link.care, patient)
    return _bundle(gateway, "CarePlan", [care.care_plan_resource(p, p.plan_clinic) for p in plans])


@get("/fhir/CareTeam")
async def search_care_team(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The care teams the clinic is on, ``patient=`` one patient; read only."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CareTeam", "s")
    patient = care.patient_parameter(parameters(request), CARE_SEARCH)
    link = await _care_link(gateway, grant.clinic)
    patients = [p for p in link.care.team_patients() if patient is None or p == patient]
    return _bundle(gateway, "CareTeam", [care.care_team_resource(link.care, p) for p in patients])


@get("/fhir/CareTeam/{team_id:str}")
async def read_care_team(request: Request[Any, Any, Any], team_id: str) -> Response[bytes]:
    """A patient's care team, if the clinic is on it; else 404, as for a patient it never heard of."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CareTeam", "r")
    link = await _care_link(gateway, grant.clinic)
    for patient in link.care.team_patients():
        if care.resource_id("CareTeam", patient) == team_id:
            return fhir(care.care_team_resource(link.care, patient))
    raise outcomes.not_found("CareTeam", team_id)  # noqa: EM101 - the resource's name, not a message


def _flag_response(view: care.AlertView, status: int = 200) -> Response[bytes]:
    resource = care.flag_resource(view)
    return fhir(resource, status, {"ETag": outcomes.etag(int(resource["meta"]["versionId"]))})


async def _alert(gateway: Gateway, clinic: str, flag_id: str) -> tuple[ClinicLink, care.AlertView]:
    link = await _care_link(gateway, clinic)
    try:
        alert_id = uuid.UUID(flag_id)
    except ValueError:
        alert_id = None
    view = link.care.alerts.get(alert_id) if alert_id is not None else None
    if view is None or not link.care.on_team(view.raised.patient_ref):
        raise outcomes.not_found("Flag", flag_id)  # noqa: EM101 - the resource's name, not a message
    return link, view


@post("/fhir/Flag", status_code=201)
async def create_flag(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A contraindication alert to the patient's care team (``alert.raise``)."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Flag", "c")
    body = _object(await json_body(request), "Flag")
    command = care.alert_raise(await gateway.envelope(grant.clinic), body)
    link = await gateway.connections.link(grant.clinic)
    answer = await link.send_and_wait(command)
    if answer is not None and isinstance(answer.message, Rejection):
        raise outcomes.from_rejection(answer.message)
    if not await link.wait_until(lambda: command.alert_id in link.care.alerts):
        raise FhirError(503, GatewayCode.HUB_UNAVAILABLE, "the alert was stored but not yet confirmed; read it later")
    created = _flag_response(link.care.alerts[command.alert_id], 201)
    created.headers["Location"] = f"{gateway.settings.fhir_base}/Flag/{command.alert_id}"
    return created


@get("/fhir/Flag/{flag_id:str}")
async def read_flag(request: Request[Any, Any, Any], flag_id: str) -> Response[bytes]:
    """An alert on a patient whose care team the clinic is on."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Flag", "r")
    _, view = await _alert(gateway, grant.clinic, flag_id)
    return _flag_response(view)


@get("/fhir/Flag")
async def search_flag(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The alerts of the care teams the clinic is on, ``patient=`` one patient."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Flag", "s")
    patient = care.patient_parameter(parameters(request), CARE_SEARCH)
    link = await _care_link(gateway, grant.clinic)
    return _bundle(gateway, "Flag", [care.flag_resource(v) for v in care.alerts_of(link.care, patient)])


async def _change_flag(request: Request[Any, Any, Any], flag_id: str, *, patching: bool) -> Response[bytes]:
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Flag", "u")
    body = await json_body(request)
    link, view = await _alert(gateway, grant.clinic, flag_id)
    current = care.flag_resource(view)
    outcomes.check_if_match(request.headers.get("if-match"), int(current["meta"]["versionId"]))
    wanted = task_commands.apply_patch(current, body) if patching else _object(body, "Flag")
    command = care.alert_change(await gateway.envelope(grant.clinic), view, wanted)
    answer = await link.send_and_wait(command)
    if answer is not None and isinstance(answer.message, Rejection):
        raise outcomes.from_rejection(answer.message)
    return _flag_response(view)


@put("/fhir/Flag/{flag_id:str}")
async def update_flag(request: Request[Any, Any, Any], flag_id: str) -> Response[bytes]:
    """``status`` ``inactive`` resolves the alert (its raiser only); a new acknowledgement extension acknowledges it."""
    return await _change_flag(request, flag_id, patching=False)


@patch("/fhir/Flag/{flag_id:str}")
async def patch_flag(request: Request[Any, Any, Any], flag_id: str) -> Response[bytes]:
    """The same, as a JSON Patch of the Flag."""
    return await _change_flag(request, flag_id, patching=True)


def _issue(link: ClinicLink, view: care.IssueView) -> dict[str, Any]:
    referral_id = view.flag.referral_id
    return care.detected_issue_resource(view, link.care.overrides.get(referral_id) if referral_id else None)


@get("/fhir/DetectedIssue/{issue_id:str}")
async def read_detected_issue(request: Request[Any, Any, Any], issue_id: str) -> Response[bytes]:
    """A screening flag as this clinic's copy of it says; its override and disputes as mitigations."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DetectedIssue", "r")
    link = await _care_link(gateway, grant.clinic)
    for view in care.issues_of(link.care, None):
        if str(view.flag.flag_id) == issue_id:
            return fhir(_issue(link, view))
    raise outcomes.not_found("DetectedIssue", issue_id)  # noqa: EM101 - the resource's name, not a message


@get("/fhir/DetectedIssue")
async def search_detected_issue(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The screening flags sent to this clinic, ``patient=`` one patient."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DetectedIssue", "s")
    patient = care.patient_parameter(parameters(request), frozenset({"patient"}))
    link = await _care_link(gateway, grant.clinic)
    return _bundle(gateway, "DetectedIssue", [_issue(link, v) for v in care.issues_of(link.care, patient)])


HANDLERS: Final = (
    create_care_plan,
    update_care_plan,
    read_care_plan,
    search_care_plan,
    search_care_team,
    read_care_team,
    create_flag,
    read_flag,
    search_flag,
    update_flag,
    patch_flag,
    read_detected_issue,
    search_detected_issue,
)
