"""Automatic contraindication screening of referrals and treatment plans.

When a new referral or plan update matches a rule of the hub's rule table (or an active
alert on the patient), both sides get ``screening.flagged``. An absolute match holds a
referral in ``needs_review`` until the recipient overrides it (``referral.override``) or
declines it. Either clinic may dispute a match (``screening.dispute``); both are audited.

Minimum necessary: a referral party that is not on the patient's care team gets the flag
with the matches that came from the team's record replaced by one fact, that the team holds
a contraindication relevant to this modality, and its severity (``audience``
``outside_care_team``, ``care_team_severity``); the care team is told that its record was
screened for a referral involving a clinic outside the team (``audience`` ``care_team``) and
answers the hold itself, with an override or a decline that the parties see.
"""

from __future__ import annotations

import enum
from typing import Annotated
from uuid import UUID

import msgspec

from referral_hub.contracts.alerts import Severity, TriggerKind
from referral_hub.contracts.base import PHI, ClinicalText, ClinicId, Message, Modality, PatientRef, ShortText


class FlagAudience(enum.StrEnum):
    """Who a copy of a screening flag is for, and so how much of it that copy says."""

    PARTIES = "parties"
    """The whole flag: the referral's parties, or the care team for a plan."""
    OUTSIDE_CARE_TEAM = "outside_care_team"
    """A referral party that is not on the patient's care team: the team's matches, minimally."""
    CARE_TEAM = "care_team"
    """The care team, told that a referral involving an outside clinic was screened against its record."""


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
    contact_clinics: tuple[ClinicId, ...] = ()
    """Care-team clinics to ask about this match: the alert's raiser, or the team whose shared
    record held the finding. Empty when the match came from the screened referral itself."""


class ScreeningFlagged(Message, frozen=True, kw_only=True, tag="screening.flagged"):
    """A referral or plan matched known contraindications; delivered to both sides.

    Each clinic gets the copy it may see (``audience``): a referral party off the patient's
    care team gets the team's matches minimally, and the team is told.
    """

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
    audience: FlagAudience = FlagAudience.PARTIES
    """Who this copy is for, and so how much it says:

    - ``parties``: the whole flag, for the referral's parties (or, for a plan, the care team);
    - ``outside_care_team``: a referral party that is not on the patient's care team. Matches
      that came from the team's record are left out; ``care_team_severity`` says that the team
      holds a contraindication relevant to this modality, and how severe. No rule id, alert id,
      clinic of the team or word of its record: each would tell an outsider what the patient
      has or who treats them;
    - ``care_team``: tells the care team that a referral between ``referring_clinic`` and
      ``recipient_clinic``, one of them outside the team, was screened against its record, and
      which rules matched (no finding, no free text of the referral).
    """
    referring_clinic: ClinicId | None = None
    recipient_clinic: ClinicId | None = None
    care_team: tuple[ClinicId, ...] = ()
    """The clinics on the patient's care team when it was screened; empty in an ``outside_care_team`` copy."""
    care_team_severity: Severity | None = None
    """In an ``outside_care_team`` copy, the highest severity among the matches that came from the
    care team's record (which the copy leaves out); ``None`` when none did, and in other copies."""


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
