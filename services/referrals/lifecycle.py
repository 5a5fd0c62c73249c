"""The referral state machine: who may do what, from which state, to which state.

Modelled on ONC 360X (one referral id throughout, repeatable interim notes, a sender's
cancel after scheduling is only a request the recipient confirms) and on FHIR Task. Each
state maps to an HL7 BSeR business-status code and a FHIR ``Task.status``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from referral_hub.contracts.referrals import (
    ReferralAccept,
    ReferralCancel,
    ReferralCancelConfirm,
    ReferralClose,
    ReferralCommand,
    ReferralComplete,
    ReferralDecline,
    ReferralForward,
    ReferralInterimNote,
    ReferralNoShow,
    ReferralOverride,
    ReferralRequest,
    ReferralSchedule,
    ReferralState,
)


class Party(enum.Enum):
    """The two sides of a referral."""

    SENDER = "sender"
    RECIPIENT = "recipient"


S: Final = frozenset({Party.SENDER})
R: Final = frozenset({Party.RECIPIENT})
EITHER: Final = S | R

TERMINAL: Final = frozenset({ReferralState.DECLINED, ReferralState.CLOSED, ReferralState.CANCELLED})
AFTER_SCHEDULING: Final = frozenset({ReferralState.SCHEDULED, ReferralState.NO_SHOW})
CANCELLABLE: Final = frozenset(
    {
        ReferralState.NEEDS_REVIEW,
        ReferralState.REQUESTED,
        ReferralState.ACCEPTED,
        ReferralState.SCHEDULED,
        ReferralState.NO_SHOW,
        ReferralState.CANCEL_REQUESTED,
    },
)


@dataclass(frozen=True)
class Rule:
    """One row of the transition table; ``to_state`` ``None`` means the state is kept."""

    transition: str
    by: frozenset[Party]
    from_states: frozenset[ReferralState]
    to_state: ReferralState | None


RULES: Final[dict[type[ReferralCommand], Rule]] = {
    ReferralAccept: Rule("accept", R, frozenset({ReferralState.REQUESTED}), ReferralState.ACCEPTED),
    ReferralDecline: Rule(
        "decline", R, frozenset({ReferralState.REQUESTED, ReferralState.NEEDS_REVIEW}), ReferralState.DECLINED
    ),
    ReferralOverride: Rule("override", R, frozenset({ReferralState.NEEDS_REVIEW}), ReferralState.REQUESTED),
    ReferralSchedule: Rule(
        "schedule",
        R,
        frozenset({ReferralState.ACCEPTED, ReferralState.NO_SHOW, ReferralState.SCHEDULED}),
        ReferralState.SCHEDULED,
    ),
    ReferralNoShow: Rule("no_show", R, frozenset({ReferralState.SCHEDULED}), ReferralState.NO_SHOW),
    ReferralComplete: Rule("complete", R, frozenset({ReferralState.SCHEDULED}), ReferralState.COMPLETED),
    ReferralClose: Rule("close", S, frozenset({ReferralState.COMPLETED}), ReferralState.CLOSED),
    ReferralInterimNote: Rule(
        "interim_note",
        R,
        frozenset(
            {ReferralState.ACCEPTED, ReferralState.SCHEDULED, ReferralState.NO_SHOW, ReferralState.CANCEL_REQUESTED}
        ),
        None,
    ),
    ReferralCancel: Rule("cancel", EITHER, CANCELLABLE, ReferralState.CANCELLED),
    ReferralCancelConfirm: Rule(
        "cancel_confirm",
        R,
        frozenset({ReferralState.CANCEL_REQUESTED}),
        ReferralState.CANCELLED,
    ),
    ReferralForward: Rule(
        "forward",
        R,
        frozenset({ReferralState.REQUESTED, ReferralState.ACCEPTED}),
        ReferralState.REQUESTED,
    ),
}
"""Every command but ``request`` (which creates the referral) and what it may do."""

REQUEST_RULE: Final = Rule("request", S, frozenset(), ReferralState.REQUESTED)


def rule_for(command: ReferralCommand) -> Rule:
    """The table row for ``command``."""
    if isinstance(command, ReferralRequest):
        return REQUEST_RULE
    return RULES[type(command)]


def target_state(rule: Rule, party: Party, current: ReferralState) -> ReferralState:
    """Where ``rule`` takes the referral when ``party`` applies it in ``current``.

    A sender's cancel once an appointment exists is only a request (360X handshake),
    and a sender cannot ask twice.
    """
    if rule.transition == "cancel" and party is Party.SENDER and current in AFTER_SCHEDULING:
        return ReferralState.CANCEL_REQUESTED
    return rule.to_state if rule.to_state is not None else current


def permits(rule: Rule, party: Party, current: ReferralState) -> bool:
    """Whether the state allows the rule for this party (party itself checked separately)."""
    if rule.transition == "cancel" and party is Party.SENDER and current is ReferralState.CANCEL_REQUESTED:
        return False
    return current in rule.from_states


@dataclass(frozen=True)
class Status:
    """How a state is expressed in HL7 BSeR and in FHIR R4 Task."""

    bser_code: str
    bser_display: str
    fhir_task_status: str


STATUS: Final[dict[ReferralState, Status]] = {
    ReferralState.REQUESTED: Status("2.0", "Created", "requested"),
    ReferralState.NEEDS_REVIEW: Status("2.0", "Created", "on-hold"),
    ReferralState.ACCEPTED: Status("3.0", "Accepted", "accepted"),
    ReferralState.DECLINED: Status("4.0", "Declined", "rejected"),
    ReferralState.SCHEDULED: Status("5.1.1", "Event Scheduled", "in-progress"),
    ReferralState.NO_SHOW: Status("5.1.2", "Scheduled Event Unattended", "in-progress"),
    ReferralState.COMPLETED: Status("5.1.4", "Event Completed", "completed"),
    ReferralState.CANCEL_REQUESTED: Status("5.2", "Cancellation Requested", "in-progress"),
    ReferralState.CANCELLED: Status("6.0", "Fulfillment Cancelled", "cancelled"),
    ReferralState.CLOSED: Status("7.0", "Fulfillment Completed", "completed"),
}
SCHEDULED_EVENT_CANCELLED: Final = Status("5.1.3", "Scheduled Event Cancelled", "cancelled")
"""Used instead of 6.0 when a referral is cancelled after an appointment was scheduled."""
