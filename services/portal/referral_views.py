"""What a referral page shows: its state in words, its timeline, and the buttons a clinic gets. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

from referral_hub.client import InboxItem
from referral_hub.contracts.referrals import (
    ConsultNote,
    ReferralEvent,
    ReferralRequested,
    ReferralState,
    ReferralTransitioned,
)
from referral_hub.contracts.screening import ScreeningDisputed, ScreeningFlagged
from referral_hub.portal.domain import LABELS, STATE_WORDS, PortalRole, kind_of, local_time
from referral_hub.referrals import lifecycle, wording
from referral_hub.referrals.lifecycle import Party

# --- Referral ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineStep:
    """One step of a referral's history, as both parties saw it."""

    event_number: int
    when: str
    what: str
    by: str
    state: str
    detail: str
    message_id: str = ""


@dataclass(frozen=True)
class ReferralView:
    """Everything the referral page shows."""

    referral_id: str
    patient_ref: str
    role: PortalRole
    state: ReferralState
    state_words: str
    bser_code: str
    bser_display: str
    referring_clinic: str
    recipient_clinic: str
    request: ReferralRequested | None
    timeline: list[TimelineStep]
    transitions: list[str]
    screening: list[ScreeningFlagged] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    event_numbers: frozenset[int] = frozenset()
    disputes: list[str] = field(default_factory=list)
    appointment: str = ""
    """The newest appointment, in the clinic's time zone: shown at the top of the page."""
    outcome: ConsultNote | None = None
    """The completion's consult note: shown at the top of the page once the referral is completed."""
    urgency: str = ""


def _step_detail(message: ReferralEvent, zone: str) -> str:
    if isinstance(message, ReferralTransitioned):
        parts = [message.detail, message.reason_code]
        if message.appointment_at is not None:
            until = f" until {local_time(message.appointment_end, zone)}" if message.appointment_end else ""
            parts.append(f"appointment {local_time(message.appointment_at, zone)}{until}")
        if message.outcome is not None:
            parts.append(wording.outcome_words(message.outcome))
        if message.forwarded_to:
            parts.append(f"forwarded to {message.forwarded_to}")
        return "; ".join(part for part in parts if part)
    if isinstance(message, ReferralRequested):
        return message.reason
    return ""


def referral_view(items: Iterable[InboxItem], referral_id: UUID, clinic: str, zone: str) -> ReferralView | None:
    """The referral as this clinic's inbox tells it, or ``None`` when its inbox never mentioned it.

    ``None`` is what another clinic's referral id gives too: the page answers 404 for both.
    """
    events: list[tuple[int, ReferralEvent]] = []
    flags: list[ScreeningFlagged] = []
    refusals: list[str] = []
    disputes: list[str] = []
    numbers: set[int] = set()
    for item in items:
        message = item.message
        if getattr(message, "referral_id", None) != referral_id:
            continue
        numbers.add(item.event_number)
        if isinstance(message, ReferralEvent):
            events.append((item.event_number, message))
        elif isinstance(message, ScreeningFlagged):
            flags.append(message)
        elif isinstance(message, ScreeningDisputed):
            disputes.append(dispute_words(message, zone))
    if not events:
        return None
    latest = events[-1][1]
    role = PortalRole.REFERRER if latest.referring_clinic == clinic else PortalRole.RECIPIENT
    status = lifecycle.STATUS[latest.state]
    request = next((message for _, message in events if isinstance(message, ReferralRequested)), None)
    steps = [message for _, message in events if isinstance(message, ReferralTransitioned)]
    booked = [step.appointment_at for step in steps if step.appointment_at is not None]
    outcome = next((step.outcome for step in reversed(steps) if step.outcome is not None), None)
    timeline = [
        TimelineStep(
            event_number=number,
            when=local_time(message.occurred_at, zone),
            what=message.transition.replace("_", " ")
            if isinstance(message, ReferralTransitioned)
            else LABELS.get(kind_of(message), kind_of(message)),
            by=f"{message.actor} ({message.sender_clinic})",
            state=STATE_WORDS[message.state],
            detail=_step_detail(message, zone),
            message_id=str(message.message_id),
        )
        for number, message in events
    ]
    return ReferralView(
        referral_id=str(referral_id),
        patient_ref=latest.patient_ref,
        role=role,
        state=latest.state,
        state_words=STATE_WORDS[latest.state],
        bser_code=status.bser_code,
        bser_display=f"Service Request {status.bser_display}",
        referring_clinic=latest.referring_clinic,
        recipient_clinic=latest.recipient_clinic,
        request=request,
        timeline=timeline,
        transitions=permitted_transitions(latest.state, role),
        screening=flags,
        refusals=refusals,
        event_numbers=frozenset(numbers),
        disputes=disputes,
        appointment=local_time(booked[-1], zone) if booked else "",
        outcome=outcome,
        urgency=request.urgency.value if request else "",
    )


def dispute_words(message: ScreeningDisputed, zone: str) -> str:
    """One dispute of a screening match, as a line."""
    when = local_time(message.occurred_at, zone)
    return f"{message.disputed_by} ({message.actor}) disputed rule {message.rule_id} at {when}: {message.reason}"


TRANSITION_ORDER: Final = (
    "accept",
    "override",
    "decline",
    "schedule",
    "interim_note",
    "no_show",
    "complete",
    "close",
    "cancel",
    "cancel_confirm",
    "forward",
)


def permitted_transitions(state: ReferralState, role: PortalRole) -> list[str]:
    """The steps this clinic may take now, from the hub's own transition table."""
    party = Party.SENDER if role is PortalRole.REFERRER else Party.RECIPIENT
    allowed = {
        rule.transition
        for rule in lifecycle.RULES.values()
        if party in rule.by and lifecycle.permits(rule, party, state)
    }
    return [name for name in TRANSITION_ORDER if name in allowed]
