"""The hub's Prometheus metrics, shared by all services.

Naming follows Prometheus practice: ``hub_`` prefix, base units, ``_total`` on counters.
Labels are bounded sets (service, handler, outcome, code, transition); no patient,
referral, clinic or member ids ever become labels.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

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
AUDIT_APPEND_LAG: Final = Gauge(
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
CONSUMER_PENDING: Final = Gauge(
    "hub_consumer_pending_messages",
    "Messages a durable consumer has not yet delivered (its lag), from JetStream consumer info.",
    ["stream", "consumer"],
)
CONSUMER_ACK_PENDING: Final = Gauge(
    "hub_consumer_ack_pending_messages",
    "Messages delivered but not yet acknowledged, from JetStream consumer info.",
    ["stream", "consumer"],
)
CONSUMER_REDELIVERED: Final = Gauge(
    "hub_consumer_redelivered_messages",
    "Messages currently being redelivered, from JetStream consumer info.",
    ["stream", "consumer"],
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
OVERDUE_REFERRALS: Final = Gauge(
    "hub_overdue_referrals",
    "Referrals past their answer deadline and still unanswered.",
)
DELIVERY_ATTEMPTS: Final = Counter(
    "hub_delivery_attempts_total",
    "Delivery attempts of pages and notifications, by channel; the failure ratio's denominator.",
    ["channel"],
)
AUDIT_LAST_CHECKPOINT: Final = Gauge(
    "hub_audit_last_checkpoint_timestamp_seconds",
    "Unix time of the newest signed audit checkpoint; its age is what HubAuditCheckpointStale watches.",
)
AUDIT_FOREIGN_MESSAGES: Final = Counter(
    "hub_audit_foreign_messages_total",
    "Messages in an audit stream that are not an audit entry or checkpoint (written by something other than "
    "the audit service), by stream; each counted once by each chain writer and checkpointer that meets it.",
    ["stream"],
)
