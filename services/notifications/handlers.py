"""What the notifications service does with a domain event and with a ``page.ack``.

Two tables dispatch by message type: :data:`INTENT_HANDLERS` (what routing asked for, per
domain event) and :data:`COMMAND_HANDLERS` (what a clinic sends). Each handler is a few lines:
read, let the pure core (``domain``, ``paging``, ``oncall``, ``rendering``) decide, write
with compare-and-set, and hand deliveries to :class:`~referral_hub.notifications.dispatch.Dispatcher`.

State lives in KV (``adapters``), so a restart loses no timer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import msgspec

from referral_hub.contracts.base import Message
from referral_hub.contracts.codec import SchemaViolationError, decode_hub_message
from referral_hub.contracts.paging import PageAck, PageAcknowledged
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.notifications import oncall, page_rules, rendering
from referral_hub.notifications.adapters import (
    SILENCE_PREFIX,
    Stores,
    digest_key,
    page_key,
    patient_hash,
    patient_key,
)
from referral_hub.notifications.digests import DigestItem, with_item
from referral_hub.notifications.dispatch import Clinics, Dispatcher, as_outgoing, roster_invalid
from referral_hub.notifications.domain import SERVICE, AbsoluteChanged, CloseIntent, Intent, NotifyIntent, queued, route
from referral_hub.notifications.page_rules import (
    EscalationPolicy,
    OpenAbsolute,
    Page,
    PageIntent,
    PageStatus,
    PatientRecord,
)
from referral_hub.runtime.hosting.metrics import PAGE_ACK_SECONDS, PAGES
from referral_hub.runtime.jetstream.kvstore import Decided, changing, update_with_retry
from referral_hub.runtime.messaging.ack_policy import Handled
from referral_hub.runtime.messaging.admission import RateLimiter, admit_delivery
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.outgoing import Announcement, Outgoing, announce, echo
from referral_hub.runtime.messaging.refusal_outputs import refuse
from referral_hub.runtime.messaging.refusals import Refusal

__all__ = ["COMMAND_HANDLERS", "INTENT_HANDLERS", "SILENCE_PREFIX", "Hub", "Timing", "on_ack", "on_event"]


@dataclass(frozen=True)
class Timing:
    """The escalation policy and the clock it runs on."""

    policy: EscalationPolicy
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class Hub:
    """What every handler works with: state, the registry, deliveries, and time."""

    stores: Stores
    registry: Clinics
    deliverer: Dispatcher
    timing: Timing
    limiter: RateLimiter = field(default_factory=RateLimiter)
    digest_writes: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    """One writer at a time per clinic digest in this process: outside working hours every
    routine event of a clinic appends to one key, and a batch of them racing each other would
    exhaust the compare-and-set rounds. Replicas still meet at the compare-and-set."""


async def open_page(intent: PageIntent, hub: Hub, now: datetime) -> list[Outgoing]:
    """Open (or re-open, or deduplicate) the page; deliver it unless it was suppressed."""
    views = hub.stores.views

    def decide(existing: Page | None) -> Decided[Page, page_rules.Opened | None]:
        record = views.absolute_alerts.get(patient_hash(intent.patient_ref))
        quiet = page_rules.suppression(intent, views.silences.values(), record, now)
        opened = page_rules.open_page(existing, intent, now, hub.timing.policy, quiet)
        if existing is not None and opened.outcome == "deduplicated" and existing.intent == intent:
            return Decided(None, None)
        return Decided(opened.page, opened)

    updated = await update_with_retry(hub.stores.pages, page_key(page_rules.page_id_for(intent.dedup_key)), decide)
    opened = updated.result
    if opened is None:
        return []
    PAGES.labels(opened.outcome).inc()
    if opened.deliver:
        hub.deliverer.page(opened.page, updated.revision)
    if opened.page.status is PageStatus.SUPPRESSED:
        return [as_outgoing(rendering.suppressed(opened.page), "page.suppressed")]
    return []


async def notify(intent: NotifyIntent, hub: Hub, now: datetime) -> list[Outgoing]:
    """Send a routine notification now, or hold it in the clinic's digest outside working hours."""
    clinic = hub.registry.get(intent.clinic)
    if clinic is None:
        return []
    deferred_until, problems = oncall.routine_deferral(clinic, now)
    if problems:
        roster_invalid(clinic, problems, "notify_now", topic=intent.topic)
    notification = queued(intent, now, deferred_until)
    if deferred_until is None:
        hub.deliverer.routine(intent.clinic, intent.topic, intent.summary, notification.notification_id)
    else:
        item = DigestItem(
            notification_id=notification.notification_id, topic=intent.topic, summary=intent.summary, at=now
        )
        held = changing(lambda digest: with_item(digest, intent.clinic, item))
        async with hub.digest_writes[intent.clinic]:
            await update_with_retry(hub.stores.digests, digest_key(intent.clinic), held)
    return [as_outgoing(notification, "notification.queued")]


async def close(intent: CloseIntent, hub: Hub, now: datetime) -> list[Outgoing]:
    """The alert was resolved: each clinic's open page about it stops escalating."""

    def resolved(page: Page | None) -> Page | None:
        return page_rules.close_for_resolved_alert(page, now) if page else None

    for clinic in hub.registry.clinics():
        key = page_key(page_rules.page_id_for(f"alert:{intent.alert_id}:{clinic.id}"))
        await update_with_retry(hub.stores.pages, key, changing(resolved))
    return []


async def record_absolute(intent: AbsoluteChanged, hub: Hub, _now: datetime) -> list[Outgoing]:
    """Keep the patient's absolute alerts in force current: they inhibit relative pages."""

    def record(current: PatientRecord | None) -> PatientRecord | None:
        absolute = current.absolute if current is not None else ()
        kept = tuple(a for a in absolute if a.alert_id != intent.alert_id)
        if intent.in_force:
            kept = (*kept, OpenAbsolute(alert_id=intent.alert_id, modalities=intent.modalities))
        return PatientRecord(absolute=kept) if kept != absolute else None

    await update_with_retry(hub.stores.patients, patient_key(intent.patient_ref), changing(record))
    return []


IntentHandler = Callable[[Any, Hub, datetime], Awaitable[list[Outgoing]]]
INTENT_HANDLERS: Final[Mapping[type[Intent], IntentHandler]] = {
    PageIntent: open_page,
    NotifyIntent: notify,
    CloseIntent: close,
    AbsoluteChanged: record_absolute,
}
"""What routing asked for, to the handler that carries it out."""


async def on_event(hub: Hub, delivery: Incoming) -> Handled:
    """Route one domain event.

    Domain events are written by the hub itself, so one that fails to decode is a hub bug:
    it is acknowledged as ``undecodable`` (visible in metrics and in the audit log, which
    records the same stored message) rather than redelivered forever.
    """
    try:
        event = decode_hub_message(delivery.data)
    except SchemaViolationError as exc:
        return Handled(outcome="undecodable", log_fields={"error": str(exc)[:300]})
    intents = route(event)
    if not intents:
        return Handled(outcome="ignored")
    now = hub.timing.clock()
    outgoing: list[Outgoing] = []
    for intent in intents:
        outgoing += await INTENT_HANDLERS[type(intent)](intent, hub, now)
    return Handled(outcome="notified", outgoing=outgoing)


def _refuse(hub: Hub, delivery: Incoming, refusal: Refusal, message_id: UUID | None) -> Handled:
    return refuse(SERVICE, delivery, refusal, message_id, lambda clinic: hub.registry.get(clinic) is not None)


def _acknowledged(page: Page, command: PageAck) -> Announcement:
    event = PageAcknowledged(
        **echo(command, "page-acknowledged"),
        page_id=page.page_id,
        member=command.member,
        member_clinic=command.sender_clinic,
        dedup_key=page.dedup_key,
        paged_clinic=page.intent.clinic,
    )
    clinics = tuple(dict.fromkeys((*page.intent.notify_clinics, page.intent.clinic)))
    return Announcement(event, "page.acknowledged", clinics)


async def acknowledge(command: PageAck, hub: Hub, delivery: Incoming, sender: Clinic) -> Handled:
    """A member acknowledges a page: escalation stops and the care team hears who."""
    now = hub.timing.clock()

    def decide(page: Page | None) -> Decided[Page, Page | page_rules.AckRefused]:
        if page is not None and page_rules.is_replayed_ack(page, command):
            return Decided(None, page)  # this very ack, redelivered: nothing to write
        decision = page_rules.acknowledge(page, command, sender, now)
        if isinstance(decision, page_rules.AckRefused):
            return Decided(None, decision)
        acked = msgspec.structs.replace(decision, acked_message_id=command.message_id)
        return Decided(acked, acked)

    updated = await update_with_retry(hub.stores.pages, page_key(command.page_id), decide)
    result = updated.result
    if isinstance(result, page_rules.AckRefused):
        return _refuse(hub, delivery, Refusal(result.code, result.reason), command.message_id)
    if updated.revision is None:
        return Handled(outcome="replayed", outgoing=announce([_acknowledged(result, command)]))
    PAGE_ACK_SECONDS.observe(max((now - result.opened_at).total_seconds(), 0.0))
    return Handled(outcome="accepted", outgoing=announce([_acknowledged(result, command)]))


CommandHandler = Callable[[Any, Hub, Incoming, Clinic], Awaitable[Handled]]
COMMAND_HANDLERS: Final[Mapping[type[Message], CommandHandler]] = {PageAck: acknowledge}
"""The clinic commands this service takes, to their handlers; any other is refused."""


async def on_ack(hub: Hub, delivery: Incoming) -> Handled:
    """Admit a clinic's command (rate, contract, sender), then hand it to its handler."""
    admitted = admit_delivery(delivery, hub.registry.get, hub.limiter)
    if isinstance(admitted, Refusal):
        return _refuse(hub, delivery, admitted, None)
    command = admitted.command
    handler = COMMAND_HANDLERS.get(type(command))
    if handler is None:
        refusal = Refusal(RejectionCode.UNSUPPORTED_MESSAGE_TYPE, "only page.ack is taken here")
        return _refuse(hub, delivery, refusal, command.message_id)
    return await handler(command, hub, delivery, admitted.sender)
