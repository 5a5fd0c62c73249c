"""Treatment-plan changes, fanned out to every clinic on a patient's care team."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import msgspec

from referral_hub.contracts.base import ClinicalText, ClinicId, Message, Modality, PatientRef, ShortText


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
    """Delivered to the care team when a clinic joins or leaves it."""

    patient_ref: PatientRef
    clinic: ClinicId
    change: ShortText
    """``joined`` or ``left``."""
    modality: Modality
    event_number: int = 0


class PlanUpdated(Message, frozen=True, kw_only=True, tag="plan.updated"):
    """Delivered to the other care-team clinics."""

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
