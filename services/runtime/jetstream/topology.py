"""Every stream, KV bucket and durable consumer the hub needs, declared once.

Provisioning and the services both read these declarations, so a consumer that a service
binds to is always exactly the one ``hubctl provision`` created.

Durability choices (see docs/durability.md):
- file storage everywhere; the inbox and out streams are store-and-forward buffers;
- ``Nats-Msg-Id`` de-duplication windows long enough to cover a client's retries and a
  service's crash-and-restart;
- the audit stream is append-only by server configuration: deny delete, deny purge, no
  roll-up, six-plus years of retention. Those flags cannot be changed once it exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from nats.js import api

from referral_hub.errors import HubError
from referral_hub.runtime.jetstream import streams, subjects

DAY: Final = 24 * 60 * 60.0
AUDIT_RETENTION_DAYS: Final = 6 * 366 + 30
"""Six years (HIPAA 164.316(b)(2)) plus a month of slack for the retention boundary."""

REFERRALS_KV: Final = "hub-referrals"
REGISTRY_KV: Final = "hub-registry"
CARETEAMS_KV: Final = "hub-careteams"
PAGES_KV: Final = "hub-pages"
NOTIFY_STATE_KV: Final = "hub-notify-state"
# The clinic portal's own state (members, invites, sessions, login counters, unread marks);
# only the ``portal`` hub user may touch these.
PORTAL_MEMBERS_KV: Final = "portal-members"
PORTAL_INVITES_KV: Final = "portal-invites"
PORTAL_SESSIONS_KV: Final = "portal-sessions"
PORTAL_LOGINS_KV: Final = "portal-logins"
PORTAL_UNREAD_KV: Final = "portal-unread"
PORTAL_INVITE_TTL_SECONDS: Final = 72 * 3600
PORTAL_SESSION_TTL_SECONDS: Final = 12 * 3600
"""A session ends 12 h after login at the latest, however active; the idle timeout is shorter."""
PORTAL_LOGIN_WINDOW_SECONDS: Final = 15 * 60
"""Notifications' other state: silences, per-patient absolute alerts and pending digests."""

CLINIC_OUT_MAX_MSG_BYTES: Final = 256 * 1024
"""The largest submission the CLINIC_OUT stream stores. Larger than the hub's own limit
(``admission.MAX_COMMAND_BYTES``), so a message refused for its size is still kept whole and
dead-lettered (base64 in a dead letter stays under the server's 1 MB ``max_payload``); the
server refuses anything larger at publish time, so the sender knows at once."""

ACK_WAIT_SECONDS: Final = 30.0
MAX_DELIVER: Final = 50
"""Redeliveries before the server gives up and announces MAX_DELIVERIES; with the
handlers' capped exponential nak delay this is roughly twenty minutes of retrying."""


class TopologyError(HubError):
    """A provisioning request names something the hub does not have."""


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer: which stream, which subjects, under what name."""

    stream: str
    durable: str
    filter_subject: str
    max_deliver: int = MAX_DELIVER
    only: tuple[str, ...] = ()
    """Narrower subjects under ``filter_subject``: the server delivers only these (NATS 2.10 filters)."""

    def config(self) -> api.ConsumerConfig:
        """The server-side configuration, identical wherever the consumer is created."""
        return api.ConsumerConfig(
            durable_name=self.durable,
            filter_subject=None if self.only else self.filter_subject,
            filter_subjects=list(self.only) or None,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=ACK_WAIT_SECONDS,
            max_deliver=self.max_deliver,
            max_ack_pending=1000,
        )


REFERRALS_INTAKE: Final = ConsumerSpec(streams.CLINIC_OUT, "referrals-intake", subjects.CLINIC_OUT_ALL)
NOTIFICATIONS_EVENTS: Final = ConsumerSpec(
    streams.HUB_EVENTS,
    "notifications-events",
    subjects.EVENTS_ALL,
    only=tuple(
        subjects.domain_event(kind)
        for kind in (
            "alert.raised",
            "alert.resolved",
            "screening.flagged",
            "referral.requested",
            "referral.overdue",
        )
    ),
)
"""Only the events that page or notify: notifications never reads its own pages and receipts back."""
NOTIFICATIONS_ACKS: Final = ConsumerSpec(
    streams.CLINIC_OUT, "notifications-page-acks", subjects.clinic_out("*", "page.ack")
)
"""``page.ack`` is the one clinic submission notifications handles; the referrals intake skips it."""
EXHAUSTED: Final = ConsumerSpec(streams.HUB_ADVISORIES, "referrals-exhausted", subjects.MAX_DELIVERIES_ADVISORIES)
"""Turns every MAX_DELIVERIES advisory into a dead letter; the advisories are captured in a
stream because the server publishes them on core NATS, where a service that is down would
miss them."""
AUDIT_CONSUMERS: Final = (
    ConsumerSpec(streams.CLINIC_OUT, "audit-clinic-out", subjects.CLINIC_OUT_ALL),
    ConsumerSpec(streams.CLINIC_IN, "audit-clinic-in", subjects.CLINIC_IN_ALL),
    ConsumerSpec(streams.HUB_EVENTS, "audit-events", subjects.EVENTS_ALL),
    ConsumerSpec(streams.HUB_DEADLETTER, "audit-deadletter", subjects.DEADLETTER_ALL),
)


def clinic_inbox_consumer(clinic_id: str) -> ConsumerSpec:
    """The one consumer a clinic reads its inbox through: made by the hub, bound to by the clinic.

    Clinics may not create consumers (a consumer's ``deliver_subject`` is not checked against
    its creator's rights), so the hub makes this durable pull consumer when the clinic is
    registered, and the clinic's account imports exactly its ``MSG.NEXT`` and ``ACK`` subjects.
    It never gives up on a message (no ``max_deliver``): an inbox copy waits for its clinic.
    """
    return ConsumerSpec(streams.CLINIC_IN, f"inbox-{clinic_id}", subjects.clinic_inbox(clinic_id), max_deliver=-1)


CONSUMERS: Final = (REFERRALS_INTAKE, EXHAUSTED, NOTIFICATIONS_EVENTS, NOTIFICATIONS_ACKS, *AUDIT_CONSUMERS)


def stream_configs(replicas: int = 1, budgets: Mapping[str, int] | None = None) -> list[api.StreamConfig]:
    """The hub's streams, with ``replicas`` copies each (1 embedded, 3 in a cluster).

    ``budgets`` caps streams' bytes on disk (``max_bytes``), by stream name. Every stream
    discards *new* messages at its limits: a full stream refuses the publish, so the sender
    is told (``client.HubFullError``) instead of an old message being dropped silently.
    """

    def stream(name: str, subject: str, *, max_age_days: float, dedupe_seconds: float) -> api.StreamConfig:
        return api.StreamConfig(
            name=name,
            subjects=[subject],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.NEW,
            max_age=max_age_days * DAY,
            duplicate_window=dedupe_seconds,
            num_replicas=replicas,
        )

    audit = stream(streams.AUDIT, subjects.AUDIT_ENTRY, max_age_days=AUDIT_RETENTION_DAYS, dedupe_seconds=DAY)
    checkpoints = stream(
        streams.AUDIT_CHECKPOINTS, subjects.AUDIT_CHECKPOINT, max_age_days=AUDIT_RETENTION_DAYS, dedupe_seconds=DAY
    )
    audit.allow_atomic = True  # the chain writer's atomic batches (audit.adapters.ChainWriter)
    for append_only in (audit, checkpoints):
        # Readers outside the audit service use direct gets: a consumer's free ``deliver_subject``
        # could push foreign bytes onto ``audit.entry``, so nobody else may create one there.
        append_only.allow_direct = True
        append_only.deny_delete = True
        append_only.deny_purge = True
        append_only.allow_rollup_hdrs = False
    clinic_out = stream(streams.CLINIC_OUT, subjects.CLINIC_OUT_ALL, max_age_days=30, dedupe_seconds=3600)
    clinic_out.max_msg_size = CLINIC_OUT_MAX_MSG_BYTES
    clinic_in = stream(
        streams.CLINIC_IN, subjects.CLINIC_IN_ALL, max_age_days=90, dedupe_seconds=streams.OUTPUT_DEDUPE_SECONDS
    )
    clinic_in.allow_atomic = (
        True  # the inbox writer's per-clinic atomic batches (runtime.messaging.inbox_writer.InboxWriter)
    )
    clinic_in.allow_direct = True  # inbox reads by event number (runtime.messaging.inbox_reads) use direct gets
    configs = [
        clinic_out,
        clinic_in,
        stream(streams.HUB_EVENTS, subjects.EVENTS_ALL, max_age_days=90, dedupe_seconds=streams.OUTPUT_DEDUPE_SECONDS),
        stream(
            streams.HUB_DEADLETTER,
            subjects.DEADLETTER_ALL,
            max_age_days=365,
            dedupe_seconds=streams.OUTPUT_DEDUPE_SECONDS,
        ),
        stream(streams.HUB_ADVISORIES, subjects.MAX_DELIVERIES_ADVISORIES, max_age_days=30, dedupe_seconds=120),
        audit,
        checkpoints,
    ]
    caps = budgets or {}
    unknown = set(caps) - {config.name for config in configs} - {GATEWAY_DOCUMENTS_STREAM}
    if unknown:
        msg = f"no such stream to budget: {', '.join(sorted(unknown))}"
        raise TopologyError(msg)
    for config in configs:
        config.max_bytes = caps.get(config.name or "", -1)
    return configs


def kv_configs(replicas: int = 1) -> list[api.KeyValueConfig]:
    """The hub's KV buckets: referral state, care teams (both with history) and the registry."""
    return [
        api.KeyValueConfig(bucket=REFERRALS_KV, history=16, storage=api.StorageType.FILE, replicas=replicas),
        api.KeyValueConfig(bucket=REGISTRY_KV, history=8, storage=api.StorageType.FILE, replicas=replicas),
        api.KeyValueConfig(bucket=CARETEAMS_KV, history=16, storage=api.StorageType.FILE, replicas=replicas),
        api.KeyValueConfig(bucket=PAGES_KV, history=8, storage=api.StorageType.FILE, replicas=replicas),
        api.KeyValueConfig(bucket=NOTIFY_STATE_KV, history=8, storage=api.StorageType.FILE, replicas=replicas),
        *portal_kv_configs(replicas),
        *gateway_kv_configs(replicas),
        api.KeyValueConfig(bucket=DOCUMENTS_INDEX_KV, history=4, storage=api.StorageType.FILE, replicas=replicas),
    ]


def portal_kv_configs(replicas: int = 1) -> list[api.KeyValueConfig]:
    """The portal's buckets; invites, sessions and login counters expire by the bucket's TTL."""

    def bucket(name: str, ttl: float | None = None) -> api.KeyValueConfig:
        return api.KeyValueConfig(bucket=name, history=1, ttl=ttl, storage=api.StorageType.FILE, replicas=replicas)

    return [
        bucket(PORTAL_MEMBERS_KV),
        bucket(PORTAL_INVITES_KV, PORTAL_INVITE_TTL_SECONDS),
        bucket(PORTAL_SESSIONS_KV, PORTAL_SESSION_TTL_SECONDS),
        bucket(PORTAL_LOGINS_KV, PORTAL_LOGIN_WINDOW_SECONDS),
        bucket(PORTAL_UNREAD_KV),
    ]


# --- The FHIR gateway's own state ---------------------------------------------------------------
GATEWAY_CLIENTS_KV: Final = "gateway-clients"
"""Registered clinic systems (public JWKS); written by operators, only read by the gateway."""
GATEWAY_REPLAY_KV: Final = "gateway-replay"
"""Client-assertion ids already used, each kept for :data:`GATEWAY_REPLAY_TTL_SECONDS`."""
GATEWAY_KEYS_KV: Final = "gateway-keys"
"""The key that signs bearer tokens, shared by every gateway replica."""
GATEWAY_SUBSCRIPTIONS_KV: Final = "gateway-subscriptions"
"""FHIR Subscriptions, and each one's delivery progress and delivery lease."""
GATEWAY_REPLAY_TTL_SECONDS: Final = 10 * 60
"""Twice the longest life of a client assertion (five minutes)."""
GATEWAY_BUCKETS: Final = (GATEWAY_CLIENTS_KV, GATEWAY_REPLAY_KV, GATEWAY_KEYS_KV, GATEWAY_SUBSCRIPTIONS_KV)
GATEWAY_DOCUMENTS: Final = "gateway-documents"
"""Clinical documents attached to referrals, in JetStream's own object store."""
GATEWAY_DOCUMENT_MAX_BYTES: Final = 20 * 1024 * 1024
GATEWAY_DOCUMENTS_STREAM: Final = f"OBJ_{GATEWAY_DOCUMENTS}"
"""The object store's stream: its name in ``hubctl provision --max-bytes``."""
GATEWAY_DOCUMENTS_MAX_BYTES: Final = 8 * 1024 * 1024 * 1024
"""All documents together, unless a budget says otherwise: a full store refuses new documents
(each clinic is also held to ``documents.domain.CLINIC_QUOTA_BYTES``), it never fills the disk."""
DOCUMENTS_INDEX_KV: Final = "documents-index"
"""Each referral's documents (one key per referral, its metadata list), so listing them reads one key
instead of the whole object store. Shared by the gateway and the portal (``referral_hub.documents``)."""


def gateway_kv_configs(replicas: int = 1) -> list[api.KeyValueConfig]:
    """The gateway's buckets; used assertion ids expire by the bucket's TTL."""

    def bucket(name: str, history: int = 1, ttl: float | None = None) -> api.KeyValueConfig:
        return api.KeyValueConfig(
            bucket=name, history=history, ttl=ttl, storage=api.StorageType.FILE, replicas=replicas
        )

    return [
        bucket(GATEWAY_CLIENTS_KV, history=4),
        bucket(GATEWAY_REPLAY_KV, ttl=GATEWAY_REPLAY_TTL_SECONDS),
        bucket(GATEWAY_KEYS_KV),
        bucket(GATEWAY_SUBSCRIPTIONS_KV),
    ]


def gateway_object_configs(replicas: int = 1, budgets: Mapping[str, int] | None = None) -> list[api.ObjectStoreConfig]:
    """The gateway's object store for documents, capped at its budget (default :data:`GATEWAY_DOCUMENTS_MAX_BYTES`)."""
    max_bytes = (budgets or {}).get(GATEWAY_DOCUMENTS_STREAM, GATEWAY_DOCUMENTS_MAX_BYTES)
    return [
        api.ObjectStoreConfig(
            bucket=GATEWAY_DOCUMENTS, storage=api.StorageType.FILE, replicas=replicas, max_bytes=max_bytes
        )
    ]
