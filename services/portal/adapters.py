"""The portal's I/O: its own KV buckets (as the ``portal`` hub user) and one clinic connection per clinic.

Every clinic action and read goes through :class:`~referral_hub.client.ClinicClient`
opened with that clinic's own credentials, so the NATS server itself refuses the portal
acting for clinic A as clinic B. The portal's hub key reaches nothing but its buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Final, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from referral_hub.client import ClinicClient, InboxItem, silence_nats_error_log
from referral_hub.contracts.base import ContractError, Message, message_type
from referral_hub.contracts.codec import decode_hub_message
from referral_hub.documents.store import DocumentStore
from referral_hub.errors import HubError
from referral_hub.portal.domain import Invite, MemberAccount, Session
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.hosting.tasks import cancel_and_wait
from referral_hub.runtime.jetstream import subjects, topology
from referral_hub.runtime.jetstream.registry_cache import RegistryCache

log = structlog.get_logger(__name__)
T = TypeVar("T")
MIRROR_LIMIT: Final = 50_000
"""The newest inbox messages a clinic's mirror keeps in memory; older ones are read on demand."""
FOLLOW_POLL_SECONDS: Final = 1.0
"""A quiet mirror reads the store at least this often, so a missed push costs at most this."""
READ_PAGE: Final = 200
"""The most messages the hub answers one inbox read with."""
SUBSCRIBER_QUEUE: Final = 256
"""Live updates buffered per open page; a page that falls this far behind is told to reload."""
MIRROR_CATCH_UP_SECONDS: Final = 5.0
"""How long a sender waits for its own answer to reach the mirror before rendering anyway."""


class PortalError(HubError):
    """The portal's base error."""


class ConcurrentChangeError(PortalError):
    """Someone else changed the record first; read again and retry."""


def token_key(token: str) -> str:
    """The bucket key for a secret token: its SHA-256, so the bucket never holds a usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


class PortalStore:
    """Members, invites, sessions, login counters and read marks, in the portal's own buckets.

    And the document store the portal shares with the gateway (``referral_hub.documents``).
    """

    def __init__(self, connection: Client, buckets: dict[str, KeyValue], documents: DocumentStore) -> None:
        """Use :meth:`open`."""
        self.connection = connection
        self._buckets = buckets
        self.documents = documents
        self._marks: dict[str, tuple[frozenset[int], int]] = {}
        """Every member's read marks and their revision, as the bucket's watch last told them."""
        self._marks_current = asyncio.Event()
        self._marks_task: asyncio.Task[None] | None = None
        self.registry = RegistryCache()
        """The registry as stored (with the clinics' current public sealing keys), kept current by a watch."""
        self._registry_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, nats_url: str) -> PortalStore:
        """Connect as the ``portal`` hub user and bind its five buckets and the document store."""
        connection = await nats.connect(
            server_urls(nats_url),
            name="portal",
            connect_timeout=5,
            max_reconnect_attempts=-1,
            error_cb=silence_nats_error_log,
            **credentials.for_hub_user(permissions.PORTAL).connect_options(),
        )
        js = connection.jetstream()
        buckets = {name: await js.key_value(name) for name in permissions.PORTAL_BUCKETS}
        store = cls(connection, buckets, await DocumentStore.bind(js))
        store._marks_task = asyncio.create_task(store._follow_marks(), name="portal-read-marks")
        store._registry_task = asyncio.create_task(store.registry.follow(js), name="portal-registry")
        return store

    async def _follow_marks(self) -> None:
        """Keep a copy of the read-marks bucket current, so an inbox render reads no KV.

        Every replica writes its members' marks to the bucket and watches it, so a mark made
        on one replica shows on all. Until the watch has delivered what the bucket held, and
        again while it is broken, :meth:`read_marks` reads the bucket itself.
        """
        while True:
            self._marks_current.clear()
            try:
                watcher = await self._buckets[topology.PORTAL_UNREAD_KV].watchall()
                self._marks.clear()
                async for entry in watcher:
                    if entry is None:
                        self._marks_current.set()
                    elif entry.operation in {"DEL", "PURGE"} or not entry.value:
                        self._marks.pop(entry.key, None)
                    else:
                        self._remember_marks(
                            entry.key, msgspec.json.decode(entry.value, type=list[int]), entry.revision
                        )
            except (nats.errors.Error, msgspec.DecodeError, TimeoutError) as exc:
                log.warning("portal_read_marks_watch_failed", error=str(exc))
            await asyncio.sleep(1.0)

    def _remember_marks(self, key: str, numbers: Iterable[int], revision: int | None) -> None:
        """Hold ``numbers`` unless a newer revision is held already (a write and its watch echo race)."""
        held = self._marks.get(key)
        if held is None or (revision or 0) > held[1]:
            self._marks[key] = (frozenset(numbers), revision or 0)

    async def close(self) -> None:
        """Stop the read-marks watch, flush and close."""
        await cancel_and_wait([task for task in (self._marks_task, self._registry_task) if task is not None])
        with contextlib.suppress(nats.errors.Error):
            await self.connection.drain()

    async def _get(self, bucket: str, key: str, kind: type[T]) -> tuple[T, int] | None:
        try:
            entry = await self._buckets[bucket].get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None or not entry.value:
            return None
        return msgspec.json.decode(entry.value, type=kind), int(entry.revision or 0)

    async def _put(self, bucket: str, key: str, value: object, revision: int | None) -> int:
        """Create (``revision`` 0), update at ``revision``, or overwrite (``None``); the new revision."""
        data = msgspec.json.encode(value)
        try:
            if revision is None:
                return int(await self._buckets[bucket].put(key, data))
            if revision == 0:
                return int(await self._buckets[bucket].create(key, data))
            return int(await self._buckets[bucket].update(key, data, last=revision))
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as exc:
            if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or exc.err_code == 10071:  # noqa: PLR2004 - wrong last sequence
                raise ConcurrentChangeError(str(exc)) from exc
            raise

    async def account(self, clinic: str, member: str) -> tuple[MemberAccount, int] | None:
        """A member's account and its revision."""
        return await self._get(topology.PORTAL_MEMBERS_KV, f"{clinic}.{member}", MemberAccount)

    async def save_account(self, account: MemberAccount, revision: int) -> None:
        """Write an account; ``revision`` 0 creates it, otherwise compare-and-set."""
        await self._put(topology.PORTAL_MEMBERS_KV, f"{account.clinic}.{account.member}", account, revision)

    async def invite(self, token: str) -> tuple[Invite, int] | None:
        """The invite a link's token names (the bucket's TTL removes stale ones)."""
        return await self._get(topology.PORTAL_INVITES_KV, token_key(token), Invite)

    async def save_invite(self, token: str, invite: Invite, revision: int) -> None:
        """Create (0) or update an invite."""
        await self._put(topology.PORTAL_INVITES_KV, token_key(token), invite, revision)

    async def spend_invite(self, token: str, revision: int) -> None:
        """Delete the invite, only if nobody used it meanwhile: a link works once."""
        try:
            await self._buckets[topology.PORTAL_INVITES_KV].delete(token_key(token), last=revision)
        except nats.js.errors.APIError as exc:
            raise ConcurrentChangeError(str(exc)) from exc

    async def session(self, token: str) -> tuple[Session, int] | None:
        """The session a cookie names."""
        return await self._get(topology.PORTAL_SESSIONS_KV, token_key(token), Session)

    async def save_session(self, token: str, session: Session) -> None:
        """Write a session (last writer wins: only last-seen changes)."""
        await self._put(topology.PORTAL_SESSIONS_KV, token_key(token), session, None)

    async def end_session(self, token: str) -> None:
        """Forget a session."""
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            await self._buckets[topology.PORTAL_SESSIONS_KV].delete(token_key(token))

    async def count_failure(self, key: str, delta: int) -> int:
        """Add ``delta`` to one failure budget's count in the bucket's window (compare-and-set); the new count."""
        bucket = self._buckets[topology.PORTAL_LOGINS_KV]
        for _ in range(8):
            found = await self._get(topology.PORTAL_LOGINS_KV, key, int)
            count = max((found[0] if found else 0) + delta, 0)
            try:
                if found is None:
                    await bucket.create(key, msgspec.json.encode(count))
                else:
                    await bucket.update(key, msgspec.json.encode(count), last=found[1])
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError):
                continue
            return count
        msg = "login counter kept changing"
        raise ConcurrentChangeError(msg)

    async def read_marks(self, clinic: str, member: str) -> frozenset[int]:
        """The inbox numbers this member has read: from the watched copy once it is current."""
        key = f"{clinic}.{member}"
        if self._marks_current.is_set():
            held = self._marks.get(key)
            return held[0] if held else frozenset()
        found = await self._get(topology.PORTAL_UNREAD_KV, key, list[int])
        return frozenset(found[0]) if found else frozenset()

    async def mark_read(self, clinic: str, member: str, numbers: frozenset[int]) -> None:
        """Add ``numbers`` to the member's read marks (compare-and-set, retried)."""
        key = f"{clinic}.{member}"
        for _ in range(8):
            found = await self._get(topology.PORTAL_UNREAD_KV, key, list[int])
            current = frozenset(found[0]) if found else frozenset()
            if numbers <= current:
                return
            marks = sorted(current | numbers)
            try:
                revision = await self._put(topology.PORTAL_UNREAD_KV, key, marks, found[1] if found else 0)
            except ConcurrentChangeError:
                continue
            # This replica's next render shows the marks at once, not when the watch echoes them.
            self._remember_marks(key, marks, revision)
            return


@dataclass
class InboxMirror:
    """A clinic's inbox as its own connection reads it, kept in memory, fanned out to open pages.

    The follower reads what the hub stored (``hub.inbox.<id>.read``) whenever the clinic's
    inbox subject shows activity, so pages render without a NATS round trip and every open
    page of the clinic gets each new message once.
    """

    client: ClinicClient
    items: list[InboxItem] = field(default_factory=list)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    grown: asyncio.Condition = field(default_factory=asyncio.Condition)
    subscribers: set[asyncio.Queue[InboxItem]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    @property
    def last_event_number(self) -> int:
        """The newest number held."""
        return self.items[-1].event_number if self.items else 0

    async def run(self) -> None:
        """Follow the inbox for good (the caller cancels)."""
        while True:
            try:
                await self._follow()
            except (HubError, ContractError, nats.errors.Error, TimeoutError) as exc:
                log.warning("portal_inbox_follow_failed", clinic=self.client.clinic_id, error=str(exc))
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        """Read what is stored, then take each pushed inbox message that is exactly the next number.

        The hub numbers a clinic's inbox without gaps, so a pushed message numbered one above
        the newest held is what the store holds next, and is shown at once, without a read.
        Anything else (a gap, a duplicate, an unnumbered message, a quiet second) makes the
        mirror read the store again, so it never shows less or other than the store.
        """
        pushed: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_message(raw: Msg) -> None:
            pushed.put_nowait(raw)

        subscription = await self.client.connection.subscribe(
            subjects.clinic_inbox(self.client.clinic_id), cb=on_message
        )
        try:
            await self._catch_up()
            self.loaded.set()
            while True:
                try:
                    raw = await asyncio.wait_for(pushed.get(), FOLLOW_POLL_SECONDS)
                except TimeoutError:
                    await self._catch_up()
                    continue
                try:
                    message = decode_hub_message(raw.data)
                except ContractError:
                    await self._catch_up()  # the store's copy decides what is shown
                    continue
                number = int(getattr(message, "event_number", 0))
                if number == self.last_event_number + 1:
                    await self._add(InboxItem(0, raw.subject, message))
                elif number > self.last_event_number + 1 or number == 0:
                    await self._catch_up()
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _catch_up(self) -> None:
        """Read every stored message above the newest held."""
        while True:
            page = await self.client.read_page(after=self.last_event_number, limit=READ_PAGE)
            for stored in page.messages:
                message = decode_hub_message(bytes(stored.message))
                if int(getattr(message, "event_number", 0)) > self.last_event_number:
                    subject = subjects.clinic_in(self.client.clinic_id, message_type(type(message)))
                    await self._add(InboxItem(stored.sequence, subject, message))
            if not page.messages or self.last_event_number >= page.last_event_number:
                return

    async def _add(self, item: InboxItem) -> None:
        self.items.append(item)
        if len(self.items) > MIRROR_LIMIT:
            del self.items[: len(self.items) - MIRROR_LIMIT]
        for queue in list(self.subscribers):
            if queue.full():
                # A page this far behind is dropped; its stream ends and the browser reconnects.
                self.subscribers.discard(queue)
                continue
            queue.put_nowait(item)
        async with self.grown:
            self.grown.notify_all()

    async def wait_for(self, event_number: int, within: float = 10.0) -> None:
        """Until the mirror holds ``event_number`` (after an action, before the redirect)."""

        async def reached() -> None:
            async with self.grown:
                await self.grown.wait_for(lambda: self.last_event_number >= event_number)

        await asyncio.wait_for(reached(), within)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[InboxItem]]:
        """A queue of new inbox messages for one open page."""
        queue: asyncio.Queue[InboxItem] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.subscribers.add(queue)
        try:
            yield queue
        finally:
            self.subscribers.discard(queue)


class ClinicConnections:
    """One :class:`ClinicClient` and one inbox mirror per clinic, opened when a member of it first needs them."""

    def __init__(self, nats_url: str) -> None:
        """Connections open lazily, each with its clinic's own credentials."""
        self._url = nats_url
        self._mirrors: dict[str, InboxMirror] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    async def mirror(self, clinic: str) -> InboxMirror:
        """The clinic's mirror, loaded (its first read done)."""
        lock = self._opening.setdefault(clinic, asyncio.Lock())
        async with lock:
            mirror = self._mirrors.get(clinic)
            if mirror is None:
                client = await ClinicClient.connect(self._url, clinic)
                mirror = InboxMirror(client)
                mirror.task = asyncio.create_task(mirror.run(), name=f"portal-inbox-{clinic}")
                self._mirrors[clinic] = mirror
        await asyncio.wait_for(mirror.loaded.wait(), 30)
        return mirror

    async def send(self, clinic: str, message: Message) -> None:
        """Publish as the clinic and wait for JetStream to store it."""
        await (await self.mirror(clinic)).client.send(message)

    async def send_and_confirm(self, clinic: str, message: Message) -> InboxItem:
        """Publish as the clinic and wait for the hub's answer (a confirmation or a rejection)."""
        mirror = await self.mirror(clinic)
        answer = await mirror.client.send_and_confirm(message)
        await _mirrored(mirror, answer)
        return answer

    async def send_and_wait(self, clinic: str, message: Message, within: float) -> InboxItem | None:
        """Publish as the clinic; the hub's answer if one comes within ``within`` seconds, else ``None``.

        The caller says what no answer means: for a plan update, that nothing is known to
        have changed (the hub confirms a stored plan to its author).
        """
        mirror = await self.mirror(clinic)
        _, answer = await mirror.client.send_and_wait(message, within)
        if answer is not None:
            await _mirrored(mirror, answer)
        return answer

    async def close(self) -> None:
        """Stop every follower and close every clinic connection."""
        for mirror in self._mirrors.values():
            if mirror.task is not None:
                await cancel_and_wait([mirror.task])
            with contextlib.suppress(nats.errors.Error):
                await mirror.client.close()
        self._mirrors.clear()


async def _mirrored(mirror: InboxMirror, answer: InboxItem) -> None:
    """Give the mirror a moment to hold ``answer``, so the page rendered next shows it."""
    with contextlib.suppress(TimeoutError):
        await mirror.wait_for(answer.event_number, within=MIRROR_CATCH_UP_SECONDS)
