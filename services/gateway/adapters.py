"""The gateway's I/O: its own KV buckets (as the ``gateway`` hub user), and one connection per clinic.

A clinic's connection uses that clinic's own credentials, opened the first time a token for
it is used, so the NATS server, not this code, is what stops a token for clinic A from
publishing or reading as clinic B. Each connection follows its clinic's inbox and folds it
into a :class:`~referral_hub.gateway.task_views.ClinicReferrals` view, and hands each hub answer
(a confirmation or a rejection, matched by ``causation_id``) to the request waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import nats
import nats.errors
import structlog
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from referral_hub.audit.index import AuditFilter, AuditIndex
from referral_hub.client import ClinicClient, InboxItem, silence_nats_error_log
from referral_hub.contracts.audit import AuditEntry
from referral_hub.contracts.base import Message
from referral_hub.documents.store import DocumentStore
from referral_hub.errors import HubError
from referral_hub.gateway.auth import ClientRecord
from referral_hub.gateway.care import CareRecords
from referral_hub.gateway.outcomes import FhirError, GatewayCode
from referral_hub.gateway.task_views import ClinicReferrals
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.credentials import NatsCredentials
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.hosting.tasks import cancel_and_wait
from referral_hub.runtime.jetstream import topology

log = structlog.get_logger(__name__)
ANSWER_TIMEOUT_SECONDS: Final = 10.0
SIGNING_KEY: Final = "token-signing"
ID_KEY: Final = "id-derivation"
ID_KEY_BYTES: Final = 32
FOLLOW_RETRY_SECONDS: Final = 1.0


class ReplayError(HubError):
    """A client assertion's ``jti`` was already used."""


def jti_key(clinic: str, jti: str) -> str:
    """A KV-safe key for one assertion id (any characters a client chose are hashed away)."""
    return f"{clinic}.{uuid.uuid5(uuid.NAMESPACE_URL, jti).hex}"


class GatewayStore:
    """The gateway's buckets: registered clients (read only), used jtis, its token key, subscriptions.

    And the document store it shares with the portal (``referral_hub.documents``).
    """

    def __init__(self, connection: Client, buckets: dict[str, KeyValue], documents: DocumentStore) -> None:
        """Wrap an open ``gateway`` connection, its buckets and the document store; use :meth:`open`."""
        self.connection = connection
        self.buckets = buckets
        self.documents = documents

    @classmethod
    async def open(cls, nats_url: str, auth: NatsCredentials | None = None) -> GatewayStore:
        """Connect as the ``gateway`` hub user and bind its provisioned buckets."""
        chosen = auth or credentials.for_hub_user(permissions.GATEWAY)
        connection = await nats.connect(
            server_urls(nats_url),
            name="gateway",
            connect_timeout=5,
            error_cb=silence_nats_error_log,
            **chosen.connect_options(),
        )
        js = connection.jetstream()
        buckets = {name: await js.key_value(name) for name in topology.GATEWAY_BUCKETS}
        return cls(connection, buckets, await DocumentStore.bind(js))

    async def close(self) -> None:
        """Drain the connection."""
        await self.connection.drain()

    async def client(self, clinic: str) -> ClientRecord | None:
        """A clinic's registered system, if it has one."""
        try:
            entry = await self.buckets[topology.GATEWAY_CLIENTS_KV].get(clinic)
        except KeyNotFoundError:
            return None
        return msgspec.json.decode(entry.value or b"", type=ClientRecord) if entry.value else None

    async def spend_jti(self, clinic: str, jti: str) -> None:
        """Record an assertion id with a create-only write; a second use, anywhere, raises :class:`ReplayError`.

        The bucket's TTL outlives every assertion's five-minute life, so an id is remembered
        for as long as its assertion could be presented.
        """
        try:
            await self.buckets[topology.GATEWAY_REPLAY_KV].create(jti_key(clinic, jti), b"1")
        except KeyWrongLastSequenceError as exc:
            msg = "this client assertion's jti was already used"
            raise ReplayError(msg) from exc

    async def signing_key(self, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The token key every replica shares: the first replica's ``make()`` wins a create-only write."""
        return await self._shared(SIGNING_KEY, make)

    async def id_key(self) -> bytes:
        """The key every replica derives referral and message ids with (``gateway.task_commands``), made once."""
        key = await self._shared(ID_KEY, lambda: {"key": secrets.token_hex(ID_KEY_BYTES)})
        return bytes.fromhex(str(key["key"]))

    async def _shared(self, name: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        bucket = self.buckets[topology.GATEWAY_KEYS_KV]
        with contextlib.suppress(KeyWrongLastSequenceError):
            await bucket.create(name, msgspec.json.encode(make()))
        entry = await bucket.get(name)
        key: dict[str, Any] = msgspec.json.decode(entry.value or b"{}")
        return key


async def register_client(js: Any, record: ClientRecord) -> None:  # noqa: ANN401 - nats-py's JetStreamContext
    """Store a clinic's public JWKS (``hubctl gateway client add``, with an operator's key)."""
    bucket = await js.key_value(topology.GATEWAY_CLIENTS_KV)
    await bucket.put(record.clinic, msgspec.json.encode(record))


@dataclass
class ClinicLink:
    """One clinic's connection, its folded referrals, and the requests waiting for a hub answer."""

    client: ClinicClient
    referrals: ClinicReferrals
    care: CareRecords
    waiters: dict[uuid.UUID, asyncio.Future[InboxItem]] = field(default_factory=dict)
    grown: asyncio.Condition = field(default_factory=asyncio.Condition)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Follow the clinic's inbox for good; the caller cancels."""
        while True:
            try:
                await self._follow()
            except (HubError, nats.errors.Error, TimeoutError) as exc:
                log.warning("gateway_inbox_follow_failed", clinic=self.client.clinic_id, error=str(exc))
                await asyncio.sleep(FOLLOW_RETRY_SECONDS)

    async def _follow(self) -> None:
        target = await self.client.last_event_number()
        if target <= self.referrals.last_event_number:
            self.loaded.set()
        async for item in self.client.inbox(since=self.referrals.last_event_number + 1, follow=True):
            if item.event_number and item.event_number <= self.referrals.last_event_number:
                continue
            self.referrals.apply(item.message, item.event_number)
            self.care.apply(item.message)
            if item.event_number >= target:
                self.loaded.set()
            waiter = self.waiters.pop(item.message.causation_id, None) if item.message.causation_id else None
            if waiter is not None and not waiter.done():
                waiter.set_result(item)
            async with self.grown:
                self.grown.notify_all()

    async def wait_until(self, ready: Callable[[], bool], within: float = ANSWER_TIMEOUT_SECONDS) -> bool:
        """Wait until ``ready()`` holds for the folded view; ``False`` if it did not within ``within``."""

        async def reached() -> None:
            async with self.grown:
                await self.grown.wait_for(ready)

        try:
            await asyncio.wait_for(reached(), within)
        except TimeoutError:
            return False
        return True

    async def send_and_watch(self, message: Message, within: float) -> InboxItem | None:
        """Publish as the clinic and wait up to ``within`` for an answer; ``None`` if none came.

        For a command whose answer the caller judges itself (``plan.update``: the author's
        ``plan.updated`` or a rejection); no answer is never taken as success.
        """
        _, answer = await self._send(message, within)
        return answer

    async def send_and_wait(self, message: Message) -> InboxItem | None:
        """Publish as the clinic and wait for the hub's answer to it.

        ``None`` when JetStream reports the message as a duplicate (a retry of one already
        stored): the caller looks for its effect in the folded view instead.
        """
        duplicate, answer = await self._send(message, ANSWER_TIMEOUT_SECONDS)
        if answer is None and not duplicate:
            msg = "the hub did not answer in time; retry with the same identifier"
            raise FhirError(503, GatewayCode.HUB_UNAVAILABLE, msg, {"Retry-After": "1"})
        return answer

    async def _send(self, message: Message, within: float) -> tuple[bool, InboxItem | None]:
        """Publish as the clinic: whether JetStream called it a duplicate (no answer will come), and the answer."""
        future: asyncio.Future[InboxItem] = asyncio.get_running_loop().create_future()
        self.waiters[message.message_id] = future
        try:
            receipt = await self.client.send(message)
            if receipt.duplicate:
                return True, None
            return False, await asyncio.wait_for(future, within)
        except TimeoutError:
            return False, None
        finally:
            self.waiters.pop(message.message_id, None)


class ClinicConnections:
    """One :class:`ClinicLink` per clinic, opened lazily with that clinic's own credentials."""

    def __init__(self, nats_url: str) -> None:
        """Nothing opens until a clinic is first asked for."""
        self._url = nats_url
        self._links: dict[str, ClinicLink] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    async def link(self, clinic: str) -> ClinicLink:
        """The clinic's link, with its inbox read up to what was stored when it opened."""
        lock = self._opening.setdefault(clinic, asyncio.Lock())
        async with lock:
            link = self._links.get(clinic)
            if link is None:
                client = await ClinicClient.connect(self._url, clinic)
                link = ClinicLink(client, ClinicReferrals(clinic), CareRecords(clinic))
                link.task = asyncio.create_task(link.run(), name=f"gateway-inbox-{clinic}")
                self._links[clinic] = link
        try:
            await asyncio.wait_for(link.loaded.wait(), 30)
        except TimeoutError as exc:
            msg = "the clinic's inbox could not be read"
            raise FhirError(503, GatewayCode.HUB_UNAVAILABLE, msg, {"Retry-After": "1"}) from exc
        return link

    async def close(self) -> None:
        """Stop every follower and close every clinic connection."""
        for link in self._links.values():
            if link.task is not None:
                await cancel_and_wait([link.task])
            with contextlib.suppress(nats.errors.Error):
                await link.client.close()
        self._links.clear()


class AuditSearch:
    """A clinic's own audit entries, read as the hub's read-only ``auditor`` through a local index.

    Served only when the operator gives the gateway an index file (and so the ``auditor``
    key): the gateway's own user reads no audit stream. The rule is ``hubctl audit query
    --clinic``'s: an entry is the clinic's when its ``clinic`` is that clinic (what it sent,
    what was delivered to it, what was refused of it).
    """

    def __init__(self, connection: Client, index: AuditIndex) -> None:
        """Wrap an open ``auditor`` connection and the index; use :meth:`open`."""
        self._connection = connection
        self._index = index
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, nats_url: str, index_path: Path) -> AuditSearch:
        """Connect as ``auditor`` and open (or create) the index file."""
        connection = await nats.connect(
            server_urls(nats_url),
            name="gateway-audit",
            connect_timeout=5,
            error_cb=silence_nats_error_log,
            **credentials.for_hub_user(permissions.AUDITOR).connect_options(),
        )
        return cls(connection, AuditIndex(index_path))

    async def close(self) -> None:
        """Drain the connection and release the index."""
        with contextlib.suppress(nats.errors.Error):
            await self._connection.drain()
        self._index.close()

    async def entries(
        self, clinic: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[AuditEntry]:
        """The clinic's entries in ``[since, until)``, oldest first, at most ``limit``, after catching up."""
        if not clinic:
            msg = "an audit search needs the clinic it is for"
            raise HubError(msg)
        async with self._lock:
            await self._index.catch_up(self._connection.jetstream())
            where = AuditFilter(clinic=clinic, since=since, until=until, limit=limit)
            return list(self._index.query(where))
