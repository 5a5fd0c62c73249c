"""Treatment-plan changes, fanned out to every clinic on a patient's care team."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import msgspec

from referral_hub.contracts.base import ClinicalText, ClinicId, Message, Modality, PatientRef, ShortText, UtcDatetime


class PlanUpdate(Message, frozen=True, kw_only=True, tag="plan.update"):
    """A care-team clinic publishes a new version of its plan for the patient.

    ``plan_version`` is optimistic concurrency: the hub rejects a version that is not the
    successor of the one it holds, and names the current one in the rejection.
    """

    patient_ref: PatientRef
    modality: Modality
    plan_version: Annotated[int, msgspec.Meta(ge=1)]
    goals: tuple[ClinicalText, ...] = ()
    frequency: ShortText = ""
    techniques: tuple[ShortText, ...] = ()
    precautions: tuple[ClinicalText, ...] = ()
    effective_date: date


class CareTeamLeave(Message, frozen=True, kw_only=True, tag="careteam.leave"):
    """A clinic leaves a patient's care team, which ends its plan."""

    patient_ref: PatientRef
    reason: ClinicalText = ""


class CareTeamChanged(Message, frozen=True, kw_only=True, tag="careteam.changed"):
    """Delivered to the care team when a clinic joins or leaves it.

    A clinic joining a team that already has members is also sent one ``joined`` per
    existing member (only to itself), so it learns the whole team, not only who joined with it.
    """

    patient_ref: PatientRef
    clinic: ClinicId
    change: ShortText
    """``joined`` or ``left``."""
    modality: Modality
    event_number: int = 0
    since: UtcDatetime | None = None
    """For ``joined``: when ``clinic`` joined the team (earlier than ``occurred_at`` for an
    existing member announced to a newcomer). ``None`` on ``left`` and in older events."""


class PlanUpdated(Message, frozen=True, kw_only=True, tag="plan.updated"):
    """A member clinic's current plan, delivered to every active care-team clinic.

    The plan's author gets it too, in its own inbox with its own event number: that copy
    confirms the hub stored the version (its ``causation_id`` is the ``plan.update``), as a
    ``rejection`` would refuse it. A clinic joining the team is sent each existing member's
    current plan the same way, under a message id of its own.
    """

    patient_ref: PatientRef
    plan_clinic: ClinicId
    modality: Modality
    plan_version: int
    goals: tuple[ClinicalText, ...] = ()
    frequency: ShortText = ""
    techniques: tuple[ShortText, ...] = ()
    precautions: tuple[ClinicalText, ...] = ()
    effective_date: date
    event_number: int = 0
