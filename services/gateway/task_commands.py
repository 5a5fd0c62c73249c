"""FHIR in, hub commands out, pure: a new referral from a Task (or a transaction Bundle), and its lifecycle.

A Task's ``PUT`` or JSON Patch becomes the one transition its new ``businessStatus`` (or
``status``) names; the sender fields come from the token's clinic (:class:`Envelope`).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from referral_hub.contracts.base import Modality
from referral_hub.contracts.referrals import (
    ReferralAccept,
    ReferralCancel,
    ReferralCancelConfirm,
    ReferralClose,
    ReferralCommand,
    ReferralComplete,
    ReferralDecline,
    ReferralForward,
    ReferralNoShow,
    ReferralOverride,
    ReferralRequest,
    ReferralSchedule,
    ReferralState,
    Urgency,
)
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.gateway.outcomes import FhirError, GatewayCode, convert, schema
from referral_hub.gateway.task_views import TaskView
from referral_hub.referrals import fhir_task as referral_fhir

MODALITY_SYSTEM: Final = "urn:referral-hub:modality"


@dataclass(frozen=True)
class Envelope:
    """What every command the gateway sends on a clinic's behalf carries, and the key its ids come from."""

    clinic: str
    actor: str
    now: datetime
    id_key: bytes = field(repr=False)
    """The gateway's own secret (``GatewayStore.id_key``): ids derived with it cannot be computed elsewhere."""


def keyed_id(key: bytes, *parts: str) -> uuid.UUID:
    """A UUID no one without ``key`` can compute from ``parts``: HMAC-SHA256, cut to 122 random bits.

    A retry of the same create derives the same ids, so the hub's duplicate detection keeps it
    to one referral; another clinic that knows (or guesses) the clinic's Task identifier cannot
    derive them, so it can neither claim the referral id first nor publish first with the
    message id and make the real create a silent duplicate. Each part is length-prefixed, so
    no two lists of parts give the same input.
    """
    text = "".join(f"{len(part)}:{part}" for part in parts)
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


def referral_id_for(envelope: Envelope, system: str, value: str) -> uuid.UUID:
    """The referral id of a new Task: derived from the clinic's own identifier with the gateway's key.

    The hub chooses referral ids; a client that names one (the hub's identifier system) is
    refused, since an id a client can choose is one another client can take first.
    """
    if system == referral_fhir.REFERRAL_ID_SYSTEM:
        msg = (
            f"a new Task cannot name its referral id ({system}): the hub assigns it; "
            "identify the Task with an identifier of the clinic's own system"
        )
        raise FhirError(422, GatewayCode.UNSUPPORTED, msg)
    return keyed_id(envelope.id_key, "referral", envelope.clinic, system, value)


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
        "message_id": keyed_id(envelope.id_key, "request", envelope.clinic, system, value),
        "occurred_at": envelope.now,
        "sender_clinic": envelope.clinic,
        "actor": envelope.actor,
        "correlation_id": uuid.uuid4(),
        "referral_id": referral_id_for(envelope, system, value),
        "patient_ref": _reference_id(task.get("for") or source.get("subject"), "Task.for"),
        "recipient_clinic": _reference_id(task.get("owner") or _first(source.get("performer")), "Task.owner"),
        "modality": _modality(source.get("code") or task.get("code")),
        "urgency": Urgency.URGENT if source.get("priority") in {"urgent", "asap", "stat"} else Urgency.ROUTINE,
        "reason": reason,
        "icd10_codes": icd10,
        "note": " ".join(str(n.get("text", "")) for n in notes if isinstance(n, dict)),
        "service_codings": _codings(source.get("code") or task.get("code")),
        "identifiers": _identifiers(task),
    }
    return convert(fields, ReferralRequest)


def _codings(concept: Any) -> list[dict[str, Any]]:  # noqa: ANN401 - FHIR JSON
    """A CodeableConcept's codings, as the contract keeps them (system, code, display)."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(codings, list):
        return []
    keys = ("system", "code", "display")
    return [{k: c[k] for k in keys if k in c} for c in codings if isinstance(c, dict)]


def _identifiers(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Task's identifiers (system and value), kept with the referral and searchable."""
    return [
        {k: i[k] for k in ("system", "value") if k in i}
        for i in task.get("identifier") or []
        if isinstance(i, dict) and i.get("system") != referral_fhir.REFERRAL_ID_SYSTEM
    ]


def _first(value: Any) -> Any:  # noqa: ANN401 - FHIR JSON
    return value[0] if isinstance(value, list) and value else None


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


def entry_kinds(bundle: Mapping[str, Any]) -> list[str]:
    """The resource types of a (checked) referral transaction's entries, in order: its response keeps it."""
    return [str(entry["resource"]["resourceType"]) for entry in bundle["entry"]]


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


def _new_note(view: TaskView, wanted: Mapping[str, Any]) -> str:
    """The text of the ``note`` entries the new Task adds to the ones the hub already shows."""
    shown = {note["text"] for note in referral_fhir.bundle(view.referral)["entry"][1]["resource"].get("note", [])}
    notes = wanted.get("note") or []
    return " ".join(
        str(note["text"]) for note in notes if isinstance(note, dict) and note.get("text") and note["text"] not in shown
    )


def command_fields(envelope: Envelope, view: TaskView) -> dict[str, Any]:
    """The fields every clinic command about this referral carries, sent now by the envelope's clinic."""
    referral = view.referral
    return {
        "message_id": uuid.uuid4(),
        "occurred_at": envelope.now,
        "sender_clinic": envelope.clinic,
        "actor": envelope.actor,
        "correlation_id": referral.request.correlation_id,
        "referral_id": referral.referral_id,
        "patient_ref": referral.patient_ref,
    }


def transition_command(
    transition: str, envelope: Envelope, view: TaskView, wanted: Mapping[str, Any]
) -> ReferralCommand:
    """The hub command of ``transition``, its details from the new Task.

    New ``note`` entries give an accept's note; ``statusReason`` a decline's or cancel's reason
    code and text and an override's reason; ``executionPeriod.start`` a schedule's appointment; ``output`` entries typed
    ``visits``, ``technique``, ``response`` and ``recommendations`` a completion's outcome.
    """
    base = command_fields(envelope, view)
    reason = wanted.get("statusReason") or {}
    reason_code = next((c.get("code", "") for c in reason.get("coding", [])), "") if isinstance(reason, dict) else ""
    reason_text = _text(reason)
    kinds: dict[str, tuple[type[ReferralCommand], dict[str, Any]]] = {
        "accept": (ReferralAccept, {"note": _new_note(view, wanted)}),
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
        end = (wanted.get("executionPeriod") or {}).get("end")
        kinds["schedule"] = (ReferralSchedule, {"appointment_at": start, "appointment_end": end})
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
