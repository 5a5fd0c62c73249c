"""What the notifications service does with a domain event, a ``page.ack``, and each sweep.

State lives in KV (pages, silences, per-patient absolute alerts, digests); the sweep derives
escalations and owed deliveries from it, so a restart loses no timer. Deliveries run as
background tasks, one per page level, so a slow channel never holds up the consumer. A page
level is marked delivered only after its delivery ran: a crash in between re-delivers it
(at least once), it never skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TypedDict
from uuid import UUID

import msgspec
import structlog
from prometheus_client import Counter

from referral_hub.contracts.alerts import Severity
from referral_hub.contracts.codec import SchemaViolationError, decode_hub_message, encode
from referral_hub.contracts.paging import (
    DeliveryReceipt,
    DeliveryStatus,
    PageAck,
    PageAcknowledged,
    PageSeverity,
    PageSuppressed,
    PageTriggered,
)
from referral_hub.contracts.registry import Clinic, ContactChannel, Member, roster_problems
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.notifications import oncall, paging
from referral_hub.notifications.channels import Attempt, Channels, Outbound
from referral_hub.notifications.domain import (
    SERVICE,
    AbsoluteChanged,
    CloseIntent,
    NotifyIntent,
    queued,
    route,
)
from referral_hub.notifications.paging import (
    PAGE_SEVERITY,
    EscalationPolicy,
    OpenAbsolute,
    Page,
    PageIntent,
    PageStatus,
    PatientRecord,
    Silence,
)
from referral_hub.runtime import subjects
from referral_hub.runtime.admission import RateLimiter, admit_delivery
from referral_hub.runtime.handling import Delivery, Effects, Handled
from referral_hub.runtime.inbox import Announcement, Outgoing, announce, echo
from referral_hub.runtime.kvstore import ConcurrentUpdateError, KvStore, KvView
from referral_hub.runtime.metrics import (
    ALERT_TO_PAGE_SECONDS,
    DELIVERY_ATTEMPTS,
    DELIVERY_FAILURES,
    ESCALATIONS,
    PAGE_ACK_SECONDS,
    PAGES,
    LastValue,
)
from referral_hub.runtime.registry import RegistryCache
from referral_hub.runtime.rejecting import HUB_SENDER, Refusal, derived_id, refuse

log = structlog.get_logger(__name__)
ATTEMPTS: Final = 5
"""Compare-and-set retries before a write gives up and the message is redelivered."""
REDELIVERY_GRACE: Final = timedelta(seconds=60)
"""A page level whose delivery has not been marked done after this long is delivered again."""
SILENCE_PREFIX: Final = "silence."
DIGEST_PREFIX: Final = "digest."
PATIENT_PREFIX: Final = "patient."

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
FALLBACKS: Final = ("page_everyone", "page_leads", "notify_now", "digest_now")
"""The values of ``hub_roster_invalid_total``'s ``fallback`` label."""
OWN_METRICS: Final = (ROSTER_INVALID, ROSTERS_INVALID, SWEEPS, SILENCES_ACTIVE)
"""Families this module defines (beside ``runtime.metrics``' own); the service exposes them."""


class DigestItem(msgspec.Struct, frozen=True, kw_only=True):
    """One routine notification waiting for working hours."""

    notification_id: UUID
    topic: str
    summary: str
    at: datetime


class Digest(msgspec.Struct, frozen=True, kw_only=True):
    """A clinic's routine notifications held outside working hours."""

    clinic: str
    items: tuple[DigestItem, ...] = ()


def patient_hash(patient_ref: str) -> str:
    """KV keys are subjects, so never the patient reference itself."""
    return hashlib.sha256(patient_ref.encode()).hexdigest()[:40]


def patient_key(patient_ref: str) -> str:
    """The KV key of a patient's record."""
    return PATIENT_PREFIX + patient_hash(patient_ref)


@dataclass(frozen=True)
class Stores:
    """Notifications' KV state."""

    pages: KvStore[Page]
    patients: KvStore[PatientRecord]
    digests: KvStore[Digest]
    open_pages: KvView[Page]
    silences: KvView[Silence]
    absolute_alerts: KvView[PatientRecord]
    """Read for inhibition: current within a watch round-trip. A relative page that slips
    through in that window pages (the safe direction); it is never the other way round."""
    pending_digests: KvView[Digest]


@dataclass(frozen=True)
class Addressee:
    """Whose delivery a receipt reports: one member at one page step, or an intake desk."""

    delivery_id: UUID
    seed: str
    clinic: str
    correlation_id: UUID
    member: str | None = None
    notification_id: UUID | None = None


@dataclass(frozen=True)
class Timing:
    """The escalation policy and the clock it runs on."""

    policy: EscalationPolicy
    clock: Callable[[], datetime]


class PageEnvelope(TypedDict):
    """What every event about a page says: from the hub, caused by the alert or flag, which page."""

    message_id: UUID
    occurred_at: datetime
    sender_clinic: str
    actor: str
    correlation_id: UUID
    causation_id: UUID
    page_id: UUID
    dedup_key: str
    severity: PageSeverity
    clinic: str
    patient_ref: str


def page_envelope(page: Page, message_id: UUID, at: datetime) -> PageEnvelope:
    """The shared fields of ``page.triggered`` and ``page.suppressed``."""
    intent = page.intent
    return {
        "message_id": message_id,
        "occurred_at": at,
        "sender_clinic": HUB_SENDER,
        "actor": SERVICE,
        "correlation_id": intent.about_message_id,
        "causation_id": intent.about_message_id,
        "page_id": page.page_id,
        "dedup_key": page.dedup_key,
        "severity": PAGE_SEVERITY[intent.severity],
        "clinic": intent.clinic,
        "patient_ref": intent.patient_ref,
    }


def render(page: Page, level: int) -> Outbound:
    """The page as every channel sends it."""
    intent = page.intent
    severity = PAGE_SEVERITY[intent.severity]
    ack = f"Acknowledge: hubctl page ack {page.page_id} --member <you> --clinic {intent.clinic}"
    return Outbound(
        subject=f"[{severity.upper()}] Referral Hub page for {intent.clinic}",
        text=f"{intent.summary}\n\n{ack}\n",
        payload={
            "type": "page",
            "page_id": str(page.page_id),
            "dedup_key": page.dedup_key,
            "severity": str(severity),
            "clinic": intent.clinic,
            "patient_ref": intent.patient_ref,
            "summary": intent.summary,
            "escalation_level": level,
            "ack_subject": subjects.clinic_out(intent.clinic, "page.ack"),
        },
    )


class Notifier:
    """Routes events to pages and notifications, takes acks, and escalates."""

    def __init__(
        self,
        stores: Stores,
        registry: RegistryCache,
        channels: Channels,
        effects: Effects,
        timing: Timing,
    ) -> None:
        """Everything injectable: tests pass a fake clock, a short policy and real receivers."""
        self._stores = stores
        self._registry = registry
        self._channels = channels
        self._effects = effects
        self._policy = timing.policy
        self._clock = timing.clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._limiter = RateLimiter()
        self._invalid_rosters: dict[str, tuple[str, ...]] = {}

    async def drain(self) -> None:
        """Wait for deliveries under way (tests, and a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def on_event(self, delivery: Delivery) -> Handled:
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
        now = self._clock()
        outgoing: list[Outgoing] = []
        for intent in intents:
            if isinstance(intent, PageIntent):
                outgoing += await self._page(intent, now)
            elif isinstance(intent, NotifyIntent):
                outgoing += await self._notify(intent, now)
            elif isinstance(intent, CloseIntent):
                await self._close(intent, now)
            else:
                await self._absolute(intent)
        return Handled(outcome="notified", outgoing=outgoing)

    def _suppression(
        self, intent: PageIntent, record: PatientRecord | None, now: datetime
    ) -> tuple[str, UUID | None] | None:
        if intent.severity is Severity.ABSOLUTE:
            return None
        silence = next((s for s in self._stores.silences.values() if s.matches(intent, now)), None)
        if silence is not None:
            return (
                f"silenced until {silence.ends_at.isoformat(timespec='minutes')}: {silence.reason}",
                silence.silence_id,
            )
        if record is not None and record.inhibits(intent):
            return "inhibited by an absolute alert in force for the same patient and modality", None
        return None

    async def _page(self, intent: PageIntent, now: datetime) -> list[Outgoing]:
        key = str(paging.page_id_for(intent.dedup_key))
        for _ in range(ATTEMPTS):
            stored = await self._stores.pages.load(key)
            existing, revision = stored if stored is not None else (None, None)
            record = self._stores.absolute_alerts.get(patient_hash(intent.patient_ref))
            opened = paging.open_page(existing, intent, now, self._policy, self._suppression(intent, record, now))
            if existing is not None and opened.outcome == "deduplicated" and existing.intent == intent:
                return []
            try:
                saved = await self._stores.pages.save(key, opened.page, revision)
            except ConcurrentUpdateError:
                continue
            PAGES.labels(opened.outcome).inc()
            if opened.deliver:
                self._dispatch(opened.page, saved)
            if opened.page.status is PageStatus.SUPPRESSED:
                return [self._suppressed(opened.page)]
            return []
        msg = f"page {key} kept changing under us"
        raise ConcurrentUpdateError(msg)

    @staticmethod
    def _suppressed(page: Page) -> Outgoing:
        event = PageSuppressed(
            **page_envelope(page, derived_id(f"{page.page_id}/{page.generation}", "page-suppressed"), page.opened_at),
            reason=page.suppressed_reason,
            silence_id=page.silence_id,
        )
        return Outgoing(subjects.domain_event("page.suppressed"), encode(event), str(event.message_id))

    def _dispatch(self, page: Page, revision: int | None = None) -> None:
        self._spawn(self._deliver_page(page, revision))

    async def _deliver_page(self, page: Page, revision: int | None) -> None:
        """Page this level's targets on their channels, then mark the level delivered.

        The ``page.triggered`` records are stored while the channels are tried, not before:
        the page must not wait on the audit trail's write.
        """
        clinic = self._registry.get(page.intent.clinic)
        now = self._clock()
        targets = (
            oncall.page_targets(clinic, page.level, now, absolute=page.intent.severity is Severity.ABSOLUTE)
            if clinic is not None
            else oncall.Targets([])
        )
        if clinic is not None and targets.problems:
            fallback = "page_everyone" if targets.every_channel else "page_leads"
            self._roster_invalid(clinic, targets.problems, fallback, page_id=str(page.page_id), level=page.level)
        if not targets.members:
            log.warning("page has nobody to reach", page_id=str(page.page_id), clinic=page.intent.clinic)
        outbound = render(page, page.level)
        recorded = self._effects.apply([self._triggered(page, member) for member in targets.members])
        first_attempt = asyncio.Event() if (page.level, page.cycle) == (0, 0) else None

        async def send(member: Member, seed: str, channels: tuple[ContactChannel, ...]) -> None:
            # The id is derived from the page step and the member, so a redelivered step (after a
            # crash) carries the same webhook-id / Message-ID / Idempotency-Key as the first try.
            notification_id = derived_id(seed, "notification")
            to = Addressee(
                page.page_id, seed, page.intent.clinic, page.intent.about_message_id, member.id, notification_id
            )
            addressed = dataclasses.replace(outbound, notification_id=str(notification_id))

            async def report(attempt: Attempt) -> None:
                if first_attempt is not None and not first_attempt.is_set():
                    first_attempt.set()
                    ALERT_TO_PAGE_SECONDS.observe(max((self._clock() - page.intent.source_at).total_seconds(), 0.0))
                await self._receipt(to, attempt)

            if not channels:
                await self._receipt(to, Attempt("none", 0, DeliveryStatus.FAILED, "no contact channel"))
                return
            await self._channels.deliver(channels, addressed, report)

        async def reach(member: Member) -> None:
            seed = f"{page.page_id}/{page.step}/{member.id}"
            if not targets.every_channel or len(member.channels) < 2:  # noqa: PLR2004 - one channel needs no fan-out
                await send(member, seed, member.channels)
                return
            await asyncio.gather(
                *(
                    send(member, seed if index == 0 else f"{seed}/{index}", (channel,))
                    for index, channel in enumerate(member.channels)
                )
            )

        await asyncio.gather(recorded, *(reach(member) for member in targets.members))
        await self._mark_delivered(page, revision)

    def _roster_invalid(self, clinic: Clinic, problems: tuple[str, ...], fallback: str, **fields: object) -> None:
        """Count and log a page or notification that had to work around ``clinic``'s roster."""
        ROSTER_INVALID.labels(fallback).inc()
        log.error(
            "clinic roster cannot be followed; worked around it",
            clinic=clinic.id,
            problems=list(problems),
            fallback=fallback,
            **fields,
        )

    def _triggered(self, page: Page, member: Member) -> Outgoing:
        intent = page.intent
        event = PageTriggered(
            **page_envelope(
                page, derived_id(f"{page.page_id}/{page.step}/{member.id}", "page-triggered"), self._clock()
            ),
            member=member.id,
            escalation_level=page.level,
            cycle=page.cycle,
            about_message_id=intent.about_message_id,
            summary=intent.summary,
        )
        return Outgoing(subjects.domain_event("page.triggered"), encode(event), str(event.message_id))

    async def _receipt(self, to: Addressee, attempt: Attempt) -> None:
        """Publish one attempt's ``delivery.receipt`` (audited) and count attempts and failures."""
        DELIVERY_ATTEMPTS.labels(attempt.channel).inc()
        if attempt.status is DeliveryStatus.FAILED:
            DELIVERY_FAILURES.labels(attempt.channel).inc()
        receipt = DeliveryReceipt(
            message_id=derived_id(f"{to.seed}/{attempt.channel}/{attempt.attempt}", "receipt"),
            occurred_at=self._clock(),
            sender_clinic=HUB_SENDER,
            actor=SERVICE,
            correlation_id=to.correlation_id,
            causation_id=to.correlation_id,
            page_id=to.delivery_id,
            channel=attempt.channel,
            status=attempt.status,
            attempt=attempt.attempt,
            error=attempt.error[:200],
            clinic=to.clinic,
            member=to.member,
            notification_id=to.notification_id,
        )
        await self._effects.apply(
            [Outgoing(subjects.domain_event("delivery.receipt"), encode(receipt), str(receipt.message_id))]
        )

    async def _mark_delivered(self, page: Page, revision: int | None) -> None:
        """Record that this step's delivery ran; one write when nothing changed the page meanwhile."""
        key = str(page.page_id)
        if revision is not None:
            with contextlib.suppress(ConcurrentUpdateError):
                await self._stores.pages.save(key, msgspec.structs.replace(page, delivered_step=page.step), revision)
                return
        for _ in range(ATTEMPTS):
            stored = await self._stores.pages.load(key)
            if stored is None or stored[0].step != page.step or stored[0].delivered_step == page.step:
                return
            try:
                await self._stores.pages.save(
                    key, msgspec.structs.replace(stored[0], delivered_step=page.step), stored[1]
                )
            except ConcurrentUpdateError:
                continue
            return

    async def _notify(self, intent: NotifyIntent, now: datetime) -> list[Outgoing]:
        clinic = self._registry.get(intent.clinic)
        if clinic is None:
            return []
        deferred_until, problems = oncall.routine_deferral(clinic, now)
        if problems:
            self._roster_invalid(clinic, problems, "notify_now", topic=intent.topic)
        if deferred_until is None:
            notification = queued(intent, now, None)
            self._spawn(
                self._deliver_routine(intent.clinic, intent.topic, intent.summary, notification.notification_id)
            )
        else:
            notification = queued(intent, now, deferred_until)
            item = DigestItem(
                notification_id=notification.notification_id, topic=intent.topic, summary=intent.summary, at=now
            )
            await self._add_to_digest(intent.clinic, item)
        return [
            Outgoing(subjects.domain_event("notification.queued"), encode(notification), str(notification.message_id))
        ]

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_routine(self, clinic_id: str, topic: str, text: str, notification_id: UUID) -> None:
        clinic = self._registry.get(clinic_id)
        if clinic is None or not clinic.intake_channels:
            return
        outbound = Outbound(
            subject=f"Referral Hub: {topic}",
            text=text,
            payload={"type": "notification", "topic": topic, "clinic": clinic_id, "text": text},
            notification_id=str(notification_id),
        )

        desk = Addressee(notification_id, str(notification_id), clinic_id, notification_id, None, notification_id)

        async def report(attempt: Attempt) -> None:
            await self._receipt(desk, attempt)

        await self._channels.deliver(clinic.intake_channels, outbound, report)

    async def _add_to_digest(self, clinic: str, item: DigestItem) -> None:
        def add(digest: Digest | None) -> Digest | None:
            current = digest or Digest(clinic=clinic)
            if any(i.notification_id == item.notification_id for i in current.items):
                return None
            return msgspec.structs.replace(current, items=(*current.items, item))

        await self._stores.digests.change(DIGEST_PREFIX + clinic, add, ATTEMPTS)

    async def _close(self, intent: CloseIntent, now: datetime) -> None:
        for clinic in self._registry.clinics():
            key = str(paging.page_id_for(f"alert:{intent.alert_id}:{clinic.id}"))
            await self._stores.pages.change(
                key, lambda page: paging.close_for_resolved_alert(page, now) if page else None, ATTEMPTS
            )

    async def _absolute(self, intent: AbsoluteChanged) -> None:
        def record(current: PatientRecord | None) -> PatientRecord | None:
            absolute = current.absolute if current is not None else ()
            kept = tuple(a for a in absolute if a.alert_id != intent.alert_id)
            if intent.in_force:
                kept = (*kept, OpenAbsolute(alert_id=intent.alert_id, modalities=intent.modalities))
            return PatientRecord(absolute=kept) if kept != absolute else None

        await self._stores.patients.change(patient_key(intent.patient_ref), record, ATTEMPTS)

    async def on_ack(self, delivery: Delivery) -> Handled:
        """A member acknowledges a page: escalation stops and the care team hears who."""
        admitted = admit_delivery(delivery, self._registry.get, self._limiter)
        if isinstance(admitted, Refusal):
            return self._refuse(delivery, admitted, None)
        command = admitted.command
        if not isinstance(command, PageAck):
            return self._refuse(
                delivery,
                Refusal(RejectionCode.UNSUPPORTED_MESSAGE_TYPE, "only page.ack is taken here"),
                command.message_id,
            )
        key = str(command.page_id)
        now = self._clock()
        for _ in range(ATTEMPTS):
            stored = await self._stores.pages.load(key)
            page, revision = stored if stored is not None else (None, None)
            if page is not None and page.acked_message_id == command.message_id:
                return Handled(outcome="replayed", outgoing=announce([self._acknowledged(page, command)]))
            decision = paging.acknowledge(page, command, admitted.sender, now)
            if isinstance(decision, Refusal):
                return self._refuse(delivery, decision, command.message_id)
            acked = msgspec.structs.replace(decision, acked_message_id=command.message_id)
            try:
                await self._stores.pages.save(key, acked, revision)
            except ConcurrentUpdateError:
                continue
            PAGE_ACK_SECONDS.observe(max((now - acked.opened_at).total_seconds(), 0.0))
            return Handled(outcome="accepted", outgoing=announce([self._acknowledged(acked, command)]))
        msg = f"page {key} kept changing under us"
        raise ConcurrentUpdateError(msg)

    @staticmethod
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

    def _refuse(self, delivery: Delivery, refusal: Refusal, message_id: UUID | None) -> Handled:
        return refuse(SERVICE, delivery, refusal, message_id, lambda clinic: self._registry.get(clinic) is not None)

    async def sweep_once(self) -> int:
        """Escalate due pages, re-deliver owed levels, and send digests that are due; returns actions."""
        now = self._clock()
        actions = 0
        for page in self._stores.open_pages.values():
            escalated = paging.escalate(page, now, self._policy)
            if escalated is not None:
                try:
                    saved = await self._stores.pages.save(str(page.page_id), escalated, await self._revision(page))
                except ConcurrentUpdateError:
                    continue
                if escalated.next_at is not None or escalated.level != page.level:
                    ESCALATIONS.labels(str(escalated.level)).inc()
                    self._dispatch(escalated, saved)
                actions += 1
            elif paging.delivery_owed(page, now, REDELIVERY_GRACE):
                self._dispatch(page)
                actions += 1
        for digest in self._stores.pending_digests.values():
            clinic = self._registry.get(digest.clinic)
            if clinic is None:
                continue
            deferred_until, problems = oncall.routine_deferral(clinic, now)
            if deferred_until is None:
                sent = await self._send_digest(digest)
                if sent and problems:
                    self._roster_invalid(clinic, problems, "digest_now")
                actions += sent
        self._check_rosters()
        SILENCES_ACTIVE.set(sum(1 for silence in self._stores.silences.values() if silence.in_force(now)))
        SWEEPS.inc()
        return actions

    def _check_rosters(self) -> None:
        """Count the clinics whose roster cannot be followed; log each as it breaks and as it is mended."""
        invalid = {}
        for clinic in self._registry.clinics():
            problems = tuple(roster_problems(clinic))
            if problems:
                invalid[clinic.id] = problems
                if self._invalid_rosters.get(clinic.id) != problems:
                    log.error("clinic roster cannot be followed", clinic=clinic.id, problems=list(problems))
        for mended in self._invalid_rosters.keys() - invalid.keys():
            log.info("clinic roster can be followed again", clinic=mended)
        self._invalid_rosters = invalid
        ROSTERS_INVALID.set(len(invalid))

    async def _revision(self, page: Page) -> int | None:
        stored = await self._stores.pages.load(str(page.page_id))
        if stored is None or stored[0] != page:
            raise ConcurrentUpdateError(str(page.page_id))
        return stored[1]

    async def _send_digest(self, digest: Digest) -> int:
        key = DIGEST_PREFIX + digest.clinic
        stored = await self._stores.digests.load(key)
        if stored is None or not stored[0].items:
            return 0
        items = stored[0].items
        try:
            await self._stores.digests.save(key, Digest(clinic=digest.clinic), stored[1])
        except ConcurrentUpdateError:
            return 0
        text = "\n".join(f"- {i.at.isoformat(timespec='minutes')} {i.topic}: {i.summary}" for i in items)
        digest_id = derived_id(f"{digest.clinic}/{items[0].notification_id}/{len(items)}", "digest")
        self._spawn(self._deliver_routine(digest.clinic, "digest", f"{len(items)} notifications:\n{text}", digest_id))
        return 1
