"""The routing table: which domain events page, which only notify, and whom. Pure.

| event | severity | effect |
| --- | --- | --- |
| ``alert.raised`` | absolute, relative | page every care-team clinic but the raiser |
| ``alert.raised`` | local, caution | notify those clinics' intake channels |
| ``screening.flagged`` | absolute, relative | page every clinic the flag reached |
| ``screening.flagged`` | local, caution | notify those clinics' intake channels |
| ``alert.resolved`` | | close the alert's open pages |
| ``referral.overdue`` | | notify the recipient's intake channel |
| ``referral.requested`` | | notify the recipient's intake channel (digest outside working hours) |

Pages ignore quiet hours; routine notifications outside working hours wait for the digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from referral_hub.contracts.alerts import AlertRaised, AlertResolved, Severity
from referral_hub.contracts.base import Modality
from referral_hub.contracts.paging import NotificationQueued
from referral_hub.contracts.referrals import ReferralOverdue, ReferralRequested
from referral_hub.contracts.screening import ScreeningFlagged
from referral_hub.notifications.paging import PageIntent
from referral_hub.runtime.rejecting import HUB_SENDER, derived_id

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


def _flag_summary(event: ScreeningFlagged) -> str:
    rules = ", ".join(f"{m.rule_id} ({m.severity})" for m in event.matches)
    held = "; referral HELD for review" if event.held else ""
    return f"screening flagged {event.screened} for patient {event.patient_ref}, {event.modality}: {rules}{held}"


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
    summary = _flag_summary(event)
    if event.highest_severity not in PAGING_SEVERITIES:
        return [
            NotifyIntent(c, "safety.notify", event.message_id, event.correlation_id, summary) for c in event.recipients
        ]
    return [
        PageIntent(
            source="flag",
            source_id=event.flag_id,
            clinic=clinic,
            patient_ref=event.patient_ref,
            severity=event.highest_severity,
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
