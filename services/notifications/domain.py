"""Pure routing: which domain events notify whom.

Today a new inbound referral queues an intake notification for the recipient clinic.
Paging, rosters, escalation and delivery channels build on this routing table.
"""

from __future__ import annotations

from datetime import datetime

from referral_hub.contracts.paging import NotificationQueued
from referral_hub.contracts.referrals import ReferralRequested
from referral_hub.runtime.rejecting import HUB_SENDER, derived_id

SERVICE = "notifications"


def route(event: object, received_at: datetime) -> NotificationQueued | None:
    """The notification an event causes, or ``None`` if it notifies nobody."""
    if isinstance(event, ReferralRequested):
        return NotificationQueued(
            message_id=derived_id(str(event.message_id), "intake-notification"),
            occurred_at=received_at,
            sender_clinic=HUB_SENDER,
            actor=SERVICE,
            correlation_id=event.correlation_id,
            causation_id=event.message_id,
            notification_id=derived_id(str(event.message_id), "notification"),
            clinic=event.recipient_clinic,
            topic="referral.inbound",
            about_message_id=event.message_id,
        )
    return None
