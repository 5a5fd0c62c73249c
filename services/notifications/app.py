"""Wiring of the notifications service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from nats.aio.client import Client

from referral_hub.contracts.registry import ChannelKind
from referral_hub.errors import HubError
from referral_hub.notifications.channels import Channels, ChannelSettings
from referral_hub.notifications.domain import SERVICE
from referral_hub.notifications.handlers import (
    DIGEST_PREFIX,
    FALLBACKS,
    OWN_METRICS,
    PATIENT_PREFIX,
    ROSTER_INVALID,
    SILENCE_PREFIX,
    Digest,
    Notifier,
    Stores,
    Timing,
)
from referral_hub.notifications.paging import EscalationPolicy, Page, PageStatus, PatientRecord, Silence
from referral_hub.runtime import metrics, topology
from referral_hub.runtime.handling import Effects, LateHandler, subscriber
from referral_hub.runtime.kvstore import KvStore, KvView
from referral_hub.runtime.pulling import Pulled, order_by_patient
from referral_hub.runtime.registry import RegistryCache
from referral_hub.runtime.service import ServiceApp, attach, lazy_connection, new_broker

SWEEP_INTERVAL_SECONDS: Final = 5.0
LOAD_SECONDS: Final = 10.0
EVENTS: Final = "events"
PAGE_ACKS: Final = "page-acks"
"""The handlers' names in metrics and logs."""
NO_CHANNEL: Final = "none"
"""The channel a delivery to a member with no contact channel fails on (``notifications.handlers``)."""


def utc_now() -> datetime:
    """The production clock."""
    return datetime.now(UTC)


def create_app(
    nats_url: str,
    *,
    policy: EscalationPolicy | None = None,
    channels: ChannelSettings | None = None,
    clock: Callable[[], datetime] = utc_now,
    sweep_interval: float = SWEEP_INTERVAL_SECONDS,
) -> ServiceApp:
    """The notifications service: domain events in, pages and notifications out, acks, escalation.

    The events run on ``runtime.pulling`` (a batch pull loop, in order per patient): the hot
    path of the alert-to-page chain, where faststream's per-message subscriber costs most.
    """
    escalation = policy or EscalationPolicy()
    broker = new_broker(nats_url, SERVICE)
    effects = Effects(lazy_connection(broker))
    registry = RegistryCache()
    open_pages: KvView[Page] = KvView(Page, keep=lambda page: page.status is PageStatus.OPEN)
    silences: KvView[Silence] = KvView(Silence, SILENCE_PREFIX)
    absolute_alerts: KvView[PatientRecord] = KvView(PatientRecord, PATIENT_PREFIX, keep=lambda r: bool(r.absolute))
    pending_digests: KvView[Digest] = KvView(Digest, DIGEST_PREFIX, keep=lambda digest: bool(digest.items))
    events, acks = LateHandler(SERVICE), LateHandler(SERVICE)
    notifier: list[Notifier] = []
    started = asyncio.Event()

    async def follow(connection: Client) -> None:
        js = connection.jetstream()
        state = await js.key_value(topology.NOTIFY_STATE_KV)
        await asyncio.gather(
            registry.follow(js),
            open_pages.follow(await js.key_value(topology.PAGES_KV)),
            silences.follow(state),
            absolute_alerts.follow(state),
            pending_digests.follow(state),
        )

    async def prepare(connection: Client) -> None:
        views = (registry.loaded, open_pages.loaded, silences.loaded, absolute_alerts.loaded, pending_digests.loaded)
        try:
            await asyncio.wait_for(asyncio.gather(*(view.wait() for view in views)), LOAD_SECONDS)
        except TimeoutError as exc:
            msg = "notifications state did not load; is the hub provisioned (hubctl provision)?"
            raise HubError(msg) from exc
        js = connection.jetstream()
        state = await js.key_value(topology.NOTIFY_STATE_KV)
        stores = Stores(
            pages=KvStore(await js.key_value(topology.PAGES_KV), Page),
            patients=KvStore(state, PatientRecord),
            digests=KvStore(state, Digest),
            open_pages=open_pages,
            silences=silences,
            absolute_alerts=absolute_alerts,
            pending_digests=pending_digests,
        )
        built = Notifier(
            stores,
            registry,
            Channels(channels or ChannelSettings.from_env()),
            effects,
            Timing(escalation, clock),
        )
        notifier.append(built)
        events.bind(built.on_event)
        acks.bind(built.on_ack)
        started.set()

    async def sweep(_connection: Client) -> None:
        await started.wait()
        while True:
            await asyncio.sleep(sweep_interval)
            await notifier[0].sweep_once()

    metrics.expose_service(SERVICE, handlers=(EVENTS, PAGE_ACKS))
    metrics.expose(metrics.family_names(OWN_METRICS))
    metrics.count_from_zero(ROSTER_INVALID, FALLBACKS)
    channels_known = [*(kind.value for kind in ChannelKind), NO_CHANNEL]
    metrics.count_from_zero(metrics.DELIVERY_ATTEMPTS, channels_known)
    metrics.count_from_zero(metrics.DELIVERY_FAILURES, channels_known)
    metrics.count_from_zero(metrics.ESCALATIONS, (str(level) for level in range(len(escalation.delays))))
    attach(
        SERVICE,
        broker,
        topology.NOTIFICATIONS_ACKS,
        subscriber(SERVICE, PAGE_ACKS, effects, acks),
        "Members acknowledge pages (page.ack); escalation stops and the care team is told who.",
    )
    return ServiceApp(
        name=SERVICE,
        broker=broker,
        consumers=(topology.NOTIFICATIONS_EVENTS, topology.NOTIFICATIONS_ACKS),
        background=(
            follow,
            Pulled(SERVICE, EVENTS, topology.NOTIFICATIONS_EVENTS, order_by_patient).job(effects, events, started),
            sweep,
        ),
        before_start=(prepare,),
    )
