"""Pure referral rules: admitting a submission, deciding a command, deriving what to announce.

Nothing here does I/O or reads a clock. The handler passes in the stored state, a registry
lookup and the time the hub received the command, so every decision is replayable: a
redelivered command yields exactly the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, TypedDict
from uuid import UUID

import msgspec

from referral_hub.contracts.patient import SealedDetails
from referral_hub.contracts.referrals import (
    ConsultNote,
    ReferralAccept,
    ReferralCancel,
    ReferralCloseReminder,
    ReferralCommand,
    ReferralComplete,
    ReferralDecline,
    ReferralForward,
    ReferralInterimNote,
    ReferralOverdue,
    ReferralOverride,
    ReferralRequest,
    ReferralRequested,
    ReferralSchedule,
    ReferralState,
    ReferralTransitioned,
    Urgency,
)
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.contracts.screening import ScreeningFlagged
from referral_hub.referrals import lifecycle, screening
from referral_hub.referrals.lifecycle import Party
from referral_hub.referrals.sealed_checks import check_sealed, details_for
from referral_hub.runtime.jetstream import streams
from referral_hub.runtime.messaging.admission import Admitted, ClinicLookup, admit
from referral_hub.runtime.messaging.ids import derived_id
from referral_hub.runtime.messaging.outgoing import Announcement
from referral_hub.runtime.messaging.refusals import HUB_SENDER, Refusal

__all__ = ["Admitted", "admit"]


@dataclass(frozen=True)
class SlaPolicy:
    """How long a recipient has to answer, and a sender to close, before the hub nudges."""

    urgent: timedelta = timedelta(hours=24)
    routine: timedelta = timedelta(hours=72)
    close_within: timedelta = timedelta(days=7)

    def answer_window(self, urgency: Urgency) -> timedelta:
        """The accept-or-decline window for ``urgency``."""
        return self.urgent if urgency is Urgency.URGENT else self.routine


class HistoryItem(msgspec.Struct, frozen=True, kw_only=True):
    """One accepted step of a referral, with what the command said."""

    message_id: UUID
    transition: str
    by_clinic: str
    actor: str = ""
    at: datetime
    state: ReferralState
    correlation_id: UUID | None = None
    detail: str = ""
    reason_code: str = ""
    appointment_at: datetime | None = None
    appointment_end: datetime | None = None
    outcome: ConsultNote | None = None
    forwarded_to: str | None = None
    by_care_team: bool = False
    """The patient's care team answered a hold (``screening.team_answers``): ``by_clinic`` is the
    team's clinic, which the referral's parties are not told."""


class Referral(msgspec.Struct, frozen=True, kw_only=True):
    """A referral's durable state, as stored in the referrals KV bucket."""

    referral_id: UUID
    patient_ref: str
    referring_clinic: str
    recipient_clinic: str
    urgency: Urgency
    state: ReferralState
    request: ReferralRequest
    history: tuple[HistoryItem, ...]
    due_by: datetime | None = None
    overdue_notified: bool = False
    completed_at: datetime | None = None
    close_reminder_sent: bool = False
    forwarded_from: tuple[str, ...] = ()
    screening: ScreeningFlagged | None = None
    """The contraindications screening found when the referral arrived, if any."""
    resealed: tuple[SealedDetails, ...] = ()
    """Patient details re-sealed to clinics that joined later (forwards), oldest first."""

    def applied(self, message_id: UUID) -> HistoryItem | None:
        """The step the command ``message_id`` caused, if it was already applied."""
        return next((item for item in self.history if item.message_id == message_id), None)

    def party(self, clinic_id: str) -> Party | None:
        """Which side ``clinic_id`` is on, if any."""
        if clinic_id == self.referring_clinic:
            return Party.SENDER
        if clinic_id == self.recipient_clinic:
            return Party.RECIPIENT
        return None


@dataclass(frozen=True)
class Changed:
    """The referral after an accepted command, and the step that got it there."""

    referral: Referral
    step: HistoryItem
    created: bool = False


@dataclass(frozen=True)
class AlreadyApplied:
    """The command was applied before (a redelivery or a resend): re-announce, change nothing."""

    referral: Referral
    step: HistoryItem


Decision = Changed | AlreadyApplied | Refusal

REANNOUNCE_WITHIN: Final = timedelta(seconds=streams.OUTPUT_DEDUPE_SECONDS - 600)
"""How long after a command was applied its outputs can be published again for free: the
inbox and event streams still hold their ids (``Nats-Msg-Id``) and de-duplicate them, with
ten minutes to spare."""


def reannounce(applied_at: datetime, now: datetime, attempt: int) -> bool:
    """Whether the outputs of an already-applied command are published again.

    Re-publishing under the original ids is what repairs a crash between the state write and
    the publish, and it is free while JetStream still remembers those ids. The delivery count
    alone cannot tell a redelivery from a resend: a nats-server restart resets it, and relying
    on it would lose outputs across a ``kill -9`` of the server. Past the window only a redelivery
    re-announces, so a resend that late is acknowledged without effects.
    """
    return now - applied_at < REANNOUNCE_WITHIN or attempt > 1


def decide(
    command: ReferralCommand,
    existing: Referral | None,
    lookup: ClinicLookup,
    received_at: datetime,
    sla: SlaPolicy,
) -> Decision:
    """What ``command`` does to the referral it names.

    A referral is visible only to its parties, and a rejection never tells another clinic
    anything about it. A command on it from any other clinic is answered exactly as if the id
    named no referral (:func:`_not_yours`), even when it reuses the message id of one of the
    referral's steps: only the clinic that sent that step, or a party, has it treated as a
    resend. A new referral reusing its id learns only that the id is taken (:func:`_id_taken`).
    """
    if (
        existing is not None
        and (step := existing.applied(command.message_id)) is not None
        and (step.by_clinic == command.sender_clinic or existing.party(command.sender_clinic) is not None)
    ):
        return AlreadyApplied(existing, step)
    if isinstance(command, ReferralRequest):
        return _request(command, existing, lookup, received_at, sla)
    return _transition(command, existing, lookup, received_at, sla)


def _step(command: ReferralCommand, transition: str, state: ReferralState, at: datetime) -> HistoryItem:
    detail = ""
    reason_code = ""
    if isinstance(command, ReferralDecline | ReferralCancel):
        reason_code, detail = command.reason_code, command.reason_text
    elif isinstance(command, ReferralInterimNote | ReferralAccept):
        detail = command.note
    elif isinstance(command, ReferralForward | ReferralOverride):
        detail = command.reason
    return HistoryItem(
        message_id=command.message_id,
        transition=transition,
        by_clinic=command.sender_clinic,
        actor=command.actor,
        at=at,
        state=state,
        correlation_id=command.correlation_id,
        detail=detail,
        reason_code=reason_code,
        appointment_at=command.appointment_at if isinstance(command, ReferralSchedule) else None,
        appointment_end=command.appointment_end if isinstance(command, ReferralSchedule) else None,
        outcome=command.outcome if isinstance(command, ReferralComplete) else None,
        forwarded_to=command.to_clinic if isinstance(command, ReferralForward) else None,
    )


def _check_recipient(
    recipient_id: str, sender_id: str, command: ReferralRequest, lookup: ClinicLookup
) -> Refusal | None:
    recipient = lookup(recipient_id)
    if recipient is None:
        return Refusal(RejectionCode.UNKNOWN_CLINIC, f"recipient clinic {recipient_id!r} is not registered")
    if recipient.id == sender_id:
        return Refusal(RejectionCode.INVALID_RECIPIENT, "a clinic cannot refer a patient to itself")
    if command.modality not in recipient.modalities:
        return Refusal(
            RejectionCode.INVALID_RECIPIENT,
            f"{recipient.id!r} does not offer {command.modality}; it offers {', '.join(recipient.modalities)}",
        )
    return None


def _request(
    command: ReferralRequest,
    existing: Referral | None,
    lookup: ClinicLookup,
    received_at: datetime,
    sla: SlaPolicy,
) -> Decision:
    if existing is not None and existing.party(command.sender_clinic) is None:
        return _id_taken(command)
    if existing is not None:
        return Refusal(
            RejectionCode.DUPLICATE_REFERRAL_ID,
            f"referral {command.referral_id} already exists",
            current_state=existing.state,
        )
    refusal = _check_recipient(command.recipient_clinic, command.sender_clinic, command, lookup) or check_sealed(
        command, command.patient_details, (command.sender_clinic, command.recipient_clinic), lookup
    )
    if refusal is not None:
        return refusal
    step = _step(command, "request", ReferralState.REQUESTED, received_at)
    referral = Referral(
        referral_id=command.referral_id,
        patient_ref=command.patient_ref,
        referring_clinic=command.sender_clinic,
        recipient_clinic=command.recipient_clinic,
        urgency=command.urgency,
        state=ReferralState.REQUESTED,
        request=command,
        history=(step,),
        due_by=received_at + sla.answer_window(command.urgency),
    )
    return Changed(referral, step, created=True)


def screened(decision: Decision, flag: ScreeningFlagged | None) -> Decision:
    """A newly created referral with its screening flag; held in ``needs_review`` if the flag says so.

    Other decisions pass through: only a new referral is screened, and a redelivered one
    already carries its flag.
    """
    if flag is None or not isinstance(decision, Changed) or not decision.created:
        return decision
    state = ReferralState.NEEDS_REVIEW if flag.held else decision.referral.state
    step = msgspec.structs.replace(decision.step, state=state)
    referral = msgspec.structs.replace(decision.referral, state=state, history=(step,), screening=flag)
    return Changed(referral, step, created=True)


def _not_yours(command: ReferralCommand) -> Refusal:
    """The one answer to a command on a referral the sender is not a party to, whether or not it exists.

    Referral ids are random UUIDs that the referring clinic mints and that only the
    referral's parties ever see, so a clinic naming an id it is not a party to is guessing,
    replaying a leaked id or probing. The hub answers ``unknown_referral`` with the same text
    as for an id nobody uses: built from the command alone (its id and its sender), never
    naming the referral's state, parties or patient, and checked before anything that would
    (the patient_ref, the state machine, the party rules).
    """
    return Refusal(
        RejectionCode.UNKNOWN_REFERRAL, f"no referral {command.referral_id} involving {command.sender_clinic!r}"
    )


def _id_taken(command: ReferralRequest) -> Refusal:
    """The answer to a new referral whose id another clinic's referral already uses.

    Referral ids are one namespace, so the id cannot be given to a second referral, and a
    refusal is unavoidable: it necessarily says that this id is not free. It says nothing
    more: no state, no clinic, no patient, and the same code and text whichever referral
    holds the id and whatever state it is in. Since ids are random UUIDs (122 random bits)
    known only to their parties, a clinic can only run into another clinic's id if it
    already holds that id; guessing one is hopeless. The sender's own duplicate (it is a
    party) keeps the informative answer, with the state, because it tells it nothing new.
    """
    return Refusal(
        RejectionCode.DUPLICATE_REFERRAL_ID,
        f"referral id {command.referral_id} cannot be used for a new referral; send it with a new random UUID",
    )


def _check_allowed(rule: lifecycle.Rule, party: Party, existing: Referral, clinic: str) -> Refusal | None:
    if existing.state in lifecycle.TERMINAL:
        return Refusal(
            RejectionCode.REFERRAL_CLOSED,
            f"referral is {existing.state}; its loop is closed and it cannot be {rule.transition}ed",
            current_state=existing.state,
        )
    if party not in rule.by:
        allowed = " or ".join(sorted(p.value for p in rule.by))
        return Refusal(
            RejectionCode.WRONG_PARTY,
            f"only the {allowed} may {rule.transition} a referral; {clinic!r} is the {party.value}",
            current_state=existing.state,
        )
    if not lifecycle.permits(rule, party, existing.state):
        return Refusal(
            RejectionCode.INVALID_TRANSITION,
            f"cannot {rule.transition} a referral in state {existing.state}",
            current_state=existing.state,
        )
    return None


def _check_forward(command: ReferralForward, existing: Referral, lookup: ClinicLookup) -> Refusal | None:
    refusal = _check_recipient(command.to_clinic, existing.referring_clinic, existing.request, lookup)
    if refusal is None and command.to_clinic == existing.recipient_clinic:
        refusal = Refusal(RejectionCode.INVALID_RECIPIENT, "cannot forward a referral to its current recipient")
    if refusal is None:
        return None
    return Refusal(refusal.code, refusal.reason, current_state=existing.state)


def _transition(
    command: ReferralCommand,
    existing: Referral | None,
    lookup: ClinicLookup,
    received_at: datetime,
    sla: SlaPolicy,
) -> Decision:
    party = existing.party(command.sender_clinic) if existing is not None else None
    if (
        existing is not None
        and party is None
        and existing.state is ReferralState.NEEDS_REVIEW
        and screening.team_answers(existing.screening, command)
    ):
        rule = lifecycle.rule_for(command)
        new_state = rule.to_state or existing.state
        step = msgspec.structs.replace(_step(command, rule.transition, new_state, received_at), by_care_team=True)
        return Changed(msgspec.structs.replace(existing, state=new_state, history=(*existing.history, step)), step)
    if existing is None or party is None:
        return _not_yours(command)
    if command.patient_ref != existing.patient_ref:
        return Refusal(
            RejectionCode.PATIENT_MISMATCH,
            f"referral {command.referral_id} is for a different patient_ref",
            current_state=existing.state,
        )
    rule = lifecycle.rule_for(command)
    refusal = _check_allowed(rule, party, existing, command.sender_clinic)
    if refusal is None and isinstance(command, ReferralForward):
        refusal = _check_forward(command, existing, lookup) or check_sealed(
            command, command.patient_details, (command.to_clinic,), lookup
        )
    if refusal is not None:
        return refusal
    new_state = lifecycle.target_state(rule, party, existing.state)
    step = _step(command, rule.transition, new_state, received_at)
    changes: dict[str, object] = {"state": new_state, "history": (*existing.history, step)}
    if isinstance(command, ReferralForward):
        changes |= {
            "recipient_clinic": command.to_clinic,
            "forwarded_from": (*existing.forwarded_from, existing.recipient_clinic),
            "due_by": received_at + sla.answer_window(existing.urgency),
            "overdue_notified": False,
        }
        if command.patient_details is not None:
            changes["resealed"] = (*existing.resealed, command.patient_details)
    if new_state is ReferralState.COMPLETED:
        changes["completed_at"] = received_at
    return Changed(msgspec.structs.replace(existing, **changes), step)


def announcements(referral: Referral, step: HistoryItem) -> list[Announcement]:
    """What the hub tells whom after ``step``; identical however often it is derived.

    Both parties see every step of their referral, so the loop is visible from either
    end; a forward also sends the full referral to the new recipient.
    """
    if step.transition == "request":
        event = requested_event(referral, step, "requested")
        requested = Announcement(event, "referral.requested", (referral.recipient_clinic, referral.referring_clinic))
        if referral.screening is None:
            return [requested]
        return [requested, *screening.flag_announcements(referral.screening)]
    transitioned = _transitioned_event(referral, step)
    if step.transition == "forward":
        forwarder = referral.forwarded_from[-1] if referral.forwarded_from else step.by_clinic
        forwarded = [
            Announcement(
                requested_event(referral, step, "forwarded-request"), "referral.requested", (referral.recipient_clinic,)
            ),
            Announcement(transitioned, "referral.transitioned", (referral.referring_clinic, forwarder)),
        ]
        if referral.screening is not None:
            forwarded.append(
                screening.forwarded_flag(
                    referral.screening,
                    referral.recipient_clinic,
                    derived_id(str(step.message_id), "forwarded-flag"),
                    step.message_id,
                )
            )
        return forwarded
    parties = (referral.referring_clinic, referral.recipient_clinic)
    if step.by_care_team:
        return _team_answer(referral, step, transitioned)
    return [Announcement(transitioned, "referral.transitioned", parties)]


def _team_answer(referral: Referral, step: HistoryItem, whole: ReferralTransitioned) -> list[Announcement]:
    """The care team's answer: to the parties from the hub, without who answered or why; to the team's clinic whole."""
    anonymous = msgspec.structs.replace(step, by_clinic=HUB_SENDER, actor=screening.CARE_TEAM_ACTOR, detail="")
    to_team = msgspec.structs.replace(whole, message_id=derived_id(str(step.message_id), "care-team-answer"))
    return [
        Announcement(
            _transitioned_event(referral, anonymous),
            "referral.transitioned",
            (referral.referring_clinic, referral.recipient_clinic),
        ),
        Announcement(to_team, "referral.transitioned", (step.by_clinic,)),
    ]


class _Envelope(TypedDict):
    message_id: UUID
    occurred_at: datetime
    sender_clinic: str
    actor: str
    correlation_id: UUID
    causation_id: UUID | None
    referral_id: UUID
    patient_ref: str
    state: ReferralState
    referring_clinic: str
    recipient_clinic: str


def _envelope(referral: Referral, step: HistoryItem, role: str) -> _Envelope:
    return {
        "message_id": derived_id(str(step.message_id), role),
        "occurred_at": step.at,
        "sender_clinic": step.by_clinic,
        "actor": step.actor or referral.request.actor,
        "correlation_id": step.correlation_id or referral.request.correlation_id,
        "causation_id": step.message_id,
        "referral_id": referral.referral_id,
        "patient_ref": referral.patient_ref,
        "state": step.state,
        "referring_clinic": referral.referring_clinic,
        "recipient_clinic": referral.recipient_clinic,
    }


def requested_event(referral: Referral, step: HistoryItem, role: str) -> ReferralRequested:
    """The full referral, as its recipient needs it."""
    command = referral.request
    return ReferralRequested(
        **_envelope(referral, step, role),
        modality=command.modality,
        urgency=command.urgency,
        reason=command.reason,
        icd10_codes=command.icd10_codes,
        clinical_flags=command.clinical_flags,
        requested_techniques=command.requested_techniques,
        note=command.note,
        service_codings=command.service_codings,
        identifiers=command.identifiers,
        patient_details=details_for((command.patient_details, *referral.resealed), referral.recipient_clinic),
    )


def _transitioned_event(referral: Referral, step: HistoryItem) -> ReferralTransitioned:
    status = lifecycle.STATUS[step.state]
    if step.state is ReferralState.CANCELLED and any(
        item.state is ReferralState.SCHEDULED for item in referral.history
    ):
        status = lifecycle.SCHEDULED_EVENT_CANCELLED
    return ReferralTransitioned(
        **_envelope(referral, step, step.transition),
        transition=step.transition,
        detail=step.detail,
        outcome=step.outcome,
        reason_code=step.reason_code,
        appointment_at=step.appointment_at,
        appointment_end=step.appointment_end,
        forwarded_to=step.forwarded_to,
        bser_status=status.bser_code,
    )


def _timer_envelope(referral: Referral, last: HistoryItem, message_id: UUID, due: datetime) -> _Envelope:
    """The envelope of the last step, but from the hub itself, at the moment the deadline passed."""
    return {
        **_envelope(referral, last, "timer"),
        "message_id": message_id,
        "occurred_at": due,
        "sender_clinic": HUB_SENDER,
        "actor": "referrals",
        "correlation_id": referral.request.correlation_id,
        "state": referral.state,
    }


def is_overdue(referral: Referral, now: datetime) -> bool:
    """Still unanswered past its answer deadline."""
    awaiting = referral.state in {ReferralState.REQUESTED, ReferralState.NEEDS_REVIEW}
    return awaiting and referral.due_by is not None and now >= referral.due_by


@dataclass(frozen=True)
class TimerFired:
    """A timer that came due: the referral with its flag set, and the event to announce."""

    referral: Referral
    announcement: Announcement


def due_timer(referral: Referral, now: datetime, sla: SlaPolicy) -> TimerFired | None:
    """The SLA timer due on ``referral`` at ``now``, if any.

    Derived from durable state alone (deadlines and flags in the record), so timers
    survive restarts and a sweep can run on any replica: the flag is set with
    compare-and-set, so only one replica announces.
    """
    seed = f"{referral.referral_id}/{len(referral.history)}"
    last = referral.history[-1]
    parties = (referral.referring_clinic, referral.recipient_clinic)
    if is_overdue(referral, now) and referral.due_by and not referral.overdue_notified:
        overdue = ReferralOverdue(
            **_timer_envelope(referral, last, derived_id(seed, "overdue"), referral.due_by),
            due_by=referral.due_by,
        )
        return TimerFired(
            msgspec.structs.replace(referral, overdue_notified=True),
            Announcement(overdue, "referral.overdue", parties),
        )
    if (
        referral.state is ReferralState.COMPLETED
        and referral.completed_at
        and not referral.close_reminder_sent
        and now >= referral.completed_at + sla.close_within
    ):
        due = referral.completed_at + sla.close_within
        reminder = ReferralCloseReminder(
            **_timer_envelope(referral, last, derived_id(seed, "close-reminder"), due),
            completed_at=referral.completed_at,
        )
        return TimerFired(
            msgspec.structs.replace(referral, close_reminder_sent=True),
            Announcement(reminder, "referral.close_reminder", (referral.referring_clinic,)),
        )
    return None
