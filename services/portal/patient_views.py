"""What a patient page shows: the care team, plans by version, alerts, screening matches and open pages. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from referral_hub.client import InboxItem
from referral_hub.contracts.alerts import SEVERITY_RANK, AlertAcknowledged, AlertRaised, AlertResolved, Severity
from referral_hub.contracts.paging import PageAcknowledged
from referral_hub.contracts.plans import CareTeamChanged, PlanUpdated
from referral_hub.contracts.referrals import (
    ReferralEvent,
)
from referral_hub.contracts.screening import ScreeningDisputed, ScreeningFlagged
from referral_hub.notifications.domain import PAGING_SEVERITIES
from referral_hub.notifications.page_rules import page_id_for
from referral_hub.portal.domain import STATE_WORDS, local_time
from referral_hub.portal.referral_views import dispute_words

# --- Patient, alerts and pages ----------------------------------------------------------------


@dataclass
class AlertView:
    """One alert on a patient, with who acknowledged it."""

    alert_id: str
    severity: str
    trigger: str
    raised_by: str
    raised_at: str
    note: str
    acknowledged: list[str] = field(default_factory=list)
    resolved: bool = False
    acknowledged_by_me: bool = False
    """This member acknowledged it: the page offers Acknowledge no more."""
    ours: bool = False
    """This clinic raised it: only the raising clinic may resolve an alert (the hub refuses anyone else)."""


@dataclass(frozen=True)
class TeamMemberView:
    """One clinic on the patient's care team, as the care-team changes in this inbox tell it."""

    clinic: str
    modality: str
    since: str
    left: str = ""


@dataclass(frozen=True)
class PlanVersionView:
    """One version of a care-team clinic's treatment plan."""

    version: int
    modality: str
    effective: str
    goals: tuple[str, ...]
    frequency: str
    techniques: tuple[str, ...]
    precautions: tuple[str, ...]
    sent: str
    by: str


@dataclass(frozen=True)
class PlanHistory:
    """A clinic's plan for the patient: the newest version first, then the older ones."""

    clinic: str
    versions: list[PlanVersionView]


@dataclass(frozen=True)
class PatientView:
    """The patient page: what this clinic's inbox holds about the patient.

    The care team and plans come from ``careteam.changed`` and ``plan.updated``, as the hub
    delivered them to this clinic: a clinic joining a team is told of every member already
    there (with the time it joined, ``since``) and sent their current plans, and every plan
    reaches its author too. So the page shows the whole team and every member's plan.
    """

    patient_ref: str
    referrals: list[tuple[str, str, str]]
    alerts: list[AlertView]
    team: list[TeamMemberView] = field(default_factory=list)
    plans: list[PlanHistory] = field(default_factory=list)
    flags: list[ScreeningFlagged] = field(default_factory=list)
    disputes: list[str] = field(default_factory=list)
    own_modality: str = ""
    """This clinic's modality on the team; empty when the inbox does not show it on the team."""
    next_plan_version: int = 1
    """The version this clinic's next plan takes: its newest stored version plus one (the hub checks it)."""

    @property
    def on_team(self) -> bool:
        """Whether this clinic's inbox shows it on the patient's care team now."""
        return bool(self.own_modality)


def _team(changes: Iterable[CareTeamChanged], zone: str) -> list[TeamMemberView]:
    members: dict[str, TeamMemberView] = {}
    for change in changes:
        when = local_time(change.occurred_at, zone)
        if change.change == "joined":
            since = local_time(change.since, zone) if change.since is not None else when
            members[change.clinic] = TeamMemberView(change.clinic, change.modality.value, since)
        elif change.change == "left" and change.clinic in members:
            members[change.clinic] = dataclasses.replace(members[change.clinic], left=when)
    return list(members.values())


def _plans(updates: Iterable[PlanUpdated], zone: str) -> list[PlanHistory]:
    by_clinic: dict[str, dict[int, PlanVersionView]] = {}
    for update in updates:
        by_clinic.setdefault(update.plan_clinic, {})[update.plan_version] = PlanVersionView(
            version=update.plan_version,
            modality=update.modality.value,
            effective=update.effective_date.isoformat(),
            goals=update.goals,
            frequency=update.frequency,
            techniques=update.techniques,
            precautions=update.precautions,
            sent=local_time(update.occurred_at, zone),
            by=update.actor,
        )
    return [
        PlanHistory(clinic, sorted(versions.values(), key=lambda v: -v.version))
        for clinic, versions in sorted(by_clinic.items())
    ]


def patient_view(  # noqa: C901 - one branch per kind of message the page shows
    items: Iterable[InboxItem], patient_ref: str, zone: str, clinic: str = "", member: str = ""
) -> PatientView | None:
    """What this clinic's inbox says about one patient, or ``None`` when it says nothing (404)."""
    referrals: dict[str, tuple[str, str, str]] = {}
    alerts: dict[str, AlertView] = {}
    changes: list[CareTeamChanged] = []
    updates: list[PlanUpdated] = []
    flags: dict[str, ScreeningFlagged] = {}
    disputes: list[str] = []
    for item in items:
        message = item.message
        if getattr(message, "patient_ref", None) != patient_ref:
            continue
        if isinstance(message, ReferralEvent):
            referrals[str(message.referral_id)] = (
                str(message.referral_id),
                STATE_WORDS[message.state],
                f"{message.referring_clinic} → {message.recipient_clinic}",
            )
        elif isinstance(message, AlertRaised):
            alerts[str(message.alert_id)] = AlertView(
                alert_id=str(message.alert_id),
                severity=message.severity.value,
                trigger=message.trigger,
                raised_by=message.raised_by,
                raised_at=local_time(message.raised_at or message.occurred_at, zone),
                note=message.note,
                ours=message.raised_by == clinic,
            )
        elif isinstance(message, AlertAcknowledged) and str(message.alert_id) in alerts:
            alert = alerts[str(message.alert_id)]
            alert.acknowledged.append(
                f"{message.member} ({message.member_clinic}) at {local_time(message.occurred_at, zone)}"
            )
            alert.acknowledged_by_me = alert.acknowledged_by_me or (
                message.member_clinic == clinic and message.member == member
            )
        elif isinstance(message, AlertResolved) and str(message.alert_id) in alerts:
            alerts[str(message.alert_id)].resolved = True
        elif isinstance(message, CareTeamChanged):
            changes.append(message)
        elif isinstance(message, PlanUpdated):
            updates.append(message)
        elif isinstance(message, ScreeningFlagged):
            flags[str(message.flag_id)] = message
        elif isinstance(message, ScreeningDisputed):
            disputes.append(dispute_words(message, zone))
    if not (referrals or alerts or changes or updates or flags):
        return None
    active = sorted(
        (alert for alert in alerts.values() if not alert.resolved),
        key=lambda alert: (-SEVERITY_RANK[Severity(alert.severity)], alert.raised_at),
    )
    team = _team(changes, zone)
    own = next((m.modality for m in team if m.clinic == clinic and not m.left), "")
    plans = _plans(updates, zone)
    newest = max((h.versions[0].version for h in plans if h.clinic == clinic and h.versions), default=0)
    return PatientView(
        patient_ref,
        list(referrals.values()),
        active,
        team=team,
        plans=plans,
        flags=list(reversed(flags.values())),
        disputes=disputes,
        own_modality=own,
        next_plan_version=newest + 1,
    )


def screening_match(
    items: Iterable[InboxItem], patient_ref: str, flag_id: UUID, rule_id: str
) -> ScreeningFlagged | None:
    """The flag ``flag_id`` on ``patient_ref`` in this clinic's inbox, if one of its matches is ``rule_id``."""
    for item in items:
        message = item.message
        if (
            isinstance(message, ScreeningFlagged)
            and message.flag_id == flag_id
            and message.patient_ref == patient_ref
            and any(match.rule_id == rule_id for match in message.matches)
        ):
            return message
    return None


def inbox_message(items: Iterable[InboxItem], message_id: UUID) -> InboxItem | None:
    """The delivery of ``message_id`` in this clinic's inbox (another clinic's message is never here)."""
    return next((item for item in items if item.message.message_id == message_id), None)


@dataclass(frozen=True)
class PageView:
    """A page the hub sent this clinic for another clinic's alert, with who acknowledged it."""

    page_id: str
    alert_id: str
    severity: str
    trigger: str
    patient_ref: str
    raised_by: str
    also_paged: str
    when: str
    acknowledged_by: str


def open_pages(items: Iterable[InboxItem], clinic: str, zone: str) -> list[PageView]:
    """The pages this clinic got, newest first, from the alerts in its inbox.

    The hub pages each care-team clinic but the raiser for an alert of a paging severity,
    once per alert and clinic, under an id derived from both (``page_id_for``): the portal
    finds the page from the alert without reading the hub's pages bucket.
    """
    pages: dict[str, PageView] = {}
    acks: dict[str, str] = {}
    for item in items:
        message = item.message
        if isinstance(message, AlertRaised) and message.severity in PAGING_SEVERITIES and message.raised_by != clinic:
            page_id = str(page_id_for(f"alert:{message.alert_id}:{clinic}"))
            others = [c for c in message.recipients if c not in {clinic, message.raised_by}]
            pages[page_id] = PageView(
                page_id=page_id,
                alert_id=str(message.alert_id),
                severity=message.severity.value,
                trigger=message.trigger,
                patient_ref=message.patient_ref,
                raised_by=message.raised_by,
                also_paged=", ".join(others) or "no other clinic",
                when=local_time(message.raised_at or message.occurred_at, zone),
                acknowledged_by="",
            )
        elif isinstance(message, PageAcknowledged):
            when = local_time(message.occurred_at, zone)
            acks[str(message.page_id)] = f"{message.member} ({message.member_clinic}) at {when}"
    return [dataclasses.replace(page, acknowledged_by=acks.get(page.page_id, "")) for page in reversed(pages.values())]
