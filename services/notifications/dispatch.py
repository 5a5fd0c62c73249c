"""Delivery of pages and routine notifications: background tasks, receipts, and the delivered mark.

Deliveries run as background tasks, one per page level, so a slow channel never holds up the
consumer. A page level is marked delivered only after its delivery ran: a crash in between
re-delivers it (at least once, ``paging.delivery_owed``), it never skips it. Every attempt is
published as a ``delivery.receipt`` and so reaches the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import msgspec
import structlog

from referral_hub.contracts.alerts import Severity
from referral_hub.contracts.base import Message
from referral_hub.contracts.codec import encode
from referral_hub.contracts.paging import DeliveryStatus
from referral_hub.contracts.registry import Clinic, ContactChannel, Member
from referral_hub.notifications import oncall, rendering
from referral_hub.notifications.adapters import page_key
from referral_hub.notifications.channels import Report
from referral_hub.notifications.metrics import NO_CHANNEL, ROSTER_INVALID
from referral_hub.notifications.page_rules import Page
from referral_hub.notifications.rendering import Addressee, Attempt, Outbound
from referral_hub.runtime.hosting.metrics import ALERT_TO_PAGE_SECONDS, DELIVERY_ATTEMPTS, DELIVERY_FAILURES
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.jetstream.kvstore import ConcurrentUpdateError, Records, changing, update_with_retry
from referral_hub.runtime.messaging.ids import derived_id
from referral_hub.runtime.messaging.outgoing import Outgoing, ToInbox

log = structlog.get_logger(__name__)


class Publisher(Protocol):
    """Publishes a handler's outputs (``runtime.messaging.ack_policy.Effects``, or a fake)."""

    async def apply(self, outgoing: Sequence[Outgoing | ToInbox]) -> None:
        """Publish everything and wait for every ack."""
        ...


class Sender(Protocol):
    """Sends one rendered message over a member's channels (``channels.Channels``, or a fake)."""

    async def deliver(self, channels: tuple[ContactChannel, ...], outbound: Outbound, report: Report) -> bool:
        """Try each channel in order; report every attempt; ``True`` once one took it."""
        ...


class Clinics(Protocol):
    """The registry as the service reads it (``runtime.jetstream.registry_cache.RegistryCache``)."""

    def get(self, clinic_id: str) -> Clinic | None:
        """The clinic, if registered."""
        ...

    def clinics(self) -> list[Clinic]:
        """Every registered clinic."""
        ...


def as_outgoing(event: Message, event_type: str) -> Outgoing:
    """A domain event as published, de-duplicated by its message id."""
    return Outgoing(subjects.domain_event(event_type), encode(event), str(event.message_id))


def roster_invalid(clinic: Clinic, problems: tuple[str, ...], fallback: str, **fields: object) -> None:
    """Count and log a page or notification that had to work around ``clinic``'s roster."""
    ROSTER_INVALID.labels(fallback).inc()
    log.error(
        "clinic roster cannot be followed; worked around it",
        clinic=clinic.id,
        problems=list(problems),
        fallback=fallback,
        **fields,
    )


def _mark(step: str) -> Callable[[Page | None], Page | None]:
    """The page with ``step`` marked delivered, unless the page moved on or is marked already."""

    def mark(page: Page | None) -> Page | None:
        if page is None or page.step != step or page.delivered_step == step:
            return None
        return msgspec.structs.replace(page, delivered_step=step)

    return mark


class Dispatcher:
    """Runs deliveries in the background and reports every attempt."""

    def __init__(
        self,
        pages: Records[Page],
        registry: Clinics,
        channels: Sender,
        effects: Publisher,
        clock: Callable[[], datetime],
    ) -> None:
        """Everything injectable: tests pass fakes or real receivers, and a fake clock."""
        self._pages = pages
        self._registry = registry
        self._channels = channels
        self._effects = effects
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for deliveries under way (tests, and a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def page(self, page: Page, revision: int | None = None) -> None:
        """Deliver this step of ``page`` in the background; ``revision`` is the one just written."""
        self._spawn(self._deliver_page(page, revision))

    def routine(self, clinic: str, topic: str, text: str, notification_id: UUID) -> None:
        """Send a routine notification (or a digest) to ``clinic``'s intake channels in the background."""
        self._spawn(self._deliver_routine(clinic, topic, text, notification_id))

    def _targets(self, page: Page) -> oncall.Targets:
        clinic = self._registry.get(page.intent.clinic)
        if clinic is None:
            return oncall.Targets([])
        absolute = page.intent.severity is Severity.ABSOLUTE
        targets = oncall.page_targets(clinic, page.level, self._clock(), absolute=absolute)
        if targets.problems:
            fallback = "page_everyone" if targets.every_channel else "page_leads"
            roster_invalid(clinic, targets.problems, fallback, page_id=str(page.page_id), level=page.level)
        return targets

    async def _deliver_page(self, page: Page, revision: int | None) -> None:
        """Page this level's targets on their channels, then mark the level delivered.

        The ``page.triggered`` records are stored while the channels are tried, not before:
        the page must not wait on the audit trail's write.
        """
        targets = self._targets(page)
        if not targets.members:
            log.warning("page has nobody to reach", page_id=str(page.page_id), clinic=page.intent.clinic)
        at = self._clock()
        recorded = self._effects.apply(
            [as_outgoing(rendering.triggered(page, member.id, at), "page.triggered") for member in targets.members]
        )
        first_attempt = asyncio.Event() if (page.level, page.cycle) == (0, 0) else None
        outbound = rendering.render(page, page.level)

        def timed(to: Addressee) -> Report:
            async def report(attempt: Attempt) -> None:
                if first_attempt is not None and not first_attempt.is_set():
                    first_attempt.set()
                    ALERT_TO_PAGE_SECONDS.observe(max((self._clock() - page.intent.source_at).total_seconds(), 0.0))
                await self._receipt(to, attempt)

            return report

        async def send(member: Member, seed: str, channels: tuple[ContactChannel, ...]) -> None:
            # The id is derived from the page step and the member, so a redelivered step (after a
            # crash) carries the same webhook-id / Message-ID / Idempotency-Key as the first try.
            notification_id = derived_id(seed, "notification")
            intent = page.intent
            to = Addressee(page.page_id, seed, intent.clinic, intent.about_message_id, member.id, notification_id)
            if not channels:
                await self._receipt(to, Attempt(NO_CHANNEL, 0, DeliveryStatus.FAILED, "no contact channel"))
                return
            addressed = dataclasses.replace(outbound, notification_id=str(notification_id))
            await self._channels.deliver(channels, addressed, timed(to))

        async def reach(member: Member) -> None:
            seed = rendering.member_seed(page, member.id)
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

    async def _deliver_routine(self, clinic_id: str, topic: str, text: str, notification_id: UUID) -> None:
        clinic = self._registry.get(clinic_id)
        if clinic is None or not clinic.intake_channels:
            return
        desk = Addressee(notification_id, str(notification_id), clinic_id, notification_id, None, notification_id)

        async def report(attempt: Attempt) -> None:
            await self._receipt(desk, attempt)

        await self._channels.deliver(
            clinic.intake_channels, rendering.routine(clinic_id, topic, text, notification_id), report
        )

    async def _receipt(self, to: Addressee, attempt: Attempt) -> None:
        """Publish one attempt's ``delivery.receipt`` (audited) and count attempts and failures."""
        DELIVERY_ATTEMPTS.labels(attempt.channel).inc()
        if attempt.status is DeliveryStatus.FAILED:
            DELIVERY_FAILURES.labels(attempt.channel).inc()
        await self._effects.apply([as_outgoing(rendering.receipt(to, attempt, self._clock()), "delivery.receipt")])

    async def _mark_delivered(self, page: Page, revision: int | None) -> None:
        """Record that this step's delivery ran; one write when nothing changed the page meanwhile.

        A page that keeps changing is left unmarked: the sweep delivers the step again after
        its grace, which is the safe direction.
        """
        known = (page, revision) if revision is not None else None
        with contextlib.suppress(ConcurrentUpdateError):
            await update_with_retry(self._pages, page_key(page.page_id), changing(_mark(page.step)), known=known)
