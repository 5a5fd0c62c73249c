"""FHIR R4 in, hub contracts out, and back: the gateway's pure rules.

No I/O here. A clinic's view of its referrals is folded from the events in its own inbox
(both parties see every step, see ``referrals.domain.announcements``), into the same
:class:`~referral_hub.referrals.domain.Referral` record the referrals service keeps, so the
Task a clinic reads is exactly the one ``referrals.fhir_task`` exports. A referral's version, as
``meta.versionId`` and the ``ETag``, is the number of lifecycle steps the clinic has seen.

Every refusal is a :class:`FhirError`: an HTTP status and a stable code (the hub's
:class:`RejectionCode` where the hub refused, a :class:`GatewayCode` where the gateway did),
rendered as an ``OperationOutcome``.
"""

from __future__ import annotations

import base64
import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import msgspec

from referral_hub.contracts.base import Message, Modality
from referral_hub.contracts.codec import HubMessage
from referral_hub.contracts.referrals import (
    ReferralAccept,
    ReferralCancel,
    ReferralCancelConfirm,
    ReferralClose,
    ReferralCommand,
    ReferralComplete,
    ReferralDecline,
    ReferralEvent,
    ReferralForward,
    ReferralInterimNote,
    ReferralNoShow,
    ReferralOverride,
    ReferralRequest,
    ReferralRequested,
    ReferralSchedule,
    ReferralState,
    ReferralTransitioned,
    Urgency,
)
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.documents.domain import DocumentMeta
from referral_hub.errors import HubError
from referral_hub.referrals import fhir_task as referral_fhir
from referral_hub.referrals.domain import HistoryItem, Referral

M = TypeVar("M", bound=Message)
REJECTION_SYSTEM: Final = "urn:referral-hub:rejection-code"
"""The CodeSystem of ``OperationOutcome.issue.details``: the hub's stable rejection codes."""
MODALITY_SYSTEM: Final = "urn:referral-hub:modality"
TOPIC_URL: Final = "urn:referral-hub:SubscriptionTopic/clinic-inbox"
"""The one subscription topic: every message stored in the subscribing clinic's inbox."""
FILTER_EXTENSION: Final = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"
HEARTBEAT_EXTENSION: Final = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period"
)
PAYLOAD_EXTENSION: Final = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
STATUS_PROFILE: Final = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"
)
PAYLOADS: Final = frozenset({"empty", "id-only", "full-resource"})
MAX_PAGE: Final = 100
DEFAULT_PAGE: Final = 20


class GatewayCode(enum.StrEnum):
    """Refusals the gateway makes itself, before anything reaches the hub. Never rename one."""

    INVALID_TOKEN = "invalid_token"  # noqa: S105 - an error code, not a secret
    """No bearer token, or one that is expired, forged or not the gateway's."""
    INVALID_CLIENT = "invalid_client"
    """A client assertion failed a check: signature, key, issuer, audience, expiry or replay."""
    INSUFFICIENT_SCOPE = "insufficient_scope"
    """The token's scopes do not cover this interaction."""
    NOT_FOUND = "not_found"
    """No such resource that this clinic may see (another clinic's looks exactly like this)."""
    STALE_VERSION = "stale_version"
    """``If-Match`` names a version that is no longer current; nothing changed."""
    UNSUPPORTED = "unsupported"
    """An interaction, parameter or change the gateway does not offer."""
    HUB_UNAVAILABLE = "hub_unavailable"
    """The hub did not answer in time; the request may be retried with the same identifier."""


Code = RejectionCode | GatewayCode

HUB_STATUS: Final[Mapping[RejectionCode, int]] = {
    RejectionCode.MALFORMED_JSON: 400,
    RejectionCode.SCHEMA_VIOLATION: 422,
    RejectionCode.UNKNOWN_MESSAGE_TYPE: 400,
    RejectionCode.UNSUPPORTED_VERSION: 400,
    RejectionCode.INVALID_SUBJECT: 400,
    RejectionCode.SUBJECT_TYPE_MISMATCH: 400,
    RejectionCode.SENDER_MISMATCH: 403,
    RejectionCode.UNKNOWN_CLINIC: 422,
    RejectionCode.UNKNOWN_MEMBER: 403,
    RejectionCode.INVALID_RECIPIENT: 422,
    RejectionCode.DUPLICATE_REFERRAL_ID: 409,
    RejectionCode.UNSUPPORTED_MESSAGE_TYPE: 400,
    RejectionCode.UNKNOWN_REFERRAL: 404,
    RejectionCode.PATIENT_MISMATCH: 422,
    RejectionCode.REFERRAL_CLOSED: 409,
    RejectionCode.WRONG_PARTY: 403,
    RejectionCode.INVALID_TRANSITION: 409,
    RejectionCode.STALE_PLAN_VERSION: 412,
    RejectionCode.NOT_ON_CARE_TEAM: 404,
    RejectionCode.NO_CARE_TEAM: 404,
    RejectionCode.INVALID_ALERT: 422,
    RejectionCode.UNKNOWN_ALERT: 404,
    RejectionCode.ALERT_NOT_ACTIVE: 409,
    RejectionCode.UNKNOWN_FLAG: 404,
    RejectionCode.UNKNOWN_PAGE: 404,
    RejectionCode.PAGE_NOT_OPEN: 409,
    RejectionCode.PROCESSING_FAILED: 500,
    RejectionCode.RATE_LIMITED: 429,
    RejectionCode.MESSAGE_TOO_LARGE: 413,
}
"""The HTTP status of each hub rejection. A party that is not the one allowed (``wrong_party``)
gets 403: it is a party, so the referral's existence is no secret from it."""
ISSUE_TYPE: Final[Mapping[int, str]] = {
    400: "structure",
    401: "login",
    403: "forbidden",
    404: "not-found",
    409: "business-rule",
    412: "conflict",
    413: "too-costly",
    422: "invariant",
    429: "throttled",
    500: "exception",
    503: "transient",
}
RETRY_AFTER_SECONDS: Final = 1


class FhirError(HubError):
    """A refusal: an HTTP status, a stable code and a sentence; nothing changed."""

    def __init__(self, status: int, code: Code, diagnostics: str, headers: Mapping[str, str] | None = None) -> None:
        """Keep the parts an ``OperationOutcome`` is made of."""
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.headers = dict(headers or {})


def operation_outcome(status: int, code: str, diagnostics: str) -> dict[str, Any]:
    """The ``OperationOutcome`` of one refusal, its stable code in ``issue.details``."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": ISSUE_TYPE.get(status, "processing"),
                "details": {"coding": [{"system": REJECTION_SYSTEM, "code": code}], "text": code},
                "diagnostics": diagnostics,
            }
        ],
    }


def from_rejection(rejection: Rejection) -> FhirError:
    """The HTTP refusal for a hub rejection, with its code unchanged."""
    status = HUB_STATUS.get(rejection.code, 422)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 429 else None  # noqa: PLR2004 - HTTP status
    return FhirError(status, rejection.code, rejection.reason, headers)


def not_found(resource_type: str, resource_id: str) -> FhirError:
    """The same answer for a resource that does not exist and for one of another clinic."""
    return FhirError(404, GatewayCode.NOT_FOUND, f"{resource_type}/{resource_id} is not known")


def schema(diagnostics: str) -> FhirError:
    """A resource that is JSON but breaks the mapping's rules."""
    return FhirError(422, RejectionCode.SCHEMA_VIOLATION, diagnostics)


# --- Scopes (SMART v2 system scopes) -----------------------------------------------------------

SUPPORTED_SCOPES: Final = (
    "system/Task.cruds",
    "system/ServiceRequest.rs",
    "system/Communication.crs",
    "system/DocumentReference.crs",
    "system/Binary.r",
    "system/Subscription.cruds",
    "system/CarePlan.crus",
    "system/CareTeam.rs",
    "system/Flag.crus",
    "system/DetectedIssue.rs",
    "system/AuditEvent.rs",
)
"""What a token may carry: SMART v2 ``system/<Resource>.<c r u d s>``."""


def granted_scopes(requested: str) -> tuple[str, ...]:
    """The scopes a token gets: what was asked, within :data:`SUPPORTED_SCOPES` (all of it when nothing was asked)."""
    offered = {scope.split(".")[0]: set(scope.split(".")[1]) for scope in SUPPORTED_SCOPES}
    if not requested.strip():
        return SUPPORTED_SCOPES
    granted = []
    for scope in requested.split():
        resource, _, perms = scope.partition(".")
        wildcard = resource == "system/*"
        for name, allowed in offered.items():
            if (wildcard or name == resource) and (keep := "".join(p for p in "cruds" if p in perms and p in allowed)):
                granted.append(f"{name}.{keep}")
    if not granted:
        raise FhirError(400, GatewayCode.INSUFFICIENT_SCOPE, f"none of the scopes {requested!r} is offered")
    return tuple(dict.fromkeys(granted))


def require_scope(scopes: Iterable[str], resource: str, permission: str) -> None:
    """Refuse with 403 unless a scope allows ``permission`` (one of ``cruds``) on ``resource``."""
    for scope in scopes:
        name, _, perms = scope.partition(".")
        if name in {f"system/{resource}", "system/*"} and permission in perms:
            return
    raise FhirError(403, GatewayCode.INSUFFICIENT_SCOPE, f"the token has no system/{resource}.{permission} scope")


# --- A clinic's referrals, folded from its inbox -----------------------------------------------


@dataclass
class TaskView:
    """One referral as a clinic sees it, and the clinic's external identifier for it."""

    referral: Referral
    version: int
    identifiers: tuple[tuple[str, str], ...] = ()


@dataclass
class ClinicReferrals:
    """Every referral in one clinic's inbox, by referral id and by Task id."""

    clinic: str
    by_referral: dict[uuid.UUID, TaskView] = field(default_factory=dict)
    by_task: dict[str, uuid.UUID] = field(default_factory=dict)
    last_event_number: int = 0

    def apply(self, message: HubMessage, event_number: int) -> None:
        """Fold one inbox message in; anything but a lifecycle step leaves the view as it was."""
        self.last_event_number = max(self.last_event_number, event_number)
        if isinstance(message, ReferralRequested):
            self._requested(message)
        elif isinstance(message, ReferralTransitioned):
            self._transitioned(message)

    def _requested(self, event: ReferralRequested) -> None:
        existing = self.by_referral.get(event.referral_id)
        if existing is not None:
            return
        request = ReferralRequest(
            message_id=event.causation_id or event.message_id,
            occurred_at=event.occurred_at,
            sender_clinic=event.referring_clinic,
            actor=event.actor,
            correlation_id=event.correlation_id,
            referral_id=event.referral_id,
            patient_ref=event.patient_ref,
            recipient_clinic=event.recipient_clinic,
            modality=event.modality,
            urgency=event.urgency,
            reason=event.reason,
            icd10_codes=event.icd10_codes,
            clinical_flags=event.clinical_flags,
            requested_techniques=event.requested_techniques,
            note=event.note,
        )
        step = _step(event, "request")
        referral = Referral(
            referral_id=event.referral_id,
            patient_ref=event.patient_ref,
            referring_clinic=event.referring_clinic,
            recipient_clinic=event.recipient_clinic,
            urgency=event.urgency,
            state=event.state,
            request=request,
            history=(step,),
        )
        self._keep(TaskView(referral, 1))

    def _transitioned(self, event: ReferralTransitioned) -> None:
        view = self.by_referral.get(event.referral_id)
        if view is None:
            return
        step = _step(event, event.transition)
        view.referral = msgspec.structs.replace(
            view.referral,
            state=event.state,
            recipient_clinic=event.recipient_clinic,
            history=(*view.referral.history, step),
        )
        view.version += 1

    def _keep(self, view: TaskView) -> None:
        self.by_referral[view.referral.referral_id] = view
        self.by_task[referral_fhir.resource_id("Task", view.referral)] = view.referral.referral_id

    def task(self, task_id: str) -> TaskView | None:
        """The referral whose Task has ``task_id``, if this clinic is a party to it."""
        referral_id = self.by_task.get(task_id)
        return self.by_referral.get(referral_id) if referral_id else None


def _step(event: ReferralEvent, transition: str) -> HistoryItem:
    extra: dict[str, Any] = {}
    if isinstance(event, ReferralTransitioned):
        extra = {
            "detail": event.detail,
            "reason_code": event.reason_code,
            "appointment_at": event.appointment_at,
            "outcome": event.outcome,
            "forwarded_to": event.forwarded_to,
        }
    return HistoryItem(
        message_id=event.causation_id or event.message_id,
        transition=transition,
        by_clinic=event.sender_clinic,
        actor=event.actor,
        at=event.occurred_at,
        state=event.state,
        correlation_id=event.correlation_id,
        **extra,
    )


def task_resource(view: TaskView) -> dict[str, Any]:
    """The referral's Task, as ``referrals.fhir_task`` exports it, with its version."""
    task: dict[str, Any] = referral_fhir.bundle(view.referral)["entry"][1]["resource"]
    task["meta"] = {"versionId": str(view.version), "lastUpdated": task["lastModified"]}
    return task


def service_request_resource(view: TaskView) -> dict[str, Any]:
    """The referral's ServiceRequest, as ``referrals.fhir_task`` exports it."""
    resource: dict[str, Any] = referral_fhir.bundle(view.referral)["entry"][0]["resource"]
    resource["meta"] = {"versionId": str(view.version)}
    return resource


def etag(version: int) -> str:
    """The weak ETag of a version."""
    return f'W/"{version}"'


def check_if_match(header: str | None, current: int) -> None:
    """Refuse with 412 when ``If-Match`` names another version than ``current``."""
    if header is None:
        return
    wanted = header.strip().removeprefix("W/").strip('"')
    if wanted != str(current):
        raise FhirError(412, GatewayCode.STALE_VERSION, f"version {wanted} is stale; the current version is {current}")


# --- Creating a referral -----------------------------------------------------------------------

REFERRAL_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-hub:gateway")


@dataclass(frozen=True)
class Envelope:
    """What every command the gateway sends on a clinic's behalf carries."""

    clinic: str
    actor: str
    now: datetime


def referral_id_for(clinic: str, system: str, value: str) -> uuid.UUID:
    """The referral id of a Task identifier: the hub's own id, or one derived from the clinic's.

    Derived ids make a retry of the same create (``If-None-Exist``, a lost response) name the
    same referral, so the hub's duplicate detection keeps it to one.
    """
    if system == referral_fhir.REFERRAL_ID_SYSTEM:
        try:
            return uuid.UUID(value)
        except ValueError as exc:
            msg = f"identifier {value!r} in {system} is not a UUID"
            raise schema(msg) from exc
    return uuid.uuid5(REFERRAL_NAMESPACE, f"{clinic}|{system}|{value}")


def parse_token_search(value: str) -> tuple[str, str]:
    """``system|value`` (or a bare ``value``) of a token search parameter."""
    system, bar, code = value.partition("|")
    return (system, code) if bar else ("", system)


def _reference_id(reference: Any, what: str) -> str:  # noqa: ANN401 - FHIR JSON
    """The value of a logical reference (``{"identifier": {"value": ...}}``) or ``Organization/<id>``."""
    if not isinstance(reference, dict):
        msg = f"{what} must be a Reference"
        raise schema(msg)
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
        return str(identifier["value"])
    literal = reference.get("reference")
    if isinstance(literal, str) and "/" in literal:
        return literal.rsplit("/", 1)[1]
    msg = f"{what} needs identifier.value or a reference"
    raise schema(msg)


def _text(concept: Any) -> str:  # noqa: ANN401 - FHIR JSON
    if isinstance(concept, dict):
        return str(concept.get("text") or next((c.get("display", "") for c in concept.get("coding", [])), ""))
    return ""


def _modality(code: Any) -> Modality:  # noqa: ANN401 - FHIR JSON
    if isinstance(code, dict):
        for coding in code.get("coding", []):
            if coding.get("system") == MODALITY_SYSTEM and coding.get("code") in set(Modality):
                return Modality(coding["code"])
        text = str(code.get("text", "")).lower().replace(" ", "_")
        for modality in Modality:
            if text.endswith(modality.value):
                return modality
    choices = ", ".join(m.value for m in Modality)
    msg = f"the service code must be a {MODALITY_SYSTEM} coding ({choices})"
    raise schema(msg)


def _identifier(task: Mapping[str, Any]) -> tuple[str, str]:
    identifiers = task.get("identifier")
    if not isinstance(identifiers, list) or not identifiers or not isinstance(identifiers[0], dict):
        msg = "Task.identifier is required: it names the referral and makes a retry safe"
        raise schema(msg)
    first = identifiers[0]
    if not isinstance(first.get("value"), str) or not first["value"]:
        msg = "Task.identifier[0].value is required"
        raise schema(msg)
    return str(first.get("system", "")), str(first["value"])


def referral_request(
    envelope: Envelope, task: Mapping[str, Any], service_request: Mapping[str, Any] | None = None
) -> ReferralRequest:
    """The hub's ``referral.request`` for a new Task (and its ServiceRequest, from a transaction).

    What was asked (service code, reason, priority, note) comes from the ServiceRequest when
    there is one, else from the Task itself; who and for whom from the Task.
    """
    if task.get("resourceType") != "Task":
        msg = "the resource must be a Task"
        raise schema(msg)
    source: Mapping[str, Any] = service_request or task
    requester = task.get("requester")
    if requester is not None and _reference_id(requester, "Task.requester") != envelope.clinic:
        raise FhirError(403, RejectionCode.SENDER_MISMATCH, "Task.requester must be the token's own clinic")
    system, value = _identifier(task)
    reasons = source.get("reasonCode") or []
    if isinstance(reasons, dict):  # Task.reasonCode is one concept, ServiceRequest.reasonCode a list
        reasons = [reasons]
    reason = _text(reasons[0]) if reasons else str(task.get("description", ""))
    icd10 = tuple(
        coding["code"]
        for concept in reasons
        for coding in concept.get("coding", [])
        if coding.get("system") == referral_fhir.ICD10_SYSTEM and "code" in coding
    )
    notes = source.get("note") or []
    fields = {
        "message_id": uuid.uuid5(REFERRAL_NAMESPACE, f"request|{envelope.clinic}|{system}|{value}"),
        "occurred_at": envelope.now,
        "sender_clinic": envelope.clinic,
        "actor": envelope.actor,
        "correlation_id": uuid.uuid4(),
        "referral_id": referral_id_for(envelope.clinic, system, value),
        "patient_ref": _reference_id(task.get("for") or source.get("subject"), "Task.for"),
        "recipient_clinic": _reference_id(task.get("owner") or _first(source.get("performer")), "Task.owner"),
        "modality": _modality(source.get("code") or task.get("code")),
        "urgency": Urgency.URGENT if source.get("priority") in {"urgent", "asap", "stat"} else Urgency.ROUTINE,
        "reason": reason,
        "icd10_codes": icd10,
        "note": " ".join(str(n.get("text", "")) for n in notes if isinstance(n, dict)),
    }
    return convert(fields, ReferralRequest)


def _first(value: Any) -> Any:  # noqa: ANN401 - FHIR JSON
    return value[0] if isinstance(value, list) and value else None


def convert(fields: Mapping[str, Any], kind: type[M]) -> M:
    """Build a contract message, turning a constraint it breaks into a 422."""
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        msg = f"{kind.__struct_config__.tag}: {exc}"
        raise schema(msg) from exc


def transaction_parts(bundle: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The Task and the ServiceRequest of a transaction Bundle that creates a referral."""
    if bundle.get("type") != "transaction":
        raise FhirError(422, GatewayCode.UNSUPPORTED, "only a transaction Bundle is accepted at the base URL")
    tasks, requests = [], []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        method = (entry.get("request") or {}).get("method") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or method != "POST":
            msg = "every entry needs a resource and request.method POST"
            raise schema(msg)
        kind = resource.get("resourceType")
        if kind == "Task":
            tasks.append(resource)
        elif kind == "ServiceRequest":
            requests.append(resource)
        else:
            raise FhirError(422, GatewayCode.UNSUPPORTED, f"a {kind} cannot be created in a referral transaction")
    if len(tasks) != 1 or len(requests) > 1:
        msg = "a referral transaction holds one Task and at most one ServiceRequest"
        raise schema(msg)
    return tasks[0], requests[0] if requests else None


# --- Lifecycle transitions ---------------------------------------------------------------------

BSER_TRANSITION: Final[Mapping[str, str]] = {
    "3.0": "accept",
    "4.0": "decline",
    "5.1.1": "schedule",
    "5.1.2": "no_show",
    "5.1.4": "complete",
    "5.2": "cancel",
    "5.1.3": "cancel",
    "6.0": "cancel",
    "7.0": "close",
}
"""The BSeR business status a PUT or PATCH asks for, and the transition that reaches it."""
STATUS_TRANSITION: Final[Mapping[str, str]] = {
    "accepted": "accept",
    "rejected": "decline",
    "cancelled": "cancel",
}


def _bser_code(task: Mapping[str, Any]) -> str:
    business = task.get("businessStatus")
    if isinstance(business, dict):
        for coding in business.get("coding", []):
            if coding.get("system") == referral_fhir.BSER_STATUS_SYSTEM:
                return str(coding.get("code", ""))
    return ""


def transition_for(current: Mapping[str, Any], wanted: Mapping[str, Any], clinic: str, view: TaskView) -> str:
    """Which lifecycle transition a new Task asks for, comparing it with the current one.

    A new owner is a forward; an ``on-hold`` Task made ``requested`` again is an override;
    otherwise the BSeR business status (or, without one, the Task status) names it.
    """
    if wanted.get("resourceType") != "Task":
        msg = "the resource must be a Task"
        raise schema(msg)
    owner = wanted.get("owner")
    if owner is not None and _reference_id(owner, "Task.owner") != view.referral.recipient_clinic:
        return "forward"
    if current.get("status") == "on-hold" and wanted.get("status") == "requested":
        return "override"
    code = _bser_code(wanted)
    if code and code != _bser_code(current):
        transition = BSER_TRANSITION.get(code)
        if transition is None:
            raise FhirError(422, GatewayCode.UNSUPPORTED, f"no transition reaches business status {code}")
    elif (status := wanted.get("status")) != current.get("status") and status in STATUS_TRANSITION:
        transition = STATUS_TRANSITION[str(status)]
    else:
        raise FhirError(422, GatewayCode.UNSUPPORTED, "the Task asks for no lifecycle change")
    if (
        transition == "cancel"
        and view.referral.state is ReferralState.CANCEL_REQUESTED
        and clinic == view.referral.recipient_clinic
    ):
        return "cancel_confirm"
    return transition


def _outputs(task: Mapping[str, Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for output in task.get("output") or []:
        name = _text(output.get("type")).lower()
        value = next((output[key] for key in ("valueString", "valueInteger") if key in output), None)
        if name and value is not None:
            found.setdefault(name, []).append(value)
    return found


def transition_command(
    transition: str, envelope: Envelope, view: TaskView, wanted: Mapping[str, Any]
) -> ReferralCommand:
    """The hub command of ``transition``, its details from the new Task.

    ``statusReason`` gives a decline's or cancel's reason code and text and an override's
    reason; ``executionPeriod.start`` a schedule's appointment; ``output`` entries typed
    ``visits``, ``technique``, ``response`` and ``recommendations`` a completion's outcome.
    """
    referral = view.referral
    base: dict[str, Any] = {
        "message_id": uuid.uuid4(),
        "occurred_at": envelope.now,
        "sender_clinic": envelope.clinic,
        "actor": envelope.actor,
        "correlation_id": referral.request.correlation_id,
        "referral_id": referral.referral_id,
        "patient_ref": referral.patient_ref,
    }
    reason = wanted.get("statusReason") or {}
    reason_code = next((c.get("code", "") for c in reason.get("coding", [])), "") if isinstance(reason, dict) else ""
    reason_text = _text(reason)
    kinds: dict[str, tuple[type[ReferralCommand], dict[str, Any]]] = {
        "accept": (ReferralAccept, {}),
        "decline": (ReferralDecline, {"reason_code": reason_code or "other", "reason_text": reason_text}),
        "no_show": (ReferralNoShow, {}),
        "close": (ReferralClose, {}),
        "cancel": (ReferralCancel, {"reason_code": reason_code or "other", "reason_text": reason_text}),
        "cancel_confirm": (ReferralCancelConfirm, {}),
        "override": (ReferralOverride, {"reason": reason_text}),
    }
    if transition == "schedule":
        start = (wanted.get("executionPeriod") or {}).get("start")
        if not isinstance(start, str):
            msg = "a scheduled Task needs executionPeriod.start, the appointment"
            raise schema(msg)
        kinds["schedule"] = (ReferralSchedule, {"appointment_at": start})
    if transition == "complete":
        outputs = _outputs(wanted)
        outcome = {
            "visits": (outputs.get("visits") or [0])[0],
            "techniques": tuple(outputs.get("technique", [])),
            "response": " ".join(map(str, outputs.get("response", []))),
            "recommendations": " ".join(map(str, outputs.get("recommendations", []))),
        }
        kinds["complete"] = (ReferralComplete, {"outcome": outcome})
    if transition == "forward":
        kinds["forward"] = (
            ReferralForward,
            {"to_clinic": _reference_id(wanted.get("owner"), "Task.owner"), "reason": reason_text},
        )
    kind, extra = kinds[transition]
    return convert({**base, **extra}, kind)


def apply_patch(task: Mapping[str, Any], operations: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON Patch body
    """A Task changed by a JSON Patch (RFC 6902) of ``replace`` and ``add`` at top-level paths.

    That is all a lifecycle change needs (status, businessStatus, statusReason, owner,
    executionPeriod, output); anything else is refused rather than half-applied.
    """
    if not isinstance(operations, list):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "a JSON Patch is a list of operations")
    patched = dict(task)
    for operation in operations:
        if not isinstance(operation, dict) or operation.get("op") not in {"replace", "add"}:
            raise FhirError(422, GatewayCode.UNSUPPORTED, "only replace and add operations are supported")
        path = str(operation.get("path", ""))
        parts = path.strip("/").split("/")
        if not path.startswith("/") or len(parts) != 1 or not parts[0]:
            raise FhirError(422, GatewayCode.UNSUPPORTED, f"only top-level paths are supported, not {path!r}")
        patched[parts[0]] = operation.get("value")
    return patched


# --- Search ------------------------------------------------------------------------------------

_COMPARATORS: Final = ("ge", "gt", "le", "lt", "eq")


def _matches_date(value: datetime, criteria: Sequence[str]) -> bool:
    for criterion in criteria:
        prefix = criterion[:2] if criterion[:2] in _COMPARATORS else "eq"
        text = criterion[2:] if criterion[:2] in _COMPARATORS else criterion
        try:
            bound = datetime.fromisoformat(text)
        except ValueError as exc:
            raise FhirError(400, RejectionCode.MALFORMED_JSON, f"_lastUpdated {criterion!r} is not a date") from exc
        if bound.tzinfo is None:
            bound = bound.replace(tzinfo=UTC)
        checks = {
            "ge": value >= bound,
            "gt": value > bound,
            "le": value <= bound,
            "lt": value < bound,
            "eq": value == bound,
        }
        if not checks[prefix]:
            return False
    return True


SEARCH_PARAMETERS: Final = frozenset(
    {"owner", "requester", "status", "patient", "identifier", "_lastUpdated", "_count", "_offset"}
)


def search_tasks(views: Iterable[TaskView], parameters: Mapping[str, Sequence[str]]) -> list[TaskView]:
    """Tasks matching every parameter, newest change first.

    The parameters: ``owner``, ``requester``, ``status``, ``patient``, ``identifier``, ``_lastUpdated``.
    """
    unknown = set(parameters) - SEARCH_PARAMETERS
    if unknown:
        raise FhirError(400, GatewayCode.UNSUPPORTED, f"unsupported search parameters: {', '.join(sorted(unknown))}")

    def value_of(name: str) -> set[str]:
        return {parse_token_search(v.split("/")[-1])[1] for raw in parameters.get(name, ()) for v in raw.split(",")}

    found = []
    for view in views:
        referral = view.referral
        task_status = referral_fhir.business_status(referral).fhir_task_status
        checks = [
            ("owner", referral.recipient_clinic),
            ("requester", referral.referring_clinic),
            ("status", task_status),
            ("patient", referral.patient_ref),
            ("identifier", str(referral.referral_id)),
        ]
        if all(name not in parameters or actual in value_of(name) for name, actual in checks) and _matches_date(
            referral.history[-1].at, parameters.get("_lastUpdated", ())
        ):
            found.append(view)
    found.sort(key=lambda v: v.referral.history[-1].at, reverse=True)
    return found


AUDIT_SEARCH_PARAMETERS: Final = frozenset({"date", "_count", "_offset"})
_INSTANT: Final = timedelta(microseconds=1)


def audit_date_bounds(parameters: Mapping[str, Sequence[str]]) -> tuple[datetime | None, datetime | None]:
    """``date=ge…`` / ``gt…`` / ``le…`` / ``lt…`` as an inclusive start and an exclusive end.

    ``date`` is when the audited message occurred (``AuditEvent.period.start``); ``eq`` and
    other parameters are refused rather than ignored.
    """
    unknown = set(parameters) - AUDIT_SEARCH_PARAMETERS
    if unknown:
        raise FhirError(400, GatewayCode.UNSUPPORTED, f"unsupported search parameters: {', '.join(sorted(unknown))}")
    since: datetime | None = None
    until: datetime | None = None
    for criterion in parameters.get("date", ()):
        prefix, text = criterion[:2], criterion[2:]
        if prefix not in {"ge", "gt", "le", "lt"}:
            raise FhirError(400, GatewayCode.UNSUPPORTED, f"date {criterion!r}: use the prefixes ge, gt, le or lt")
        try:
            bound = datetime.fromisoformat(text)
        except ValueError as exc:
            raise FhirError(400, RejectionCode.MALFORMED_JSON, f"date {criterion!r} is not a date") from exc
        if bound.tzinfo is None:
            bound = bound.replace(tzinfo=UTC)
        if prefix in {"ge", "gt"}:
            start = bound + _INSTANT if prefix == "gt" else bound
            since = start if since is None else max(since, start)
        else:
            end = bound + _INSTANT if prefix == "le" else bound
            until = end if until is None else min(until, end)
    return since, until


def page_bounds(parameters: Mapping[str, Sequence[str]]) -> tuple[int, int]:
    """``_offset`` and ``_count`` (at most :data:`MAX_PAGE`)."""
    try:
        count = int((parameters.get("_count") or [str(DEFAULT_PAGE)])[0])
        offset = int((parameters.get("_offset") or ["0"])[0])
    except ValueError as exc:
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "_count and _offset are integers") from exc
    return max(0, offset), max(0, min(count, MAX_PAGE))


def searchset(base: str, resources: Sequence[dict[str, Any]], total: int, links: Mapping[str, str]) -> dict[str, Any]:
    """A searchset Bundle with ``self`` and ``next`` links."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": relation, "url": url} for relation, url in links.items()],
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


# --- Communication: interim consult notes ------------------------------------------------------


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
    referral = view.referral
    fields = {
        "message_id": uuid.uuid4(),
        "occurred_at": envelope.now,
        "sender_clinic": envelope.clinic,
        "actor": envelope.actor,
        "correlation_id": referral.request.correlation_id,
        "referral_id": referral.referral_id,
        "patient_ref": referral.patient_ref,
        "note": note,
    }
    return convert(fields, ReferralInterimNote)


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


# --- DocumentReference and Binary (the store and its metadata: referral_hub.documents) ----------


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
