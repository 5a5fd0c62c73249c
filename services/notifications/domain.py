"""The routing table: which domain events page, which only notify, and whom. Pure.

| event | severity | effect |
| --- | --- | --- |
| ``alert.raised`` | absolute, relative | page every care-team clinic but the raiser |
| ``alert.raised`` | local, caution | notify those clinics' intake channels |
| ``screening.flagged`` | absolute, relative | page every clinic the flag reached |
| ``screening.flagged`` | local, caution | notify those clinics' intake channels |
| ``screening.flagged``, outside the care team | | page only for the referral's own matches (see below) |
| ``screening.flagged``, to the care team | | notify the team's intake channels: its record was screened |
| ``alert.resolved`` | | close the alert's open pages |
| ``referral.overdue`` | | notify the recipient's intake channel |
| ``referral.requested`` | | notify the recipient's intake channel (digest outside working hours) |

Pages ignore quiet hours; routine notifications outside working hours wait for the digest.

Minimum necessary for a clinic outside the patient's care team (a referral's requester or
recipient that is not on it): matches that came from the team's record never page it, and
nothing it is sent (page, notification, digest) names them: it learns how many there are,
the highest severity, and whether the referral is held, and finds rule ids and whom to ask
in its hub inbox. It is not treating the patient, and a held referral cannot be accepted
without review, so nobody is at risk while it reads its inbox; an unsilenceable page, on
the other hand, would let any clinic wake another's on-call with a third clinic's alerts.
Matches from the referral itself (what the requester wrote) page as they always did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from referral_hub.contracts.alerts import SEVERITY_RANK, AlertRaised, AlertResolved, Severity
from referral_hub.contracts.base import Modality
from referral_hub.contracts.paging import NotificationQueued
from referral_hub.contracts.referrals import ReferralOverdue, ReferralRequested
from referral_hub.contracts.screening import FlagAudience, ScreeningFlagged, ScreeningMatch
from referral_hub.notifications.page_rules import PageIntent
from referral_hub.runtime.messaging.ids import derived_id
from referral_hub.runtime.messaging.refusals import HUB_SENDER

SERVICE = "notifications"
PAGING_SEVERITIES: Final = frozenset({Severity.ABSOLUTE, Severity.RELATIVE})


@dataclass(frozen=True)
class NotifyIntent:
    """A routine notification for a clinic's intake channel."""

    clinic: str
    topic: str
    about_message_id: UUID
    correlation_id: UUID
    summary: str


@dataclass(frozen=True)
class CloseIntent:
    """An alert was resolved: its open pages stop escalating."""

    alert_id: UUID
    patient_ref: str


@dataclass(frozen=True)
class AbsoluteChanged:
    """The patient's absolute alerts in force changed (they inhibit relative pages)."""

    patient_ref: str
    alert_id: UUID
    modalities: tuple[Modality, ...]
    in_force: bool


Intent = PageIntent | NotifyIntent | CloseIntent | AbsoluteChanged


def _alert_summary(event: AlertRaised) -> str:
    site = f" at {event.body_site}" if event.body_site else ""
    return (
        f"{event.severity} contraindication for patient {event.patient_ref}: {event.trigger}{site} "
        f"({', '.join(event.modalities)}); raised by {event.raised_by}"
    )


def _flag_summary(event: ScreeningFlagged, matches: tuple[ScreeningMatch, ...] | None = None) -> str:
    shown = event.matches if matches is None else matches
    rules = ", ".join(f"{m.rule_id} ({m.severity})" for m in shown)
    held = "; referral HELD for review" if event.held else ""
    return f"screening flagged {event.screened} for patient {event.patient_ref}, {event.modality}: {rules}{held}"


def _outside_summary(event: ScreeningFlagged, team: Severity) -> str:
    """For a clinic outside the care team: the referral's own matches, and that the team holds one."""
    theirs = (
        f"the patient's care team holds a contraindication relevant to {event.modality} (severity {team}); "
        "the hub has asked the team, whose answer will follow"
    )
    if not event.matches:
        held = "; referral HELD for review" if event.held else ""
        about = f"referral {event.referral_id} for patient {event.patient_ref}, {event.modality}"
        return f"screening flagged {about}: {theirs}{held}"
    return f"{_flag_summary(event)}; and {theirs}"


def _notice_summary(event: ScreeningFlagged) -> str:
    rules = ", ".join(f"{m.rule_id} ({m.severity})" for m in event.matches)
    held = "; the referral is HELD for review" if event.held else ""
    return (
        f"{event.referring_clinic} referred patient {event.patient_ref} to {event.recipient_clinic} "
        f"({event.modality}), outside the care team; screening against the team's record matched {rules}{held}"
    )


def route(event: object) -> list[Intent]:
    """What ``event`` asks notifications to do."""
    if isinstance(event, AlertRaised):
        return _route_alert(event)
    if isinstance(event, ScreeningFlagged):
        return _route_flag(event)
    if isinstance(event, AlertResolved):
        return [
            CloseIntent(event.alert_id, event.patient_ref),
            AbsoluteChanged(event.patient_ref, event.alert_id, (), in_force=False),
        ]
    if isinstance(event, ReferralOverdue):
        summary = f"referral {event.referral_id} from {event.referring_clinic} is overdue for an answer"
        return [
            NotifyIntent(event.recipient_clinic, "referral.overdue", event.message_id, event.correlation_id, summary)
        ]
    if isinstance(event, ReferralRequested):
        summary = f"new referral {event.referral_id} from {event.referring_clinic} ({event.modality}, {event.urgency})"
        return [
            NotifyIntent(event.recipient_clinic, "referral.inbound", event.message_id, event.correlation_id, summary)
        ]
    return []


def _route_alert(event: AlertRaised) -> list[Intent]:
    others = [clinic for clinic in event.recipients if clinic != event.raised_by]
    intents: list[Intent] = []
    if event.severity is Severity.ABSOLUTE:
        intents.append(AbsoluteChanged(event.patient_ref, event.alert_id, tuple(event.modalities), in_force=True))
    if event.severity not in PAGING_SEVERITIES:
        summary = _alert_summary(event)
        return [
            *intents,
            *(NotifyIntent(c, "safety.notify", event.message_id, event.correlation_id, summary) for c in others),
        ]
    return [
        *intents,
        *(
            PageIntent(
                source="alert",
                source_id=event.alert_id,
                clinic=clinic,
                patient_ref=event.patient_ref,
                severity=event.severity,
                modalities=tuple(event.modalities),
                about_message_id=event.message_id,
                summary=_alert_summary(event),
                notify_clinics=tuple(event.recipients),
                source_at=event.raised_at or event.occurred_at,
            )
            for clinic in others
        ),
    ]


def _route_flag(event: ScreeningFlagged) -> list[Intent]:
    if event.audience is FlagAudience.CARE_TEAM:
        summary = _notice_summary(event)
        return [
            NotifyIntent(c, "screening.care_team", event.message_id, event.correlation_id, summary)
            for c in event.recipients
        ]
    summary = _flag_summary(event)
    if event.care_team_severity is not None:
        summary = _outside_summary(event, event.care_team_severity)
    severity = max((m.severity for m in event.matches), key=lambda s: SEVERITY_RANK[s], default=None)
    if severity not in PAGING_SEVERITIES:
        return [
            NotifyIntent(c, "safety.notify", event.message_id, event.correlation_id, summary) for c in event.recipients
        ]
    return [
        PageIntent(
            source="flag",
            source_id=event.flag_id,
            clinic=clinic,
            patient_ref=event.patient_ref,
            severity=severity,
            modalities=(event.modality,),
            about_message_id=event.message_id,
            summary=summary,
            notify_clinics=tuple(event.recipients),
            source_at=event.occurred_at,
        )
        for clinic in event.recipients
    ]


def queued(intent: NotifyIntent, at: datetime, deferred_until: datetime | None) -> NotificationQueued:
    """The record of a routine notification, identical however often it is derived."""
    key = f"{intent.about_message_id}/{intent.clinic}"
    return NotificationQueued(
        message_id=derived_id(key, "notification-queued"),
        occurred_at=at,
        sender_clinic=HUB_SENDER,
        actor=SERVICE,
        correlation_id=intent.correlation_id,
        causation_id=intent.about_message_id,
        notification_id=derived_id(key, "notification"),
        clinic=intent.clinic,
        topic=intent.topic,
        about_message_id=intent.about_message_id,
        deferred_until=deferred_until,
    )
