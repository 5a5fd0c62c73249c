"""Care plans, care teams, alerts and screening flags as FHIR R4: the gateway's pure rules for them.

No I/O here. Everything a clinic reads is folded from its own inbox (:class:`CareRecords`),
so it sees exactly what the hub delivered to it, and nothing the hub kept from it:

- ``careteam.changed`` (joined, left) gives the members the clinic was told about, with
  their modality and since-date (``since``: a clinic joining a team is told each existing
  member's original join time); ``alert.raised`` (its recipients) and ``screening.flagged``
  (the care team when screened) name members too, without a since-date;
- ``plan.updated`` gives every member's current plan, the clinic's own included (the hub
  confirms a plan to its author with it, and sends a joining clinic the plans already there);
- ``alert.raised``, ``alert.acknowledged`` and ``alert.resolved`` give the alerts (Flag);
- ``screening.flagged``, ``screening.disputed`` and a referral's ``override`` step give the
  screening matches (DetectedIssue).

A clinic that is not an active member of a patient's care team (as its inbox last said) is
shown none of that patient's care resources: it gets 404, exactly as for a patient unknown.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from referral_hub.contracts.alerts import (
    AlertAck,
    AlertAcknowledged,
    AlertRaise,
    AlertRaised,
    AlertResolve,
    AlertResolved,
    Severity,
    TriggerKind,
)
from referral_hub.contracts.base import Modality
from referral_hub.contracts.codec import HubMessage
from referral_hub.contracts.plans import CareTeamChanged, PlanUpdate, PlanUpdated
from referral_hub.contracts.referrals import ReferralTransitioned
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.contracts.screening import FlagAudience, ScreeningDisputed, ScreeningFlagged
from referral_hub.gateway.outcomes import FhirError, GatewayCode, convert, from_rejection, schema
from referral_hub.gateway.task_commands import MODALITY_SYSTEM, Envelope
from referral_hub.referrals import fhir_task as referral_fhir

CARE_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-hub:gateway:care")
SEVERITY_SYSTEM: Final = "urn:referral-hub:alert-severity"
SEVERITY_EXTENSION: Final = "urn:referral-hub:StructureDefinition/alert-severity"
ACK_EXTENSION: Final = "urn:referral-hub:StructureDefinition/alert-acknowledgement"
FREQUENCY_EXTENSION: Final = "urn:referral-hub:StructureDefinition/plan-frequency"
TRIGGER_SYSTEM: Final = "urn:referral-hub:alert-trigger-kind"
RULE_SYSTEM: Final = "urn:referral-hub:screening-rule"
MEMBER_SYSTEM: Final = "urn:referral-hub:member"
CLINIC_SYSTEM: Final = referral_fhir.CLINIC_SYSTEM
AUDIENCE_EXTENSION: Final = "urn:referral-hub:StructureDefinition/screening-audience"
SEVERITY_WORDS: Final[Mapping[Severity, str]] = {
    Severity.ABSOLUTE: "absolute: stops treatment",
    Severity.RELATIVE: "relative: modifies treatment",
    Severity.LOCAL: "local: avoid the named site",
    Severity.CAUTION: "caution: for information",
}
ISSUE_SEVERITY: Final[Mapping[Severity, str]] = {
    Severity.ABSOLUTE: "high",
    Severity.RELATIVE: "moderate",
    Severity.LOCAL: "moderate",
    Severity.CAUTION: "low",
}
"""DetectedIssue.severity has three codes; the hub's four severities map onto them (the word stays in the text)."""


def resource_id(kind: str, *parts: str) -> str:
    """A stable id for a care resource: the same for every clinic and every version."""
    return str(uuid.uuid5(CARE_NAMESPACE, "/".join((kind, *parts))))


def _patient(patient_ref: str) -> dict[str, Any]:
    return {"type": "Patient", "identifier": {"system": referral_fhir.PATIENT_REF_SYSTEM, "value": patient_ref}}


def _clinic(clinic: str, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    reference: dict[str, Any] = {
        "type": "Organization",
        "identifier": {"system": referral_fhir.CLINIC_SYSTEM, "value": clinic},
    }
    reference["display"] = (names or {}).get(clinic, clinic)
    return reference


def _modality(modality: Modality) -> dict[str, Any]:
    return {"coding": [{"system": MODALITY_SYSTEM, "code": str(modality)}], "text": str(modality)}


# --- The clinic's care records, folded from its inbox -------------------------------------------


@dataclass
class MemberView:
    """One clinic on a patient's care team, as far as this clinic was told."""

    clinic: str
    modality: Modality | None = None
    since: datetime | None = None
    active: bool = True
    left_at: datetime | None = None


@dataclass
class AlertView:
    """One alert: its raise, its acknowledgements, and its resolution."""

    raised: AlertRaised
    acks: list[AlertAcknowledged] = field(default_factory=list)
    resolved: AlertResolved | None = None


@dataclass
class IssueView:
    """One screening flag as this clinic's copy tells it, with its disputes."""

    flag: ScreeningFlagged
    disputes: list[ScreeningDisputed] = field(default_factory=list)


@dataclass
class CareRecords:
    """Every care-team fact in one clinic's inbox."""

    clinic: str
    teams: dict[str, dict[str, MemberView]] = field(default_factory=dict)
    plans: dict[tuple[str, str], PlanUpdated] = field(default_factory=dict)
    alerts: dict[uuid.UUID, AlertView] = field(default_factory=dict)
    issues: dict[uuid.UUID, IssueView] = field(default_factory=dict)
    overrides: dict[uuid.UUID, ReferralTransitioned] = field(default_factory=dict)

    def apply(self, message: HubMessage) -> None:
        """Fold one inbox message in; anything else leaves the records as they were."""
        if isinstance(message, CareTeamChanged):
            self._team_changed(message)
        elif isinstance(message, PlanUpdated):
            self.plans[(message.patient_ref, message.plan_clinic)] = message
            self._seen(message.patient_ref, (message.plan_clinic,))
        elif isinstance(message, AlertRaised):
            self.alerts.setdefault(message.alert_id, AlertView(message))
            self._seen(message.patient_ref, (*message.recipients, message.raised_by))
        elif isinstance(message, AlertAcknowledged) and message.alert_id in self.alerts:
            self.alerts[message.alert_id].acks.append(message)
        elif isinstance(message, AlertResolved) and message.alert_id in self.alerts:
            self.alerts[message.alert_id].resolved = message
        elif isinstance(message, ScreeningFlagged):
            self.issues.setdefault(message.flag_id, IssueView(message))
            self._seen(message.patient_ref, message.care_team)
        elif isinstance(message, ScreeningDisputed) and message.flag_id in self.issues:
            self.issues[message.flag_id].disputes.append(message)
        elif isinstance(message, ReferralTransitioned) and message.transition == "override":
            self.overrides[message.referral_id] = message

    def _team_changed(self, event: CareTeamChanged) -> None:
        team = self.teams.setdefault(event.patient_ref, {})
        if event.change == "joined":
            team[event.clinic] = MemberView(event.clinic, event.modality, event.since or event.occurred_at)
            return
        member = team.setdefault(event.clinic, MemberView(event.clinic, event.modality))
        member.active = False
        member.left_at = event.occurred_at
        if event.clinic == self.clinic:
            # Off the team: what it was told about the patient is no longer its to read.
            self.plans = {key: plan for key, plan in self.plans.items() if key[0] != event.patient_ref}
        else:
            self.plans.pop((event.patient_ref, event.clinic), None)

    def _seen(self, patient_ref: str, clinics: Iterable[str]) -> None:
        """Clinics named as members by a message other than a membership change: on the team, since unknown."""
        team = self.teams.setdefault(patient_ref, {})
        for clinic in clinics:
            if clinic not in team:
                team[clinic] = MemberView(clinic)

    def on_team(self, patient_ref: str) -> bool:
        """Whether this clinic's inbox last said it is an active member of the patient's care team."""
        member = self.teams.get(patient_ref, {}).get(self.clinic)
        return member is not None and member.active and member.since is not None

    def team_patients(self) -> list[str]:
        """The patients whose care team this clinic is on."""
        return sorted(p for p in self.teams if self.on_team(p))


# --- Search parameters -------------------------------------------------------------------------


def patient_parameter(parameters: Mapping[str, Sequence[str]], allowed: frozenset[str]) -> str | None:
    """The ``patient`` (or ``subject``) search value, a patient ref; unknown parameters are refused."""
    unknown = set(parameters) - allowed
    if unknown:
        raise FhirError(400, GatewayCode.UNSUPPORTED, f"unsupported search parameters: {', '.join(sorted(unknown))}")
    values = [*parameters.get("patient", ()), *parameters.get("subject", ())]
    if not values:
        return None
    return values[0].rpartition("|")[2].rpartition("/")[2]


# --- CareTeam ------------------------------------------------------------------------------------


def care_team_resource(
    records: CareRecords, patient_ref: str, names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The patient's care team as this clinic's inbox tells it: each clinic, its modality and since-date."""
    participants = []
    for member in sorted(records.teams.get(patient_ref, {}).values(), key=lambda m: m.clinic):
        participant: dict[str, Any] = {"member": _clinic(member.clinic, names)}
        if member.modality is not None:
            participant["role"] = [_modality(member.modality)]
        period = {
            key: moment.isoformat()
            for key, moment in (("start", member.since), ("end", member.left_at))
            if moment is not None
        }
        if period:
            participant["period"] = period
        participants.append(participant)
    return {
        "resourceType": "CareTeam",
        "id": resource_id("CareTeam", patient_ref),
        "status": "active",
        "subject": _patient(patient_ref),
        "participant": participants,
    }


# --- CarePlan ------------------------------------------------------------------------------------


def care_plan_id(patient_ref: str, clinic: str) -> str:
    """One id per clinic's plan for a patient, whatever its version."""
    return resource_id("CarePlan", patient_ref, clinic)


def care_plan_resource(
    plan: PlanUpdate | PlanUpdated, clinic: str, names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A clinic's plan: goals as contained Goals, techniques as activities, precautions as notes."""
    goals = [
        {
            "resourceType": "Goal",
            "id": f"goal{number}",
            "lifecycleStatus": "active",
            "description": {"text": goal},
            "subject": _patient(plan.patient_ref),
        }
        for number, goal in enumerate(plan.goals, 1)
    ]
    resource: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": care_plan_id(plan.patient_ref, clinic),
        "meta": {"versionId": str(plan.plan_version)},
        "status": "active",
        "intent": "plan",
        "category": [_modality(plan.modality)],
        "subject": _patient(plan.patient_ref),
        "period": {"start": plan.effective_date.isoformat()},
        "author": _clinic(clinic, names),
    }
    if goals:
        resource["contained"] = goals
        resource["goal"] = [{"reference": f"#{goal['id']}"} for goal in goals]
    if plan.techniques:
        resource["activity"] = [
            {"detail": {"status": "in-progress", "code": {"text": technique}}} for technique in plan.techniques
        ]
    if plan.precautions:
        resource["note"] = [{"text": precaution} for precaution in plan.precautions]
    if plan.frequency:
        resource["extension"] = [{"url": FREQUENCY_EXTENSION, "valueString": plan.frequency}]
    return resource


def _patient_of(resource: Mapping[str, Any], element: str) -> str:
    subject = resource.get(element)
    identifier = subject.get("identifier") if isinstance(subject, dict) else None
    value = identifier.get("value") if isinstance(identifier, dict) else None
    if not isinstance(value, str) or not value:
        msg = f"{element}.identifier.value must be the patient ref ({referral_fhir.PATIENT_REF_SYSTEM})"
        raise schema(msg)
    return value


def _codes(concepts: Any, system: str) -> list[str]:  # noqa: ANN401 - FHIR JSON
    found: list[str] = []
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        found.extend(str(c.get("code")) for c in codings or [] if isinstance(c, dict) and c.get("system") == system)
    return found


def _texts(items: Any, *path: str) -> tuple[str, ...]:  # noqa: ANN401 - FHIR JSON
    found = []
    for item in items if isinstance(items, list) else []:
        value = item
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            found.append(value)
    return tuple(found)


def _extension(resource: Mapping[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def plan_update(envelope: Envelope, resource: Mapping[str, Any], version: int) -> PlanUpdate:
    """The hub's ``plan.update`` for a CarePlan: version ``version`` of the clinic's plan."""
    if resource.get("resourceType") != "CarePlan":
        msg = "the resource must be a CarePlan"
        raise schema(msg)
    modalities = _codes(resource.get("category"), MODALITY_SYSTEM)
    if len(modalities) != 1:
        msg = f"CarePlan.category needs exactly one coding of {MODALITY_SYSTEM}"
        raise schema(msg)
    contained = {c.get("id"): c for c in resource.get("contained") or [] if isinstance(c, dict)}
    goals = [
        contained.get(str(g.get("reference", "")).removeprefix("#"), {}).get("description", {}).get("text")
        for g in resource.get("goal") or []
        if isinstance(g, dict)
    ]
    frequency = next((str(e.get("valueString", "")) for e in _extension(resource, FREQUENCY_EXTENSION)), "")
    start = (resource.get("period") or {}).get("start") if isinstance(resource.get("period"), dict) else None
    fields = {
        "message_id": uuid.uuid4(),
        "occurred_at": envelope.now,
        "sender_clinic": envelope.clinic,
        "actor": envelope.actor,
        "correlation_id": uuid.uuid4(),
        "patient_ref": _patient_of(resource, "subject"),
        "modality": modalities[0],
        "plan_version": version,
        "goals": tuple(g for g in goals if isinstance(g, str) and g),
        "frequency": frequency,
        "techniques": _texts(resource.get("activity"), "detail", "code", "text"),
        "precautions": _texts(resource.get("note"), "text"),
        "effective_date": str(start)[:10] if start else envelope.now.date().isoformat(),
    }
    return convert(fields, PlanUpdate)


def if_match_version(header: str | None) -> int:
    """The plan version ``If-Match`` names; a CarePlan update must name the one it replaces."""
    if header is None:
        raise FhirError(
            428, GatewayCode.STALE_VERSION, 'updating a CarePlan needs If-Match: W/"<version>" of the plan it replaces'
        )
    text = header.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise FhirError(400, GatewayCode.STALE_VERSION, f"If-Match {header!r} names no plan version")
    return int(text)


PLAN_RETRY_AFTER_SECONDS: Final = 5
"""What a 503 for an unconfirmed plan tells the client to wait before it reads the plan and retries."""


def plan_confirmation(answer: HubMessage | None, within: float) -> PlanUpdated:
    """The plan as the hub stored it, from its answer to the author; anything else is refused.

    The hub answers a ``plan.update`` with the team's ``plan.updated`` (stored) or a
    ``rejection`` (not). No answer within ``within`` seconds is 503: the update may still be
    stored or refused later, so success is never assumed; reading the plan back, then
    retrying with the version it shows, is safe (a repeat of a stored version is 412).
    """
    if answer is None:
        msg = (
            f"the hub did not confirm the plan within {within:g}s; nothing is known to have changed: "
            "read the CarePlan, then retry"
        )
        raise FhirError(503, GatewayCode.HUB_UNAVAILABLE, msg, {"Retry-After": str(PLAN_RETRY_AFTER_SECONDS)})
    if isinstance(answer, Rejection):
        raise from_rejection(answer)
    if not isinstance(answer, PlanUpdated):
        raise FhirError(500, RejectionCode.PROCESSING_FAILED, "the hub answered with an unexpected message")
    return answer


def plans_of(records: CareRecords, patient_ref: str | None) -> list[PlanUpdated]:
    """The members' current plans (its own too) this clinic may read, for one patient or all."""
    return [
        plan
        for (patient, _), plan in sorted(records.plans.items())
        if (patient_ref is None or patient == patient_ref) and records.on_team(patient)
    ]


# --- Flag: clinic-raised contraindication alerts ---------------------------------------------------


def _severity_extension(severity: Severity) -> dict[str, Any]:
    return {
        "url": SEVERITY_EXTENSION,
        "valueCodeableConcept": {
            "coding": [{"system": SEVERITY_SYSTEM, "code": str(severity), "display": SEVERITY_WORDS[severity]}],
            "text": SEVERITY_WORDS[severity],
        },
    }


def flag_resource(view: AlertView, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An alert as a Flag: ``active`` until resolved or past its validity, then ``inactive``."""
    raised = view.raised
    start = raised.valid_from or raised.raised_at or raised.occurred_at
    end = view.resolved.occurred_at if view.resolved is not None else raised.valid_until
    version = 1 + len(view.acks) + (1 if view.resolved is not None else 0)
    acks = [
        {
            "url": ACK_EXTENSION,
            "extension": [
                {"url": "member", "valueIdentifier": {"system": MEMBER_SYSTEM, "value": ack.member}},
                {
                    "url": "clinic",
                    "valueIdentifier": {"system": referral_fhir.CLINIC_SYSTEM, "value": ack.member_clinic},
                },
                {"url": "at", "valueDateTime": ack.occurred_at.isoformat()},
            ],
        }
        for ack in view.acks
    ]
    text = raised.trigger + (f" ({raised.body_site})" if raised.body_site else "")
    resource: dict[str, Any] = {
        "resourceType": "Flag",
        "id": str(raised.alert_id),
        "meta": {"versionId": str(version)},
        "identifier": [{"system": "urn:referral-hub:alert-id", "value": str(raised.alert_id)}],
        "extension": [_severity_extension(raised.severity), *acks],
        "status": "inactive" if view.resolved is not None else "active",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                        "code": "clinical",
                        "display": "Clinical",
                    }
                ]
            },
            *(_modality(m) for m in raised.modalities),
        ],
        "code": {"coding": [{"system": TRIGGER_SYSTEM, "code": str(raised.trigger_kind)}], "text": text},
        "subject": _patient(raised.patient_ref),
        "period": {"start": start.isoformat(), **({"end": end.isoformat()} if end is not None else {})},
        "author": _clinic(raised.raised_by, names),
    }
    return resource


def alert_raise(envelope: Envelope, resource: Mapping[str, Any]) -> AlertRaise:
    """The hub's ``alert.raise`` for a new Flag."""
    if resource.get("resourceType") != "Flag":
        msg = "the resource must be a Flag"
        raise schema(msg)
    code = resource.get("code") if isinstance(resource.get("code"), dict) else {}
    trigger = code.get("text") if isinstance(code, dict) else None
    if not isinstance(trigger, str) or not trigger:
        msg = "Flag.code.text must name what the alert is about"
        raise schema(msg)
    severities = [
        c
        for e in _extension(resource, SEVERITY_EXTENSION)
        for c in _codes(e.get("valueCodeableConcept"), SEVERITY_SYSTEM)
    ]
    if len(severities) != 1:
        msg = f"the {SEVERITY_EXTENSION} extension must give one severity: absolute, relative, local or caution"
        raise schema(msg)
    period = resource.get("period") if isinstance(resource.get("period"), dict) else {}
    fields = {
        "message_id": uuid.uuid4(),
        "occurred_at": envelope.now,
        "sender_clinic": envelope.clinic,
        "actor": envelope.actor,
        "correlation_id": uuid.uuid4(),
        "alert_id": uuid.uuid4(),
        "patient_ref": _patient_of(resource, "subject"),
        "trigger_kind": (_codes(code, TRIGGER_SYSTEM) or [str(TriggerKind.CONDITION)])[0],
        "trigger": trigger,
        "modalities": tuple(_codes(resource.get("category"), MODALITY_SYSTEM)),
        "severity": severities[0],
        "valid_until": (period or {}).get("end"),
        "note": " ".join(_texts(resource.get("note"), "text")),
    }
    return convert(fields, AlertRaise)


def alert_change(envelope: Envelope, view: AlertView, wanted: Mapping[str, Any]) -> AlertAck | AlertResolve:
    """What a changed Flag asks: ``status`` ``inactive`` resolves; a new acknowledgement extension acknowledges.

    An acknowledgement names its member (``member`` sub-extension); without one, the
    clinic's registered system user is the member.
    """
    if wanted.get("resourceType") != "Flag":
        msg = "the resource must be a Flag"
        raise schema(msg)
    raised = view.raised
    base = {
        "message_id": uuid.uuid4(),
        "occurred_at": envelope.now,
        "sender_clinic": envelope.clinic,
        "actor": envelope.actor,
        "correlation_id": raised.correlation_id,
        "alert_id": raised.alert_id,
        "patient_ref": raised.patient_ref,
    }
    if wanted.get("status") == "inactive" and view.resolved is None:
        reason = " ".join(_texts(wanted.get("note"), "text"))
        return convert({**base, "reason": reason}, AlertResolve)
    known = {(a.member, a.member_clinic) for a in view.acks}
    for ack in _extension(wanted, ACK_EXTENSION):
        parts = {e.get("url"): e for e in ack.get("extension") or [] if isinstance(e, dict)}
        member = (parts.get("member") or {}).get("valueIdentifier", {}).get("value") or envelope.actor
        clinic = (parts.get("clinic") or {}).get("valueIdentifier", {}).get("value") or envelope.clinic
        if clinic == envelope.clinic and (member, clinic) not in known:
            return convert({**base, "actor": member, "member": member}, AlertAck)
    raise FhirError(
        422, GatewayCode.UNSUPPORTED, "the Flag asks for no change: set status inactive, or add an acknowledgement"
    )


def alerts_of(records: CareRecords, patient_ref: str | None) -> list[AlertView]:
    """The alerts this clinic may read, for one patient or all, oldest first."""
    return [
        view
        for view in records.alerts.values()
        if (patient_ref is None or view.raised.patient_ref == patient_ref) and records.on_team(view.raised.patient_ref)
    ]


# --- DetectedIssue: screening matches ----------------------------------------------------------


def detected_issue_resource(
    view: IssueView, override: ReferralTransitioned | None, names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A screening flag (this clinic's copy) as a DetectedIssue; an override and disputes are mitigations."""
    flag = view.flag
    evidence = [
        {
            "code": [
                {
                    "coding": [{"system": RULE_SYSTEM, "code": match.rule_id}],
                    "text": f"{match.severity}: {match.finding or match.rule_id} (source: {match.source})",
                }
            ]
        }
        for match in flag.matches
    ]
    rationale = "; ".join(m.rationale for m in flag.matches if m.rationale)
    if flag.care_team_severity is not None:
        team = (
            f"the patient's care team holds a contraindication relevant to {flag.modality} ({flag.care_team_severity})"
        )
        rationale = "; ".join(filter(None, (rationale, team)))
    words = SEVERITY_WORDS[flag.highest_severity]
    mitigations = [
        {
            "action": {"text": f"disputed match {d.rule_id}: {d.reason}"},
            "date": d.occurred_at.isoformat(),
            "author": _clinic(d.disputed_by, names),
        }
        for d in view.disputes
    ]
    if override is not None:
        mitigations.append(
            {
                "action": {"text": f"override: {override.detail}" if override.detail else "override"},
                "date": override.occurred_at.isoformat(),
                "author": _clinic(override.sender_clinic, names),
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": str(flag.flag_id),
        "identifier": [{"system": "urn:referral-hub:screening-flag-id", "value": str(flag.flag_id)}],
        "status": "final",
        "code": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "CONTRAINDALG" if flag.held else "DRG",
                }
            ],
            "text": f"contraindication screening of a {flag.screened} for {flag.modality}: {words}",
        },
        "severity": ISSUE_SEVERITY[flag.highest_severity],
        "patient": _patient(flag.patient_ref),
        "identifiedDateTime": flag.occurred_at.isoformat(),
        "author": {"type": "Device", "display": "referral-hub screening"},
        "evidence": evidence,
        "detail": rationale or words,
    }
    if flag.referral_id is not None:
        task_id = uuid.uuid5(referral_fhir.RESOURCE_NAMESPACE, f"Task/{flag.referral_id}")
        resource["implicated"] = [{"reference": f"Task/{task_id}"}]
    if mitigations:
        resource["mitigation"] = mitigations
    if flag.audience is not FlagAudience.PARTIES:
        resource["extension"] = [
            {"url": "urn:referral-hub:StructureDefinition/screening-audience", "valueCode": str(flag.audience)}
        ]
    return resource


def issues_of(records: CareRecords, patient_ref: str | None) -> list[IssueView]:
    """Every screening flag copy in this clinic's inbox, for one patient or all."""
    return [v for v in records.issues.values() if patient_ref is None or v.flag.patient_ref == patient_ref]
