"""Task and ServiceRequest (referrals, BSeR/360X) and Communication (interim notes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode

import msgspec
import structlog
from litestar import Request, Response, get, patch, post, put

from referral_hub.contracts.referrals import ReferralRequested
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.gateway import communications, fhir_search, outcomes, task_commands, task_views
from referral_hub.gateway.outcomes import FhirError, GatewayCode
from referral_hub.gateway.patients import contained_patient, patient_id, patient_resource, split_patient
from referral_hub.gateway.task_views import TaskView
from referral_hub.gateway.web import (
    Gateway,
    caught_up,
    fhir,
    gateway_of,
    json_body,
    task_response,
    task_view,
)
from referral_hub.referrals import fhir_task as referral_fhir

log = structlog.get_logger(__name__)


# --- Task ------------------------------------------------------------------------------------


async def _create(
    gateway: Gateway,
    clinic: str,
    task: dict[str, Any],
    service_request: dict[str, Any] | None,
    if_none_exist: str | None,
) -> Response[bytes]:
    """Create a referral, or answer with the one this identifier already made."""
    envelope = await gateway.envelope(clinic)
    command = task_commands.referral_request(envelope, task, service_request)
    command = gateway.patients.sealed(command, contained_patient(task))
    if if_none_exist is not None:
        _check_if_none_exist(if_none_exist, task)
    link = await gateway.connections.link(clinic)
    existing = link.referrals.by_referral.get(command.referral_id)
    if existing is not None:
        return task_response(existing, 200)
    answer = await link.send_and_wait(command)
    if answer is None and not await link.wait_until(lambda: command.referral_id in link.referrals.by_referral):
        raise FhirError(503, GatewayCode.HUB_UNAVAILABLE, "the referral was stored but not yet confirmed; retry")
    if answer is not None and isinstance(answer.message, Rejection):
        raise outcomes.from_rejection(answer.message)
    if answer is not None and not isinstance(answer.message, ReferralRequested):
        raise FhirError(500, RejectionCode.PROCESSING_FAILED, "the hub answered with an unexpected message")
    view = link.referrals.by_referral[command.referral_id]
    return task_response(view, 201, gateway.settings.fhir_base)


def _check_if_none_exist(header: str, task: Mapping[str, Any]) -> None:
    """``If-None-Exist`` must search by the Task's own identifier (the one the referral id comes from)."""
    name, _, value = header.partition("=")
    if name.strip() != "identifier":
        raise FhirError(422, GatewayCode.UNSUPPORTED, "If-None-Exist supports identifier=system|value only")
    system, code = fhir_search.parse_token_search(value.strip())
    first = (task.get("identifier") or [{}])[0]
    if code != first.get("value") or (system and system != first.get("system")):
        raise FhirError(422, GatewayCode.UNSUPPORTED, "If-None-Exist must name the Task's first identifier")


@post("/fhir/Task", status_code=201)
async def create_task(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``POST /fhir/Task``: a new referral; with ``If-None-Exist``, a retry makes no second one."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "c")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a JSON object")
    return await _create(gateway, grant.clinic, body, None, request.headers.get("if-none-exist"))


@post("/fhir", status_code=200)
async def transaction(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A transaction Bundle of a ServiceRequest and a Task: one referral."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "c")
    body = await json_body(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirError(422, RejectionCode.SCHEMA_VIOLATION, "the base URL accepts a transaction Bundle")
    body, patient = split_patient(body)
    task, service_request = task_commands.transaction_parts(body)
    if patient is not None:  # the bundled Patient is sealed exactly as a contained one
        task = {**task, "contained": [*(task.get("contained") or []), patient]}
    created = await _create(gateway, grant.clinic, task, service_request, None)
    link = await gateway.connections.link(grant.clinic)
    resource = msgspec.json.decode(created.content) if isinstance(created.content, bytes) else {}
    view = link.referrals.task(str(resource.get("id")))
    if view is None:
        raise FhirError(503, GatewayCode.HUB_UNAVAILABLE, "the referral was stored but not yet confirmed; retry")
    kinds = task_commands.entry_kinds(body)
    status = 201 if created.status_code == 201 else 200  # noqa: PLR2004 - HTTP status
    return fhir(task_views.transaction_response(view, status, gateway.settings.fhir_base, kinds))


@get("/fhir/Task/{task_id:str}")
async def read_task(request: Request[Any, Any, Any], task_id: str) -> Response[bytes]:
    """One Task of the token's clinic; another clinic's is 404, exactly like a missing one."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "r")
    _, view = await task_view(gateway, grant.clinic, task_id)
    return task_response(view)


@get("/fhir/Task/{task_id:str}/_history/{version_id:str}")
async def vread_task(request: Request[Any, Any, Any], task_id: str, version_id: str) -> Response[bytes]:
    """``vread``: the Task as it stood at a version (its first n steps); the ``Location`` of a create names it."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "r")
    _, view = await task_view(gateway, grant.clinic, task_id)
    past = task_views.at_version(view, _version_number(version_id))
    if past is None:
        raise outcomes.not_found("Task", f"{task_id}/_history/{version_id}")  # noqa: EM101 - the resource's name, not a message
    return task_response(past)


def _version_number(version_id: str) -> int:
    """A ``_history`` version id as a number; anything else names no version (0)."""
    return int(version_id) if version_id.isdigit() and len(version_id) < 10 else 0  # noqa: PLR2004 - digits of a version


async def _service_request_view(gateway: Gateway, clinic: str, resource_id: str) -> TaskView:
    """The referral whose ServiceRequest has ``resource_id``, if this clinic is a party to it; else 404."""
    link = await gateway.connections.link(clinic)
    for attempt in range(2):
        for view in link.referrals.by_referral.values():
            if referral_fhir.resource_id("ServiceRequest", view.referral) == resource_id:
                return view
        if attempt == 0:
            await caught_up(link)
    raise outcomes.not_found("ServiceRequest", resource_id)  # noqa: EM101 - the resource's name, not a message


@get("/fhir/ServiceRequest/{resource_id:str}")
async def read_service_request(request: Request[Any, Any, Any], resource_id: str) -> Response[bytes]:
    """The ServiceRequest of one of the clinic's referrals."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "ServiceRequest", "r")
    view = await _service_request_view(gateway, grant.clinic, resource_id)
    return fhir(task_views.service_request_resource(view), headers={"ETag": outcomes.etag(view.version)})


@get("/fhir/ServiceRequest/{resource_id:str}/_history/{version_id:str}")
async def vread_service_request(request: Request[Any, Any, Any], resource_id: str, version_id: str) -> Response[bytes]:
    """``vread`` of a ServiceRequest: the version a transaction's response names as its ``location``."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "ServiceRequest", "r")
    view = await _service_request_view(gateway, grant.clinic, resource_id)
    past = task_views.at_version(view, _version_number(version_id))
    if past is None:
        raise outcomes.not_found("ServiceRequest", f"{resource_id}/_history/{version_id}")  # noqa: EM101 - the resource's name, not a message
    return fhir(task_views.service_request_resource(past), headers={"ETag": outcomes.etag(past.version)})


@get("/fhir/Patient/{resource_id:str}")
async def read_patient(request: Request[Any, Any, Any], resource_id: str) -> Response[bytes]:
    """The person behind one of the clinic's referrals, from its own sealed copy; otherwise 404 as for nothing."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Patient", "r")
    link = await caught_up(await gateway.connections.link(grant.clinic))
    for view in link.referrals.by_referral.values():
        if patient_id(view.referral) == resource_id:
            details = gateway.patients.read(grant.clinic, view.referral)
            if details is not None:
                return fhir(patient_resource(view.referral, details))
    raise outcomes.not_found("Patient", resource_id)  # noqa: EM101 - the resource's name, not a message


@get("/fhir/Task")
async def search_task(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Search the clinic's Tasks by owner, requester, status, patient, identifier and ``_lastUpdated``."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "s")
    parameters = {name: request.query_params.getall(name) for name in request.query_params}
    link = await caught_up(await gateway.connections.link(grant.clinic))
    found = fhir_search.search_tasks(list(link.referrals.by_referral.values()), parameters)
    offset, count = fhir_search.page_bounds(parameters)
    page = found[offset : offset + count]
    base = f"{gateway.settings.fhir_base}/Task"
    plain = {k: v for k, v in parameters.items() if k not in {"_offset", "_count"}}

    def link_to(start: int) -> str:
        return f"{base}?{urlencode({**plain, '_count': [str(count)], '_offset': [str(start)]}, doseq=True)}"

    links = {"self": link_to(offset)}
    if offset + count < len(found):
        links["next"] = link_to(offset + count)
    if offset > 0:
        links["previous"] = link_to(max(0, offset - count))
    return fhir(
        fhir_search.searchset(
            gateway.settings.fhir_base, [task_views.task_resource(v) for v in page], len(found), links
        )
    )


async def _transition(request: Request[Any, Any, Any], task_id: str, *, patching: bool) -> Response[bytes]:
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "u")
    body = await json_body(request)
    link, view = await task_view(gateway, grant.clinic, task_id)
    outcomes.check_if_match(request.headers.get("if-match"), view.version)
    current = task_views.task_resource(view)
    if patching:
        wanted = task_commands.apply_patch(current, body)
    elif isinstance(body, dict):
        wanted = body
        if body.get("id") not in {None, task_id}:
            raise FhirError(400, RejectionCode.SCHEMA_VIOLATION, "the Task's id differs from the URL's")
    else:
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a Task")
    transition = task_commands.transition_for(current, wanted, grant.clinic, view)
    command = task_commands.transition_command(transition, await gateway.envelope(grant.clinic), view, wanted)
    answer = await link.send_and_wait(command)
    if answer is not None and isinstance(answer.message, Rejection):
        raise outcomes.from_rejection(answer.message)
    updated = link.referrals.by_referral.get(view.referral.referral_id)
    if updated is None:
        # Forwarded away: the referral is no longer this clinic's to read.
        return fhir(task_views.task_resource(view))
    return task_response(updated)


@put("/fhir/Task/{task_id:str}")
async def update_task(request: Request[Any, Any, Any], task_id: str) -> Response[bytes]:
    """A new status or businessStatus is a lifecycle transition; ``If-Match`` guards the version."""
    return await _transition(request, task_id, patching=False)


@patch("/fhir/Task/{task_id:str}")
async def patch_task(request: Request[Any, Any, Any], task_id: str) -> Response[bytes]:
    """The same, as a JSON Patch of the Task."""
    return await _transition(request, task_id, patching=True)


# --- Communication ---------------------------------------------------------------------------


@post("/fhir/Communication", status_code=201)
async def create_communication(request: Request[Any, Any, Any]) -> Response[bytes]:
    """An interim consult note about one of the clinic's referrals (``referral.interim_note``)."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Communication", "c")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a Communication")
    link, view = await task_view(gateway, grant.clinic, communications.task_reference(body))
    command = communications.interim_note(await gateway.envelope(grant.clinic), view, body)
    answer = await link.send_and_wait(command)
    if answer is not None and isinstance(answer.message, Rejection):
        raise outcomes.from_rejection(answer.message)
    current = link.referrals.by_referral.get(view.referral.referral_id, view)
    made = (
        next(
            (c for c in communications.communications(current) if c["sent"] == answer.message.occurred_at.isoformat()),
            None,
        )
        if answer is not None
        else None
    )
    resource = made or communications.communications(current)[-1]
    location = f"{gateway.settings.fhir_base}/Communication/{resource['id']}/_history/1"
    return fhir(resource, 201, {"Location": location})


async def _communication(gateway: Gateway, clinic: str, communication_id: str) -> dict[str, Any]:
    """One interim note of the clinic's referrals, by its id; else 404."""
    link = await gateway.connections.link(clinic)
    for attempt in range(2):
        for view in link.referrals.by_referral.values():
            for found in communications.communications(view):
                if found["id"] == communication_id:
                    return found
        if attempt == 0:
            await caught_up(link)
    raise outcomes.not_found("Communication", communication_id)  # noqa: EM101 - the resource's name, not a message


@get("/fhir/Communication/{communication_id:str}")
async def read_communication(request: Request[Any, Any, Any], communication_id: str) -> Response[bytes]:
    """One interim note; a note never changes, so it has one version."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Communication", "r")
    return fhir(await _communication(gateway, grant.clinic, communication_id))


@get("/fhir/Communication/{communication_id:str}/_history/{version_id:str}")
async def vread_communication(
    request: Request[Any, Any, Any], communication_id: str, version_id: str
) -> Response[bytes]:
    """``vread`` of a note's one version, the ``Location`` its create answered with."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Communication", "r")
    resource = await _communication(gateway, grant.clinic, communication_id)
    if version_id != "1":
        raise outcomes.not_found("Communication", f"{communication_id}/_history/{version_id}")  # noqa: EM101 - the resource's name, not a message
    return fhir(resource)


@get("/fhir/Communication")
async def search_communication(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The interim notes of the clinic's referrals, optionally ``based-on=Task/<id>``."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Communication", "s")
    link = await caught_up(await gateway.connections.link(grant.clinic))
    based_on = request.query_params.get("based-on")
    unknown = set(request.query_params) - {"based-on"}
    if unknown:
        raise FhirError(400, GatewayCode.UNSUPPORTED, f"unsupported search parameters: {', '.join(sorted(unknown))}")
    views = list(link.referrals.by_referral.values())
    if based_on:
        chosen = link.referrals.task(based_on.rpartition("/")[2])
        views = [chosen] if chosen is not None else []
    found = [c for v in views for c in communications.communications(v)]
    links = {"self": f"{gateway.settings.fhir_base}/Communication"}
    return fhir(fhir_search.searchset(gateway.settings.fhir_base, found, len(found), links))


HANDLERS: Final = (
    create_task,
    transaction,
    read_task,
    vread_task,
    read_service_request,
    vread_service_request,
    read_patient,
    search_task,
    update_task,
    patch_task,
    create_communication,
    read_communication,
    vread_communication,
    search_communication,
)
