"""The hub's Prometheus metrics, shared by all services.

Naming follows Prometheus practice: ``hub_`` prefix, base units, ``_total`` on counters.
Labels are bounded sets (service, handler, outcome, code, transition); no patient,
referral, clinic or member ids ever become labels.

Every metric is defined here, in every process, so handlers can count without knowing
where they run; but a process's ``/metrics`` shows only the families of the services it
runs (:func:`expose_service`, called by each ``create_app``), so each series comes from
the one service that owns it and no service reports a placeholder for another's figure.
A gauge whose value is unknown until measured (:class:`LastValue`) is absent until then.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Final, TypeAlias

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric


class LastValue:
    """An unlabelled gauge with no sample until something measures it.

    prometheus_client's own unlabelled ``Gauge`` reports 0 from the moment it is defined, and
    0 reads as a measurement: "the last checkpoint was in 1970", "no referral is overdue"
    before the first sweep has counted any.
    """

    def __init__(self, name: str, documentation: str) -> None:
        """Register with the default registry, with no value yet."""
        self.name = name
        self.documentation = documentation
        self._value: float | None = None
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def set(self, value: float) -> None:
        """Record a measurement."""
        with self._lock:
            self._value = float(value)

    def describe(self) -> Iterable[Metric]:
        """The family's name, for the registry's clash check, without a sample."""
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        """The last measurement, or nothing before the first."""
        with self._lock:
            value = self._value
        return [] if value is None else [GaugeMetricFamily(self.name, self.documentation, value=value)]


MESSAGES_HANDLED: Final = Counter(
    "hub_messages_handled_total",
    "Messages a service finished handling, by outcome (accepted, rejected, retried).",
    ["service", "handler", "outcome"],
)
HANDLING_SECONDS: Final = Histogram(
    "hub_message_handling_seconds",
    "Time from a message reaching a handler to its acknowledgement.",
    ["service", "handler"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
REJECTIONS: Final = Counter(
    "hub_rejections_total",
    "Messages refused with a typed rejection, by rejection code.",
    ["service", "code"],
)
REFERRAL_TRANSITIONS: Final = Counter(
    "hub_referral_transitions_total",
    "Accepted referral lifecycle transitions, by transition.",
    ["transition"],
)
AUDIT_ENTRIES: Final = Counter(
    "hub_audit_entries_total",
    "Entries appended to the audit chain.",
)
AUDIT_APPEND_LAG: Final = LastValue(
    "hub_audit_append_lag_seconds",
    "Seconds between a message being stored and its audit entry being appended, last entry.",
)
NATS_CONNECTED: Final = Gauge(
    "hub_nats_connected",
    "1 while the service holds a NATS connection.",
    ["service"],
)
CONTRAINDICATION_ALERTS: Final = Counter(
    "hub_contraindication_alerts_total",
    "Contraindication alerts clinics raised (or re-raised), by severity.",
    ["severity"],
)
SCREENING_FLAGS: Final = Counter(
    "hub_screening_flags_total",
    "Screening matches on referrals and plans, by rule id ('alert' for a clinic's own alert) and severity.",
    ["rule", "severity"],
)
SCREENING_HOLDS: Final = Counter(
    "hub_screening_holds_total",
    "Referrals held in needs_review by an absolute screening match.",
)
ALERT_TO_PAGE_SECONDS: Final = Histogram(
    "hub_alert_to_page_seconds",
    "From the hub accepting an alert (or raising a flag) to the first delivery attempt of its page.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PAGE_ACK_SECONDS: Final = Histogram(
    "hub_page_ack_seconds",
    "From a page opening to its acknowledgement.",
    buckets=(5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0),
)
PAGES: Final = Counter(
    "hub_pages_total",
    "Page decisions, by outcome (paged, repaged, deduplicated, silenced, inhibited).",
    ["outcome"],
)
ESCALATIONS: Final = Counter(
    "hub_page_escalations_total",
    "Pages escalated for want of an acknowledgement, by the level reached.",
    ["level"],
)
DELIVERY_FAILURES: Final = Counter(
    "hub_delivery_failures_total",
    "Failed delivery attempts, by channel (email, webhook, sms, none).",
    ["channel"],
)
STREAM_MESSAGES: Final = Gauge(
    "hub_stream_messages",
    "Messages stored in each hub stream (HUB_DEADLETTER is the dead-letter depth).",
    ["stream"],
)
STREAM_BYTES: Final = Gauge(
    "hub_stream_bytes",
    "Bytes stored in each hub stream.",
    ["stream"],
)
OPEN_REFERRALS: Final = Gauge(
    "hub_open_referrals",
    "Referrals not yet declined, closed or cancelled, by state (refreshed by each timer sweep).",
    ["state"],
)
OVERDUE_REFERRALS: Final = LastValue(
    "hub_overdue_referrals",
    "Referrals past their answer deadline and still unanswered (refreshed by each timer sweep).",
)
DELIVERY_ATTEMPTS: Final = Counter(
    "hub_delivery_attempts_total",
    "Delivery attempts of pages and notifications, by channel; the failure ratio's denominator.",
    ["channel"],
)
AUDIT_LAST_CHECKPOINT: Final = LastValue(
    "hub_audit_last_checkpoint_timestamp_seconds",
    "Unix time of the newest signed audit checkpoint; its age is what HubAuditCheckpointStale watches.",
)
AUDIT_FOREIGN_MESSAGES: Final = Counter(
    "hub_audit_foreign_messages_total",
    "Messages in an audit stream that are not an audit entry or checkpoint (written by something other than "
    "the audit service), by stream; each counted once by each chain writer and checkpointer that meets it.",
    ["stream"],
)


Exported: TypeAlias = Counter | Gauge | Histogram | LastValue

SHARED: Final[tuple[Exported, ...]] = (
    MESSAGES_HANDLED,
    HANDLING_SECONDS,
    REJECTIONS,
    NATS_CONNECTED,
)
"""Every service reports these, each under its own ``service`` label.

Consumer lag is not among them: the broker reports it (the NATS exporter reads
``/jsz?consumers=true``), so a stopped service cannot take its own backlog's series along."""
OWNED: Final[dict[str, tuple[Exported, ...]]] = {
    "referrals": (
        REFERRAL_TRANSITIONS,
        CONTRAINDICATION_ALERTS,
        SCREENING_FLAGS,
        SCREENING_HOLDS,
        OPEN_REFERRALS,
        OVERDUE_REFERRALS,
    ),
    "notifications": (
        ALERT_TO_PAGE_SECONDS,
        PAGE_ACK_SECONDS,
        PAGES,
        ESCALATIONS,
        DELIVERY_FAILURES,
        DELIVERY_ATTEMPTS,
    ),
    "audit": (
        AUDIT_ENTRIES,
        AUDIT_APPEND_LAG,
        AUDIT_LAST_CHECKPOINT,
        AUDIT_FOREIGN_MESSAGES,
        STREAM_MESSAGES,
        STREAM_BYTES,
    ),
}
"""The one service that measures each of the others."""
HUB_PREFIX: Final = "hub_"
RETRIED: Final = "retried"
"""The outcome every handler can have (its processing raised and the message is redelivered)."""
_exposed: set[str] = set()
_exposed_lock = threading.Lock()


def family_names(metrics: Iterable[Exported]) -> set[str]:
    """The family names (``hub_pages``, not ``hub_pages_total``) of ``metrics``."""
    return {family.name for metric in metrics for family in metric.describe()}


def expose(names: Iterable[str]) -> None:
    """Show these ``hub_`` families on this process's ``/metrics`` from now on."""
    with _exposed_lock:
        _exposed.update(names)


def expose_service(service: str, handlers: Iterable[str]) -> None:
    """Show ``service``'s own families on this process's ``/metrics``, and only those.

    Each of ``handlers`` starts with a true 0 of retried messages, so a service's error rate
    is a real series from the start rather than no data (Prometheus's advice for label values
    known in advance); nothing is created for an outcome a handler may never have.
    """
    for handler in handlers:
        MESSAGES_HANDLED.labels(service, handler, RETRIED)
    expose(family_names((*SHARED, *OWNED[service])))


def count_from_zero(counter: Counter, values: Iterable[str]) -> None:
    """Start ``counter``'s children for label values its service knows it can count (each at a true 0)."""
    for value in values:
        counter.labels(value)


class Exposition:
    """What ``/metrics`` serves: every non-``hub_`` family (process, platform) and the exposed ``hub_`` ones."""

    def collect(self) -> Iterator[Metric]:
        """The default registry's families, filtered by owner."""
        with _exposed_lock:
            exposed = frozenset(_exposed)
        for family in REGISTRY.collect():
            if not family.name.startswith(HUB_PREFIX) or family.name in exposed:
                yield family


EXPOSITION: Final = Exposition()
