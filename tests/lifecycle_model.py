"""A reference model of the referral lifecycle, written independently of the hub's table,
and builders for commands; shared by the pure and the real-server property tests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import UUID

from referral_hub.client import new_id, utc_now
from referral_hub.contracts.referrals import (
    ConsultNote,
    ReferralAccept,
    ReferralCancel,
    ReferralCancelConfirm,
    ReferralClose,
    ReferralCommand,
    ReferralComplete,
    ReferralDecline,
    ReferralInterimNote,
    ReferralNoShow,
    ReferralOverride,
    ReferralSchedule,
)

OPEN = ["needs_review", "requested", "accepted", "scheduled", "no_show", "cancel_requested"]
MODEL: dict[tuple[str, str], dict[str, str]] = {
    ("accept", "R"): {"requested": "accepted"},
    ("decline", "R"): {"requested": "declined", "needs_review": "declined"},
    ("override", "R"): {"needs_review": "requested"},
    ("schedule", "R"): {"accepted": "scheduled", "no_show": "scheduled", "scheduled": "scheduled"},
    ("no_show", "R"): {"scheduled": "no_show"},
    ("complete", "R"): {"scheduled": "completed"},
    ("close", "S"): {"completed": "closed"},
    ("interim_note", "R"): {s: s for s in ["accepted", "scheduled", "no_show", "cancel_requested"]},
    ("cancel", "R"): dict.fromkeys(OPEN, "cancelled"),
    ("cancel", "S"): {
        "needs_review": "cancelled",
        "requested": "cancelled",
        "accepted": "cancelled",
        "scheduled": "cancel_requested",
        "no_show": "cancel_requested",
    },
    ("cancel_confirm", "R"): {"cancel_requested": "cancelled"},
}
TRANSITIONS = sorted({transition for transition, _ in MODEL})
TERMINAL = {"declined", "closed", "cancelled"}
MEMBERS = {
    "harbor-pt": "ben.okafor",
    "lotus-acu": "raj.patel",
    "kneadwell-massage": "sam.lee",
    "summit-chiro": "tom.nguyen",
}


def model_step(state: str, transition: str, party: str) -> str | None:
    """The next state, or None if the model refuses."""
    return MODEL.get((transition, party), {}).get(state)


def command(transition: str, clinic: str, referral_id: UUID, patient_ref: str = "pt-0001") -> ReferralCommand:
    """A well-formed command of ``transition`` from ``clinic``."""
    common = {
        "message_id": new_id(),
        "occurred_at": utc_now(),
        "sender_clinic": clinic,
        "actor": MEMBERS[clinic],
        "correlation_id": new_id(),
        "referral_id": referral_id,
        "patient_ref": patient_ref,
    }
    builders = {
        "accept": lambda: ReferralAccept(**common),
        "decline": lambda: ReferralDecline(**common, reason_code="capacity", reason_text="No openings this month"),
        "schedule": lambda: ReferralSchedule(**common, appointment_at=datetime(2026, 12, 1, 15, tzinfo=UTC)),
        "no_show": lambda: ReferralNoShow(**common),
        "complete": lambda: ReferralComplete(
            **common,
            outcome=ConsultNote(
                visits=6, techniques=("dry needling",), response="Headache days halved", recommendations="Continue PT"
            ),
        ),
        "close": lambda: ReferralClose(**common),
        "interim_note": lambda: ReferralInterimNote(**common, note="Visit 2: tolerating treatment well"),
        "cancel": lambda: ReferralCancel(**common, reason_code="patient-request", reason_text="Moved away"),
        "cancel_confirm": lambda: ReferralCancelConfirm(**common),
        "override": lambda: ReferralOverride(**common, reason="Prescriber confirmed light needling is safe"),
    }
    return builders[transition]()  # type: ignore[no-untyped-call]


TODAY = date(2026, 11, 25)
