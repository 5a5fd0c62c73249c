"""The work list, "Needs you now": what this clinic has to do, derived from its inbox. Pure.

The inbox is an event log; a front desk needs the opposite view: one row per thing that
waits for this clinic, with the one next action, most pressing first. A row disappears when
the inbox shows the step done (the referral moved on, the alert or page was acknowledged),
so the list is never a second state to keep in sync.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from referral_hub.contracts.alerts import SEVERITY_RANK, AlertAcknowledged, AlertRaised, AlertResolved
from referral_hub.contracts.base import Message
from referral_hub.contracts.paging import PageAcknowledged
from referral_hub.contracts.referrals import (
    ReferralEvent,
    ReferralOverdue,
    ReferralRequested,
    ReferralState,
    Urgency,
)
from referral_hub.notifications.domain import PAGING_SEVERITIES
from referral_hub.notifications.page_rules import page_id_for


class Delivered(Protocol):
    """One inbox delivery (``client.InboxItem``), as far as the list needs it."""

    @property
    def message(self) -> Message:
        """The delivered message."""
        ...


@dataclass(frozen=True)
class WorkRow:
    """One thing waiting for this clinic."""

    patient_ref: str
    what: str
    urgency: str
    """``urgent``/``routine`` for a referral, the severity for an alert or page."""
    direction: str
    """``received`` or ``sent`` for a referral; ``from <clinic>`` for an alert or page."""
    age: str
    action: str
    """The one next action, in words, as the button names it."""
    href: str
    """Where the action is taken (under the portal's prefix)."""
    overdue: bool = False
    rank: tuple[int, int, float] = (0, 0, 0.0)
    """Sort key, largest first: pages (absolute and relative alerts), then overdue, then urgency, then age."""


NEXT_STEP: Final[dict[tuple[ReferralState, bool], tuple[str, str]]] = {
    # (state, this clinic received it) -> (what, next action)
    (ReferralState.REQUESTED, True): ("New referral", "Accept or decline"),
    (ReferralState.NEEDS_REVIEW, True): ("Screening hold", "Review the hold: override or decline"),
    (ReferralState.NEEDS_REVIEW, False): ("Screening hold", "Dispute a match or wait for the other clinic"),
    (ReferralState.ACCEPTED, True): ("Accepted referral", "Schedule the first visit"),
    (ReferralState.CANCEL_REQUESTED, True): ("Cancellation asked", "Confirm the cancellation"),
    (ReferralState.COMPLETED, False): ("Outcome received", "Read the outcome and close the loop"),
}
OVERDUE_SENT: Final = ("No answer in time", "Chase the other clinic, or cancel")
"""A referral this clinic sent that the other clinic let go past its urgency's window."""


def age_words(since: datetime, now: datetime) -> str:
    """How long ago, in the largest whole unit a person reads at a glance."""
    seconds = max(int((now - since).total_seconds()), 0)
    if seconds < 3600:  # noqa: PLR2004 - an hour
        return f"{max(seconds // 60, 1)} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _referral_rows(messages: list[Message], clinic: str, now: datetime) -> list[WorkRow]:
    latest: dict[str, ReferralEvent] = {}
    urgency: dict[str, Urgency] = {}
    overdue: set[str] = set()
    for message in messages:
        if not isinstance(message, ReferralEvent):
            continue
        key = str(message.referral_id)
        if isinstance(message, ReferralRequested):
            urgency[key] = message.urgency
        if isinstance(message, ReferralOverdue):
            overdue.add(key)
        if not isinstance(message, ReferralOverdue) or key not in latest:
            latest[key] = message
    rows = []
    for key, event in latest.items():
        received = event.recipient_clinic == clinic
        late = key in overdue and event.state in {ReferralState.REQUESTED, ReferralState.ACCEPTED}
        step = NEXT_STEP.get((event.state, received))
        if step is None and late and not received:
            step = OVERDUE_SENT
        if step is None:
            continue
        level = urgency.get(key, Urgency.ROUTINE)
        rows.append(
            WorkRow(
                patient_ref=event.patient_ref,
                what=step[0],
                urgency=level.value,
                direction="received" if received else "sent",
                age=age_words(event.occurred_at, now),
                action=step[1],
                href=f"/referrals/{key}",
                overdue=late,
                rank=(2 if late else 1, int(level is Urgency.URGENT), (now - event.occurred_at).total_seconds()),
            )
        )
    return rows


def _alert_rows(messages: list[Message], clinic: str, now: datetime) -> list[WorkRow]:
    """Other clinics' active alerts this clinic has not acknowledged; a paging one as its page.

    Acknowledgement is the clinic's: once any member acknowledged, the row is done for all.
    """
    alerts: dict[str, AlertRaised] = {}
    seen: set[str] = set()
    for message in messages:
        if isinstance(message, AlertRaised) and message.raised_by != clinic:
            alerts[str(message.alert_id)] = message
        elif isinstance(message, AlertResolved):
            alerts.pop(str(message.alert_id), None)
        elif isinstance(message, AlertAcknowledged) and message.member_clinic == clinic:
            seen.add(str(message.alert_id))
        elif isinstance(message, PageAcknowledged):
            seen.add(f"page:{message.page_id}")
    rows = []
    for key, alert in alerts.items():
        paged = alert.severity in PAGING_SEVERITIES
        page_id = page_id_for(f"alert:{alert.alert_id}:{clinic}")
        if (paged and f"page:{page_id}" in seen) or (not paged and key in seen):
            continue
        raised = alert.raised_at or alert.occurred_at
        rows.append(
            WorkRow(
                patient_ref=alert.patient_ref,
                what=f"{alert.severity.value.capitalize()} alert: {alert.trigger}",
                urgency=alert.severity.value,
                direction=f"from {alert.raised_by}",
                age=age_words(raised, now),
                action="Acknowledge the page" if paged else "Read and acknowledge the alert",
                href="/pages" if paged else f"/patients/{alert.patient_ref}",
                rank=(3 if paged else 1, SEVERITY_RANK[alert.severity], (now - raised).total_seconds()),
            )
        )
    return rows


def work_rows(items: Iterable[Delivered], clinic: str, now: datetime) -> list[WorkRow]:
    """Everything waiting for ``clinic``, most pressing first: pages, overdue, then by urgency, oldest first."""
    messages = [item.message for item in items]
    rows = _referral_rows(messages, clinic, now) + _alert_rows(messages, clinic, now)
    return sorted(rows, key=lambda row: row.rank, reverse=True)
