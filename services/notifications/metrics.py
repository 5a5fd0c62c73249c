"""The notifications service's own metric families, and which series it shows from zero."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

from referral_hub.contracts.registry import ChannelKind
from referral_hub.notifications.domain import SERVICE
from referral_hub.notifications.page_rules import EscalationPolicy
from referral_hub.runtime.hosting import metrics as runtime_metrics
from referral_hub.runtime.hosting.metrics import LastValue

EVENTS: Final = "events"
PAGE_ACKS: Final = "page-acks"
"""The handlers' names in metrics and logs."""
NO_CHANNEL: Final = "none"
"""The channel a delivery to a member with no contact channel fails on."""

ROSTER_INVALID: Final = Counter(
    "hub_roster_invalid_total",
    "Pages and notifications that had to work around a clinic roster the service cannot follow (unknown time "
    "zone, hours that never begin, a rotation naming strangers), by what was done instead: page_everyone "
    "(absolute: every member, every channel), page_leads, notify_now, digest_now. The log names the clinic.",
    ["fallback"],
)
ROSTERS_INVALID: Final = LastValue(
    "hub_rosters_invalid",
    "Registered clinics whose roster the notifications service cannot follow, refreshed by each sweep.",
)
SWEEPS: Final = Counter(
    "hub_page_sweeps_total",
    "Escalation sweeps the notifications service completed (escalations, owed deliveries, due digests).",
)
SILENCES_ACTIVE: Final = LastValue(
    "hub_silences_active",
    "Silences in force, as the notifications service sees them, refreshed by each sweep.",
)
ONCALL_UNREACHABLE: Final = LastValue(
    "hub_oncall_unreachable_members",
    "Members of clinics' on-call rotations (or overrides) with no contact channel the notifications service can "
    "deliver on (e-mail needs SMTP, SMS a gateway), refreshed by each sweep: a page to them reaches nobody. "
    "hubctl status and hubctl roster show name them.",
)
FALLBACKS: Final = ("page_everyone", "page_leads", "notify_now", "digest_now")
"""The values of ``hub_roster_invalid_total``'s ``fallback`` label."""
OWN_METRICS: Final = (ROSTER_INVALID, ROSTERS_INVALID, SWEEPS, SILENCES_ACTIVE, ONCALL_UNREACHABLE)
"""Families this module defines (beside ``runtime.hosting.metrics``' own); the service exposes them."""


def expose(policy: EscalationPolicy) -> None:
    """Expose the service's families, every label value it can take counted from zero."""
    runtime_metrics.expose_service(SERVICE, handlers=(EVENTS, PAGE_ACKS))
    runtime_metrics.expose(runtime_metrics.family_names(OWN_METRICS))
    runtime_metrics.count_from_zero(ROSTER_INVALID, FALLBACKS)
    channels_known = [*(kind.value for kind in ChannelKind), NO_CHANNEL]
    runtime_metrics.count_from_zero(runtime_metrics.DELIVERY_ATTEMPTS, channels_known)
    runtime_metrics.count_from_zero(runtime_metrics.DELIVERY_FAILURES, channels_known)
    runtime_metrics.count_from_zero(runtime_metrics.ESCALATIONS, (str(level) for level in range(len(policy.delays))))
