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

Requests go out through httpcore with a network backend that resolves the endpoint's host
itself and connects to the address it checked (so a name cannot resolve to a public address
for the check and a private one for the connection): loopback, private, link-local and other
non-public addresses are refused unless the gateway runs with ``--allow-private-hook-endpoints``
(development and tests). Every failure of one delivery, of any kind, is caught there and
recorded with the same words (docs/decisions/0010-rest-hook-endpoints.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import httpcore
import msgspec
import nats.errors
import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from referral_hub.client import InboxItem
from referral_hub.contracts.alerts import AlertAcknowledged, AlertRaised, AlertResolved
from referral_hub.contracts.plans import CareTeamChanged, PlanUpdated
from referral_hub.contracts.referrals import ReferralEvent
from referral_hub.contracts.screening import ScreeningDisputed, ScreeningFlagged
from referral_hub.errors import HubError
from referral_hub.gateway import care, subscriptions, task_views
from referral_hub.gateway.adapters import ClinicConnections, ClinicLink
from referral_hub.gateway.subscriptions import SubscriptionRecord
from referral_hub.runtime.hosting.web_metrics import REST_HOOK_DELIVERIES
from referral_hub.runtime.jetstream.kvstore import KvView

log = structlog.get_logger(__name__)
LEASE_SECONDS: Final = 3.0
"""How long a deliverer's claim lasts without renewal: the longest a crashed replica delays delivery."""
SCAN_SECONDS: Final = 0.5
HTTP_CONNECTIONS: Final = 100
DELIVERING: Final = frozenset({"requested", "active", "error"})
_decoder: Final = msgspec.json.Decoder(SubscriptionRecord)


class LeaseLostError(HubError):
    """Another deliverer holds the subscription now; this one stops."""


class RefusedAddressError(HubError, httpcore.ConnectError):
    """The endpoint's host resolves to an address the hub does not send to."""


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Connects only to public addresses (any, with ``allow_private``), to the address it checked.

    TLS still verifies the certificate against the URL's host name: httpcore passes that,
    not the address, as the server name.
    """

    def __init__(self, *, allow_private: bool) -> None:
        """Refuse non-public addresses unless ``allow_private``."""
        self.allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Any = None,  # noqa: ANN401 - httpcore's own socket option type
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host``, refuse unless every address is allowed, connect to the first."""
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        addresses = [str(info[4][0]) for info in found]
        if not addresses or not (self.allow_private or all(subscriptions.public_address(a) for a in addresses)):
            msg = "the endpoint does not resolve to a public address"
            raise RefusedAddressError(msg)
        return await self._inner.connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        socket_options: Any = None,  # noqa: ANN401 - httpcore's own socket option type
    ) -> httpcore.AsyncNetworkStream:
        """Never: an endpoint is a URL."""
        del path, timeout, socket_options
        msg = "no unix sockets"
        raise RefusedAddressError(msg)

    async def sleep(self, seconds: float) -> None:
        """As the inner backend."""
        await self._inner.sleep(seconds)


class RestHooks:
    """Runs one worker per subscription whose lease this process holds or can take."""

    def __init__(
        self, kv: KeyValue, connections: ClinicConnections, fhir_base: str, *, allow_private: bool = False
    ) -> None:
        """Deliver the records in ``kv`` through the clinics' own connections."""
        self.owner = uuid.uuid4().hex
        self.kv = kv
        self.connections = connections
        self.fhir_base = fhir_base
        self.view: KvView[SubscriptionRecord] = KvView(SubscriptionRecord, prefix="sub.")
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.http = httpcore.AsyncConnectionPool(
            max_connections=HTTP_CONNECTIONS, network_backend=PublicOnlyBackend(allow_private=allow_private)
        )
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
        faults = 0
        while True:
            try:
                sent_at = await self._step(subscription_id, last_sent)
                if sent_at is None:
                    return
                last_sent, faults = sent_at, 0
            except LeaseLostError:
                continue
            except (nats.errors.Error, HubError, TimeoutError) as exc:
                log.warning("gateway_delivery_paused", subscription=subscription_id, error=str(exc))
                await asyncio.sleep(SCAN_SECONDS)
            except Exception as exc:  # one subscription's fault must not end its delivery or any other's
                # Backed off like a failing endpoint: a fault that repeats logs a line per 30 s, not a flood.
                faults += 1
                log.exception("gateway_delivery_failed", subscription=subscription_id, error=type(exc).__name__)
                await asyncio.sleep(subscriptions.backoff(faults))

    async def _step(self, subscription_id: str, last_sent: float) -> float | None:  # noqa: PLR0911 - one return per outcome of a round
        """One round of a subscription's delivery; when something was last sent, or ``None`` to stop."""
        loaded = await self._load(subscription_id)
        if loaded is None or loaded[0].status not in DELIVERING:
            return None
        record, revision = loaded
        now = time.time()
        if record.lease_owner not in {"", self.owner} and record.lease_until > now:
            return None
        record, revision = await self._save(record, revision)
        if record.retry_at > now:
            await asyncio.sleep(min(record.retry_at - now, LEASE_SECONDS / 2))
            return last_sent
        if record.status == "requested":
            await self._handshake(record, revision)
            return time.monotonic()
        link = await self.connections.link(record.clinic)
        handled, posted = await self._deliver_stored(link, record, revision)
        if posted:
            last_sent = time.monotonic()
        if handled:
            return last_sent
        if time.monotonic() - last_sent >= record.heartbeat_seconds:
            await self._heartbeat(record, revision)
            return time.monotonic()
        wait = min(LEASE_SECONDS / 2, max(0.0, record.heartbeat_seconds - (time.monotonic() - last_sent)))
        await link.wait_until(_grown_past(link, record.delivered_through), wait)
        return last_sent

    async def _post(self, record: SubscriptionRecord, bundle: dict[str, Any]) -> bool:
        """POST one notification within the subscription's timeout; whether the receiver answered 2xx.

        Any failure is caught and logged here, and only its kind: the clinic is told the
        same words for all of them (:data:`subscriptions.DELIVERY_FAILED`).
        """
        headers = [("Content-Type", "application/fhir+json")]
        # Checked again as sent: a record stored before the allow-list existed may hold others.
        lines = (line.partition(":") for line in record.headers)
        headers += [(n.strip(), v.strip()) for n, _, v in lines if subscriptions.ALLOWED_HEADERS.fullmatch(n.strip())]
        seconds = record.timeout_seconds
        timeouts = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}
        try:
            async with asyncio.timeout(seconds):
                answer = await self.http.request(
                    "POST",
                    record.endpoint,
                    headers=headers,
                    content=msgspec.json.encode(bundle),
                    extensions={"timeout": timeouts},
                )
        except Exception as exc:  # noqa: BLE001 - whatever failed, this delivery failed and is retried
            REST_HOOK_DELIVERIES.labels("unreachable").inc()
            log.info("gateway_delivery_refused", subscription=record.id, error=type(exc).__name__)
            return False
        delivered = 200 <= answer.status < 300  # noqa: PLR2004 - the 2xx class
        REST_HOOK_DELIVERIES.labels("delivered" if delivered else "refused").inc()
        return delivered

    async def _handshake(self, record: SubscriptionRecord, revision: int) -> None:
        bundle = subscriptions.notification(record, self.fhir_base, "handshake", datetime.now(UTC))
        if await self._post(record, bundle):
            await self._save(msgspec.structs.replace(record, status="active", failures=0, error=""), revision)
        else:
            await self._save(subscriptions.after_failure(record, time.time()), revision)

    async def _heartbeat(self, record: SubscriptionRecord, revision: int) -> None:
        bundle = subscriptions.notification(record, self.fhir_base, "heartbeat", datetime.now(UTC))
        if not await self._post(record, bundle):
            await self._save(subscriptions.after_failure(record, time.time()), revision)

    async def _deliver_stored(self, link: ClinicLink, record: SubscriptionRecord, revision: int) -> tuple[bool, bool]:
        """Deliver what is stored above ``delivered_through``, one notification per event, in order.

        Returns whether anything was handled, and whether a notification was sent (messages the
        filter leaves out are handled but send nothing, so they do not put the heartbeat off).
        Progress is saved after every acknowledged notification (and after skipping messages
        the filter leaves out).
        """
        handled = posted = False
        async for item in link.client.inbox(since=record.delivered_through + 1):
            if item.event_number <= record.delivered_through:
                continue
            handled = True
            if subscriptions.matches(record, item):
                posted = True
                if not await self._post(record, await self._event_bundle(link, record, item)):
                    await self._save(subscriptions.after_failure(record, time.time()), revision)
                    return True, True
                record = msgspec.structs.replace(
                    record, events_since_start=record.events_since_start + 1, status="active", failures=0, error=""
                )
            record = msgspec.structs.replace(record, delivered_through=item.event_number)
            record, revision = await self._save(record, revision)
        return handled, posted

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
    """The current resource each item is about (a Task, CareTeam, CarePlan, DetectedIssue or Flag), by focus URL."""
    found: dict[str, dict[str, Any]] = {}
    for item in items:
        target = subscriptions.focus(item, fhir_base)
        current = _current(link, item.message) if target is not None else None
        if target is not None and current is not None:
            found[target] = current
    return found


def _current(link: ClinicLink, message: object) -> dict[str, Any] | None:  # noqa: PLR0911 - one answer per kind of focus
    """The focus of ``message`` as the gateway serves it now, from the clinic's folded views."""
    records = link.care
    match message:
        case ReferralEvent(referral_id=referral_id):
            view = link.referrals.by_referral.get(referral_id)
            return task_views.task_resource(view) if view is not None else None
        case CareTeamChanged(patient_ref=patient_ref):
            return care.care_team_resource(records, patient_ref) if patient_ref in records.teams else None
        case PlanUpdated(patient_ref=patient_ref, plan_clinic=plan_clinic):
            plan = records.plans.get((patient_ref, plan_clinic))
            return care.care_plan_resource(plan, plan_clinic) if plan is not None else None
        case ScreeningFlagged(flag_id=flag_id) | ScreeningDisputed(flag_id=flag_id):
            issue = records.issues.get(flag_id)
            if issue is None:
                return None
            flagged = issue.flag.referral_id
            return care.detected_issue_resource(issue, records.overrides.get(flagged) if flagged else None)
        case AlertRaised(alert_id=alert_id) | AlertAcknowledged(alert_id=alert_id) | AlertResolved(alert_id=alert_id):
            alert = records.alerts.get(alert_id)
            return care.flag_resource(alert) if alert is not None else None
    return None


def _grown_past(link: ClinicLink, number: int) -> Callable[[], bool]:
    """A condition: the clinic's inbox holds a number above ``number``."""
    return lambda: link.referrals.last_event_number > number
