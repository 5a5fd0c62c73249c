"""Pure routing: which domain events notify whom.

- A new inbound referral queues an intake notification for the recipient clinic.
- A contraindication alert, or a screening flag, queues a safety notification for every
  clinic it reached (other than the raiser): ``safety.page`` for absolute and relative
  severities, which page the on-call member, and ``safety.notify`` for local and caution.

Rosters, escalation and delivery channels build on this routing table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from referral_hub.contracts.alerts import AlertRaised, Severity
from referral_hub.contracts.paging import NotificationQueued
from referral_hub.contracts.referrals import ReferralRequested
from referral_hub.contracts.screening import ScreeningFlagged
from referral_hub.runtime.rejecting import HUB_SENDER, derived_id

SERVICE = "notifications"
PAGING_SEVERITIES: Final = frozenset({Severity.ABSOLUTE, Severity.RELATIVE})


def _queued(
    event: AlertRaised | ScreeningFlagged | ReferralRequested, clinic: str, topic: str, at: datetime
) -> NotificationQueued:
    return NotificationQueued(
        message_id=derived_id(str(event.message_id), f"notification-{clinic}"),
        occurred_at=at,
        sender_clinic=HUB_SENDER,
        actor=SERVICE,
        correlation_id=event.correlation_id,
        causation_id=event.message_id,
        notification_id=derived_id(str(event.message_id), f"notification-id-{clinic}"),
        clinic=clinic,
        topic=topic,
        about_message_id=event.message_id,
    )


def _safety_topic(severity: Severity) -> str:
    return "safety.page" if severity in PAGING_SEVERITIES else "safety.notify"


def route(event: object, received_at: datetime) -> list[NotificationQueued]:
    """The notifications an event causes; empty if it notifies nobody."""
    if isinstance(event, ReferralRequested):
        return [_queued(event, event.recipient_clinic, "referral.inbound", received_at)]
    if isinstance(event, AlertRaised):
        topic = _safety_topic(event.severity)
        return [_queued(event, clinic, topic, received_at) for clinic in event.recipients if clinic != event.raised_by]
    if isinstance(event, ScreeningFlagged):
        topic = _safety_topic(event.highest_severity)
        return [_queued(event, clinic, topic, received_at) for clinic in event.recipients]
    return []
