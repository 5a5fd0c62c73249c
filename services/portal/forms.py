"""Browser forms into hub commands, with the errors a member sees beside each field. Pure.

A form is validated here against the same contracts the hub decodes, so a refusal the
page can predict is shown inline at once; anything else is the hub's to refuse.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import msgspec

from referral_hub.contracts.alerts import AlertAck, AlertRaise, AlertResolve, Severity, TriggerKind
from referral_hub.contracts.base import Message, Modality
from referral_hub.contracts.paging import PageAck
from referral_hub.contracts.plans import PlanUpdate
from referral_hub.contracts.referrals import (
    ConsultNote,
    ReferralAccept,
    ReferralCancel,
    ReferralCancelConfirm,
    ReferralClose,
    ReferralComplete,
    ReferralDecline,
    ReferralForward,
    ReferralInterimNote,
    ReferralNoShow,
    ReferralOverride,
    ReferralRequest,
    ReferralSchedule,
    Urgency,
)
from referral_hub.contracts.screening import ScreeningDispute

ICD10: Final = re.compile(r"^[A-TV-Z][0-9][0-9AB](\.[0-9A-Z]{1,4})?$")
PATIENT_REF: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{3,63}$")
CLINIC: Final = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
MAX_TEXT: Final = 4000


@dataclass(frozen=True)
class Actor:
    """Who is acting: the logged-in member of a clinic."""

    clinic: str
    member: str
    zone: str


@dataclass
class FormResult:
    """A command to send, or the errors by field name (and the values typed, to show again)."""

    message: Message | None = None
    errors: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)


def _envelope(actor: Actor) -> dict[str, Any]:
    return {
        "message_id": uuid4(),
        "occurred_at": datetime.now(UTC),
        "sender_clinic": actor.clinic,
        "actor": actor.member,
        "correlation_id": uuid4(),
    }


def _lines(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in re.split(r"[,\n]", text) if part.strip())


def _text(form: Mapping[str, str], name: str, errors: dict[str, str], *, required: bool = False) -> str:
    value = form.get(name, "").strip()
    if required and not value:
        errors[name] = "Fill this in."
    elif len(value) > MAX_TEXT:
        errors[name] = f"Use at most {MAX_TEXT} characters."
    return value


def _build(kind: type[Message], fields: dict[str, Any], result: FormResult) -> FormResult:
    """The command, or the contract's own refusal as a form-level error."""
    if result.errors:
        return result
    try:
        result.message = msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        result.errors["form"] = str(exc)
    return result


def new_referral(form: Mapping[str, str], actor: Actor, offers: Mapping[str, tuple[str, ...]]) -> FormResult:
    """A new referral from the form; ``offers`` is each clinic's modalities (from the registry)."""
    result = FormResult(values=dict(form))
    errors = result.errors
    target = form.get("recipient", "")
    clinic, _, modality = target.partition("|")
    if clinic not in offers or modality not in offers[clinic] or clinic == actor.clinic:
        errors["recipient"] = "Choose a clinic and modality from the list."
    patient = form.get("patient_ref", "").strip()
    if not PATIENT_REF.match(patient):
        errors["patient_ref"] = "4 to 64 letters, digits, dots, dashes or underscores; never a name."
    urgency = form.get("urgency", "routine")
    if urgency not in {u.value for u in Urgency}:
        errors["urgency"] = "Choose routine or urgent."
    reason = _text(form, "reason", errors, required=True)
    codes = tuple(code.upper() for code in _lines(form.get("icd10_codes", "")))
    bad = [code for code in codes if not ICD10.match(code)]
    if bad:
        errors["icd10_codes"] = f"Not ICD-10 codes: {', '.join(bad)} (for example M54.5)."
    conditions = _lines(form.get("conditions", ""))
    medications = _lines(form.get("medications", ""))
    techniques = _lines(form.get("techniques", ""))
    for name, values in (("conditions", conditions), ("medications", medications), ("techniques", techniques)):
        if any(len(value) > 200 for value in values):  # noqa: PLR2004 - the contract's ShortText
            errors[name] = "Each entry may have at most 200 characters."
    fields = {
        **_envelope(actor),
        "referral_id": uuid4(),
        "patient_ref": patient,
        "recipient_clinic": clinic,
        "modality": modality,
        "urgency": urgency,
        "reason": reason,
        "icd10_codes": codes,
        "clinical_flags": {"conditions": conditions, "medications": medications},
        "requested_techniques": techniques,
        "note": _text(form, "note", errors),
    }
    return _build(ReferralRequest, fields, result)


DECLINE_REASONS: Final = {
    "no_capacity": "No appointment available in time",
    "out_of_scope": "Outside what this clinic treats",
    "contraindicated": "Not safe for this patient (contraindication)",
    "patient_unreachable": "Patient could not be reached",
    "patient_declined": "Patient declined",
    "other": "Other (say why below)",
}
"""Why a recipient declines, as codes the other clinic's systems can count; the words go beside them."""
CANCEL_REASONS: Final = {
    "patient_declined": "Patient no longer wants it",
    "resolved": "The problem resolved",
    "sent_in_error": "Sent in error",
    "referred_elsewhere": "Referred elsewhere",
    "other": "Other (say why below)",
}
"""Why a referral is cancelled."""
REASON_CODES: Final = {"decline": DECLINE_REASONS, "cancel": CANCEL_REASONS}


TRANSITION_COMMANDS: Final[dict[str, type[Message]]] = {
    "accept": ReferralAccept,
    "decline": ReferralDecline,
    "schedule": ReferralSchedule,
    "no_show": ReferralNoShow,
    "interim_note": ReferralInterimNote,
    "complete": ReferralComplete,
    "close": ReferralClose,
    "cancel": ReferralCancel,
    "cancel_confirm": ReferralCancelConfirm,
    "forward": ReferralForward,
    "override": ReferralOverride,
}


def transition(  # noqa: C901, PLR0913 - one branch per transition's own fields; the clinics Forward may name
    name: str,
    form: Mapping[str, str],
    actor: Actor,
    referral_id: UUID,
    patient_ref: str,
    *,
    forward_to: Collection[str] = (),
) -> FormResult:
    """One lifecycle step on a referral from its form; ``forward_to`` is the registry's choice for Forward."""
    result = FormResult(values=dict(form))
    errors = result.errors
    kind = TRANSITION_COMMANDS.get(name)
    if kind is None:
        errors["form"] = "No such step."
        return result
    fields: dict[str, Any] = {**_envelope(actor), "referral_id": referral_id, "patient_ref": patient_ref}
    if name in REASON_CODES:
        code = form.get("reason_code", "")
        if code not in REASON_CODES[name]:
            errors["reason_code"] = "Choose a reason from the list."
        fields["reason_code"] = code
        fields["reason_text"] = _text(form, "reason_text", errors, required=code == "other")
    elif name == "override":
        fields["reason"] = _text(form, "reason", errors, required=True)
    elif name == "interim_note":
        fields["note"] = _text(form, "note", errors, required=True)
    elif name == "accept":
        fields["note"] = _text(form, "note", errors)
    elif name == "forward":
        to = form.get("to_clinic", "").strip()
        if not CLINIC.match(to) or to not in forward_to:
            errors["to_clinic"] = "Choose a clinic from the list."
        fields["to_clinic"] = to
        fields["reason"] = _text(form, "reason", errors)
    elif name == "schedule":
        fields["appointment_at"] = _local_datetime(form.get("appointment_at", ""), actor.zone, errors)
    elif name == "complete":
        visits = form.get("visits", "").strip()
        if not visits.isdigit() or int(visits) > 1000:  # noqa: PLR2004 - the contract's bound
            errors["visits"] = "A whole number of visits, 0 to 1000."
        fields["outcome"] = ConsultNote(
            visits=int(visits) if visits.isdigit() and int(visits) <= 1000 else 0,  # noqa: PLR2004 - as above
            techniques=_lines(form.get("techniques", "")),
            response=_text(form, "response", errors, required=True),
            recommendations=_text(form, "recommendations", errors),
        )
    return _build(kind, fields, result)


def _local_datetime(text: str, zone: str, errors: dict[str, str]) -> datetime | None:
    """A ``datetime-local`` field, read in the clinic's time zone, as UTC."""
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError:
        errors["appointment_at"] = "Give a date and time."
        return None
    return naive.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def alert_raise(form: Mapping[str, str], actor: Actor, patient_ref: str) -> FormResult:
    """A new contraindication alert on a patient."""
    result = FormResult(values=dict(form))
    errors = result.errors
    severity = form.get("severity", "")
    if severity not in {s.value for s in Severity}:
        errors["severity"] = "Choose a severity."
    trigger_kind = form.get("trigger_kind", "")
    if trigger_kind not in {k.value for k in TriggerKind}:
        errors["trigger_kind"] = "Choose what the alert is about."
    trigger = _text(form, "trigger", errors, required=True)[:200]
    modalities = tuple(m.value for m in Modality if form.get(f"modality_{m.value}"))
    if not modalities:
        errors["modalities"] = "Choose at least one modality the alert concerns."
    fields = {
        **_envelope(actor),
        "alert_id": uuid4(),
        "patient_ref": patient_ref,
        "trigger_kind": trigger_kind,
        "trigger": trigger,
        "modalities": modalities,
        "techniques": _lines(form.get("techniques", "")),
        "severity": severity,
        "note": _text(form, "note", errors),
    }
    return _build(AlertRaise, fields, result)


def alert_ack(actor: Actor, patient_ref: str, alert_id: UUID) -> Message:
    """Acknowledge an alert as this member."""
    return AlertAck(**_envelope(actor), alert_id=alert_id, patient_ref=patient_ref, member=actor.member)


def alert_resolve(form: Mapping[str, str], actor: Actor, patient_ref: str, alert_id: UUID) -> FormResult:
    """Resolve an alert, with a reason."""
    result = FormResult(values=dict(form))
    reason = _text(form, "reason", result.errors)
    fields = {**_envelope(actor), "alert_id": alert_id, "patient_ref": patient_ref, "reason": reason}
    return _build(AlertResolve, fields, result)


def page_ack(actor: Actor, page_id: UUID) -> Message:
    """Acknowledge a page as this member: it stops the escalation."""
    return PageAck(**_envelope(actor), page_id=page_id, member=actor.member)


def plan_update(form: Mapping[str, str], actor: Actor, patient_ref: str, modality: str) -> FormResult:
    """A new version of this clinic's plan; the page computes ``plan_version`` (the newest it shows plus one).

    The hub accepts it only as the successor of the version it holds (optimistic
    concurrency), and otherwise refuses with the version it holds.
    """
    result = FormResult(values=dict(form))
    errors = result.errors
    version = form.get("plan_version", "").strip()
    if not version.isdigit() or not 1 <= int(version) <= 1_000_000:  # noqa: PLR2004 - a sane bound on a counter
        errors["form"] = "The plan's version could not be worked out: reload the page and send it again."
    try:
        effective = date.fromisoformat(form.get("effective_date", "").strip())
    except ValueError:
        errors["effective_date"] = "Give the date the plan takes effect."
        effective = None
    frequency = _text(form, "frequency", errors)
    if len(frequency) > 200:  # noqa: PLR2004 - the contract's ShortText
        errors["frequency"] = "Use at most 200 characters."
    goals = tuple(line.strip() for line in form.get("goals", "").splitlines() if line.strip())
    if not goals:
        errors["goals"] = "Give at least one goal, one per line."
    fields = {
        **_envelope(actor),
        "patient_ref": patient_ref,
        "modality": modality,
        "plan_version": int(version) if version.isdigit() else 0,
        "goals": goals,
        "frequency": frequency,
        "techniques": _lines(form.get("techniques", "")),
        "precautions": tuple(line.strip() for line in form.get("precautions", "").splitlines() if line.strip()),
        "effective_date": effective,
    }
    return _build(PlanUpdate, fields, result)


def dispute(form: Mapping[str, str], actor: Actor, patient_ref: str, flag_id: UUID) -> FormResult:
    """A dispute of one match of a screening flag this clinic received."""
    result = FormResult(values=dict(form))
    fields = {
        **_envelope(actor),
        "flag_id": flag_id,
        "patient_ref": patient_ref,
        "rule_id": form.get("rule_id", "").strip()[:200],
        "reason": _text(form, "reason", result.errors, required=True),
    }
    return _build(ScreeningDispute, fields, result)


@dataclass(frozen=True)
class Attachment:
    """One file from a form's file input: its name, its declared type, its bytes."""

    filename: str
    content_type: str
    data: bytes


MAX_ATTACHMENTS: Final = 10
"""Files one form may carry."""


def attachments(parts: Sequence[Attachment], max_bytes: int) -> tuple[list[Attachment], str]:
    """The files to store, or why not (one sentence naming the file).

    A part with no file name and no bytes is an empty file input (nothing chosen), not an
    error; a chosen file that is empty, or over ``max_bytes``, is.
    """
    chosen = [part for part in parts if part.filename or part.data]
    if len(chosen) > MAX_ATTACHMENTS:
        return [], f"Attach at most {MAX_ATTACHMENTS} files at once."
    for part in chosen:
        name = part.filename or "a file"
        if not part.data:
            return [], f"{name} is empty: choose the file again."
        if len(part.data) > max_bytes:
            limit = max_bytes // (1024 * 1024)
            return [], f"{name} is {len(part.data) / (1024 * 1024):.1f} MiB; each file may be at most {limit} MiB."
    return chosen, ""
