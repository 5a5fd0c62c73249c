"""A referral in plain lines, as ``hubctl referral show`` and ``hubctl inbox`` print it. Pure.

Every field a clinic can type into a command has a place here, so what one clinic sends the
other can read from the command line: the request's techniques, note and clinical flags, each
step's note or reason, the appointment, the forward's new clinic and the whole consult note.
"""

from __future__ import annotations

from datetime import datetime

from referral_hub.contracts.referrals import ConsultNote, ReferralRequest, ReferralRequested, ReferralTransitioned
from referral_hub.referrals import lifecycle
from referral_hub.referrals.domain import HistoryItem, Referral


def outcome_words(outcome: ConsultNote) -> str:
    """The consult note in one line: visits, techniques, response and recommendations."""
    parts = [f"{outcome.visits} visits"]
    if outcome.techniques:
        parts.append(f"techniques: {', '.join(outcome.techniques)}")
    if outcome.response:
        parts.append(f"response: {outcome.response}")
    if outcome.recommendations:
        parts.append(f"recommendations: {outcome.recommendations}")
    return "; ".join(parts)


def step_words(  # noqa: PLR0913 - one keyword per thing a step can say
    *,
    detail: str,
    reason_code: str,
    appointment_at: datetime | None,
    outcome: ConsultNote | None,
    forwarded_to: str | None,
    appointment_end: datetime | None = None,
) -> str:
    """What one lifecycle step said, in one line; empty for a step that carries nothing."""
    until = f" until {appointment_end.isoformat()}" if appointment_end else ""
    parts = [
        f"reason code {reason_code}" if reason_code else "",
        detail,
        f"appointment {appointment_at.isoformat()}{until}" if appointment_at else "",
        f"forwarded to {forwarded_to}" if forwarded_to else "",
        outcome_words(outcome) if outcome else "",
    ]
    return "; ".join(part for part in parts if part)


def history_words(item: HistoryItem) -> str:
    """What a stored step said."""
    return step_words(
        detail=item.detail,
        reason_code=item.reason_code,
        appointment_at=item.appointment_at,
        outcome=item.outcome,
        forwarded_to=item.forwarded_to,
        appointment_end=item.appointment_end,
    )


def request_lines(request: ReferralRequest | ReferralRequested) -> list[str]:
    """The request's clinical content, one fact a line; facts the sender left empty are left out."""
    lines = [f"{request.modality} {request.urgency}; reason: {request.reason}"]
    facts = (
        ("ICD-10", ", ".join(request.icd10_codes)),
        ("requested techniques", ", ".join(request.requested_techniques)),
        ("conditions", ", ".join(request.clinical_flags.conditions)),
        ("medications", ", ".join(request.clinical_flags.medications)),
        ("note", request.note),
        ("service codes", ", ".join(f"{c.system}|{c.code} {c.display}".strip() for c in request.service_codings)),
        ("the sender's identifiers", ", ".join(f"{i.system}|{i.value}" for i in request.identifiers)),
    )
    lines.extend(f"{name}: {value}" for name, value in facts if value)
    return lines


def referral_lines(referral: Referral) -> list[str]:
    """``hubctl referral show``: who, where it stands, what was asked, then every step."""
    status = lifecycle.STATUS[referral.state]
    parties = f"{referral.referring_clinic} -> {referral.recipient_clinic}"
    bser = f"BSeR {status.bser_code} {status.bser_display}"
    lines = [
        f"referral {referral.referral_id}  {parties}  patient {referral.patient_ref}",
        f"  state {referral.state} ({bser}; FHIR Task {status.fhir_task_status})",
    ]
    lines.extend(f"  {line}" for line in request_lines(referral.request))
    lines.extend(
        f"  {item.at.isoformat(timespec='seconds')}  {item.transition:<14} by {item.by_clinic:<20} "
        f"-> {item.state:<16} {history_words(item)}".rstrip()
        for item in referral.history
    )
    return lines


def transitioned_words(event: ReferralTransitioned) -> str:
    """What a delivered step said, as its recipient's inbox shows it."""
    return step_words(
        detail=event.detail,
        reason_code=event.reason_code,
        appointment_at=event.appointment_at,
        outcome=event.outcome,
        forwarded_to=event.forwarded_to,
        appointment_end=event.appointment_end,
    )
