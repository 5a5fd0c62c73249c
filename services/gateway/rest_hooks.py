"""Rest-hook delivery: at least once, in inbox order, resumed from JetStream after any crash.

Each subscription has one deliverer at a time across every gateway replica: its record holds
a lease (owner and expiry), taken and renewed only by a compare-and-set write of the record's
KV revision, so two replicas can never both believe they hold it. A replica that dies (even
by ``kill -9``) stops renewing; another (or the restarted one) takes the lease once it has
expired and carries on from the record's ``delivered_through``.

Progress is written after each notification the receiver acknowledged (2xx), in the same
write that renews the lease. A crash between the receiver's 2xx and that write sends that
one notification again: at least once, never a gap, never out of order. No write order can
close that window (the POST and the KV write cannot be one step, and a record saved before
the POST would lose the event when the POST then fails), so a resend is made identical to
the first sending instead: same event number, same status parameters, same status entry
``fullUrl``; only ``Bundle.timestamp`` differs. A receiver that keeps the highest number it
has processed and drops anything at or below it sees each event exactly once
(docs/decisions/0004-rest-hook-at-least-once.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import msgspec
import nats.errors
import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from referral_hub.client import InboxItem
from referral_hub.errors import HubError
from referral_hub.gateway import subscriptions, task_views
from referral_hub.gateway.adapters import ClinicConnections, ClinicLink
from referral_hub.gateway.subscriptions import SubscriptionRecord
from referral_hub.runtime.hosting.web_metrics import REST_HOOK_DELIVERIES
from referral_hub.runtime.jetstream.kvstore import KvView

log = structlog.get_logger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per notification would drown the gateway's own
LEASE_SECONDS: Final = 3.0
"""How long a deliverer's claim lasts without renewal: the longest a crashed replica delays delivery."""
SCAN_SECONDS: Final = 0.5
HTTP_TIMEOUT_SECONDS: Final = 5.0
DELIVERING: Final = frozenset({"requested", "active", "error"})
_decoder: Final = msgspec.json.Decoder(SubscriptionRecord)


class LeaseLostError(HubError):
    """Another deliverer holds the subscription now; this one stops."""


class RestHooks:
    """Runs one worker per subscription whose lease this process holds or can take."""

    def __init__(self, kv: KeyValue, connections: ClinicConnections, fhir_base: str) -> None:
        """Deliver the records in ``kv`` through the clinics' own connections."""
        self.owner = uuid.uuid4().hex
        self.kv = kv
        self.connections = connections
        self.fhir_base = fhir_base
        self.view: KvView[SubscriptionRecord] = KvView(SubscriptionRecord, prefix="sub.")
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS)
        self.kicked = asyncio.Event()

    async def run(self) -> None:
        """Forever: watch the subscriptions and start a worker for each one free to take."""
        follower = asyncio.create_task(self.view.follow(self.kv), name="gateway-subscriptions-watch")
        try:
            while True:
                now = time.time()
                for record in self.view.values():
                    running = self.workers.get(record.id)
                    free = record.lease_owner in {"", self.owner} or record.lease_until < now
                    if record.status in DELIVERING and free and (running is None or running.done()):
                        self.workers[record.id] = asyncio.create_task(self._work(record.id), name=f"hook-{record.id}")
                self.kicked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.kicked.wait(), SCAN_SECONDS)
        finally:
            follower.cancel()
            for task in (follower, *self.workers.values()):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.http.aclose()

    def kick(self, record: SubscriptionRecord) -> None:
        """A subscription was just made or changed here: look at it now, not at the next scan."""
        self.view.apply(subscriptions.key(record.id), msgspec.json.encode(record))
        self.kicked.set()

    async def _load(self, subscription_id: str) -> tuple[SubscriptionRecord, int] | None:
        try:
            entry = await self.kv.get(subscriptions.key(subscription_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return _decoder.decode(entry.value), entry.revision or 0

    async def _save(self, record: SubscriptionRecord, revision: int) -> tuple[SubscriptionRecord, int]:
        """Write with our lease renewed, only over ``revision``; a lost race raises :class:`LeaseLostError`."""
        leased = msgspec.structs.replace(record, lease_owner=self.owner, lease_until=time.time() + LEASE_SECONDS)
        try:
            new_revision = await self.kv.update(
                subscriptions.key(record.id), msgspec.json.encode(leased), last=revision
            )
        except KeyWrongLastSequenceError as exc:
            msg = "the subscription changed under us"
            raise LeaseLostError(msg) from exc
        return leased, new_revision

    async def _work(self, subscription_id: str) -> None:
        last_sent = time.monotonic()
        while True:
            try:
                loaded = await self._load(subscription_id)
                if loaded is None or loaded[0].status not in DELIVERING:
                    return
                record, revision = loaded
                now = time.time()
                if record.lease_owner not in {"", self.owner} and record.lease_until > now:
                    return
                record, revision = await self._save(record, revision)
                if record.retry_at > now:
                    await asyncio.sleep(min(record.retry_at - now, LEASE_SECONDS / 2))
                    continue
                if record.status == "requested":
                    await self._handshake(record, revision)
                    last_sent = time.monotonic()
                    continue
                link = await self.connections.link(record.clinic)
                sent = await self._deliver_stored(link, record, revision)
                if sent:
                    last_sent = time.monotonic()
                    continue
                if time.monotonic() - last_sent >= record.heartbeat_seconds:
                    await self._heartbeat(record, revision)
                    last_sent = time.monotonic()
                    continue
                wait = min(LEASE_SECONDS / 2, max(0.0, record.heartbeat_seconds - (time.monotonic() - last_sent)))
                await link.wait_until(_grown_past(link, record.delivered_through), wait)
            except LeaseLostError:
                continue
            except (nats.errors.Error, HubError, TimeoutError) as exc:
                log.warning("gateway_delivery_paused", subscription=subscription_id, error=str(exc))
                await asyncio.sleep(SCAN_SECONDS)

    async def _post(self, record: SubscriptionRecord, bundle: dict[str, Any]) -> str:
        """POST one notification; the empty string when the receiver acknowledged it, else why not."""
        headers = {"Content-Type": "application/fhir+json"}
        for line in record.headers:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        try:
            answer = await self.http.post(record.endpoint, content=msgspec.json.encode(bundle), headers=headers)
        except httpx.HTTPError as exc:
            REST_HOOK_DELIVERIES.labels("unreachable").inc()
            return f"delivery failed: {type(exc).__name__}"
        REST_HOOK_DELIVERIES.labels("delivered" if answer.is_success else "refused").inc()
        return "" if answer.is_success else f"the endpoint answered {answer.status_code}"

    async def _handshake(self, record: SubscriptionRecord, revision: int) -> None:
        bundle = subscriptions.notification(record, self.fhir_base, "handshake", datetime.now(UTC))
        failure = await self._post(record, bundle)
        if failure:
            await self._save(subscriptions.after_failure(record, failure, time.time()), revision)
        else:
            await self._save(msgspec.structs.replace(record, status="active", failures=0, error=""), revision)

    async def _heartbeat(self, record: SubscriptionRecord, revision: int) -> None:
        bundle = subscriptions.notification(record, self.fhir_base, "heartbeat", datetime.now(UTC))
        failure = await self._post(record, bundle)
        if failure:
            await self._save(subscriptions.after_failure(record, failure, time.time()), revision)

    async def _deliver_stored(self, link: ClinicLink, record: SubscriptionRecord, revision: int) -> bool:
        """Deliver what is stored above ``delivered_through``, one notification per event, in order.

        Returns whether anything was handled. Progress is saved after every acknowledged
        notification (and after skipping messages the filter leaves out).
        """
        handled = False
        async for item in link.client.inbox(since=record.delivered_through + 1):
            if item.event_number <= record.delivered_through:
                continue
            handled = True
            if subscriptions.matches(record, item):
                failure = await self._post(record, await self._event_bundle(link, record, item))
                if failure:
                    await self._save(subscriptions.after_failure(record, failure, time.time()), revision)
                    return True
                record = msgspec.structs.replace(
                    record, events_since_start=record.events_since_start + 1, status="active", failures=0, error=""
                )
            record = msgspec.structs.replace(record, delivered_through=item.event_number)
            record, revision = await self._save(record, revision)
        return handled

    async def _event_bundle(self, link: ClinicLink, record: SubscriptionRecord, item: InboxItem) -> dict[str, Any]:
        # As the record stands once this event is acknowledged: a resend after a failure or a
        # crash carries the same status (no leftover error), so it repeats the first sending.
        numbered = msgspec.structs.replace(
            record, events_since_start=record.events_since_start + 1, status="active", error=""
        )
        resources = None
        if record.payload == "full-resource":
            # The Task as of this event at least: the folded view may be a moment behind this read.
            await link.wait_until(_grown_past(link, item.event_number - 1))
            resources = focus_resources(link, [item], self.fhir_base)
        return subscriptions.notification(
            numbered,
            self.fhir_base,
            "event-notification",
            datetime.now(UTC),
            events=[(item, item.message.occurred_at)],
            resources=resources,
        )


def focus_resources(link: ClinicLink, items: list[InboxItem], fhir_base: str) -> dict[str, dict[str, Any]]:
    """The current Task of each referral the items are about, by focus URL."""
    found: dict[str, dict[str, Any]] = {}
    for item in items:
        target = subscriptions.focus(item, fhir_base)
        referral_id = getattr(item.message, "referral_id", None)
        view = link.referrals.by_referral.get(referral_id) if isinstance(referral_id, uuid.UUID) else None
        if target is not None and view is not None:
            found[target] = task_views.task_resource(view)
    return found


def _grown_past(link: ClinicLink, number: int) -> Callable[[], bool]:
    """A condition: the clinic's inbox holds a number above ``number``."""
    return lambda: link.referrals.last_event_number > number
