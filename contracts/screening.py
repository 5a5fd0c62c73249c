"""Automatic contraindication screening of referrals and treatment plans.

When a new referral or plan update matches a rule of the hub's rule table (or an active
alert on the patient), both sides get ``screening.flagged``. An absolute match holds a
referral in ``needs_review`` until the recipient overrides it (``referral.override``) or
declines it. Either clinic may dispute a match (``screening.dispute``); both are audited.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec

from referral_hub.contracts.alerts import Severity, TriggerKind
from referral_hub.contracts.base import PHI, ClinicalText, ClinicId, Message, Modality, PatientRef, ShortText


class ScreeningMatch(msgspec.Struct, frozen=True, kw_only=True):
    """One contraindication that applies, and why.

    ``rule_id`` names a row of the rule table, or ``alert:<alert_id>`` when the match is a
    clinic's own active alert naming this modality.
    """

    rule_id: ShortText
    severity: Severity
    scope: ShortText = "systemic"
    trigger_kind: TriggerKind
    finding: Annotated[ShortText, PHI]
    rationale: ClinicalText
    source: ShortText
    alert_id: UUID | None = None


class ScreeningFlagged(Message, frozen=True, kw_only=True, tag="screening.flagged"):
    """A referral or plan matched known contraindications; delivered to both sides."""

    flag_id: UUID
    patient_ref: PatientRef
    screened: ShortText
    """``referral`` or ``plan``."""
    referral_id: UUID | None = None
    plan_clinic: ClinicId | None = None
    plan_version: int = 0
    modality: Modality
    techniques: tuple[ShortText, ...] = ()
    matches: tuple[ScreeningMatch, ...]
    highest_severity: Severity
    held: bool = False
    """True when an absolute match holds the referral in ``needs_review``."""
    recipients: tuple[ClinicId, ...] = ()
    event_number: int = 0


class ScreeningDispute(Message, frozen=True, kw_only=True, tag="screening.dispute"):
    """A clinic that received a flag says one of its matches does not apply."""

    flag_id: UUID
    patient_ref: PatientRef
    rule_id: ShortText
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=4000), PHI]


class ScreeningDisputed(Message, frozen=True, kw_only=True, tag="screening.disputed"):
    """Delivered to every clinic that received the flag: who disputed which match, and why."""

    flag_id: UUID
    patient_ref: PatientRef
    rule_id: ShortText
    reason: ClinicalText
    disputed_by: ClinicId
    referral_id: UUID | None = None
    event_number: int = 0
