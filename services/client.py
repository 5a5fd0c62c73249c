"""The Python client partner clinics use: send commands, read the inbox.

It speaks only the public v1 subjects, exactly as a clinic on plain NATS would: publish to
``clinic.<id>.out.<type>`` with ``Nats-Msg-Id`` set to the message id, read
``clinic.<id>.in.>`` from JetStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Self

import msgspec
import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError

from referral_hub.contracts.base import Message, message_type
from referral_hub.contracts.codec import HubMessage, decode_hub_message, encode
from referral_hub.contracts.inbox import InboxHeartbeat, InboxPage, InboxRead
from referral_hub.errors import HubError
from referral_hub.runtime.broker import credentials
from referral_hub.runtime.broker.credentials import CREDS_DIR_ENV, NKEY_FILE_ENV, NatsCredentials, clinic_seed_path
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.jetstream import subjects, topology
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER

STREAM_FULL_CODES: Final = frozenset({10077, 10023})
"""JetStream's refusals of a store that is at its limit: a stream's byte or message budget
(``maximum bytes exceeded``), or the server's own storage (insufficient resources)."""
READ_TIMEOUT: Final = 5.0
"""How long an inbox read waits for the hub's answer."""
NO_RESPONDERS_PAUSE_SECONDS: Final = 0.05
FOLLOW_POLL_SECONDS: Final = 1.0
WAKE_REREADS: Final = 5
"""Re-reads, 5 ms apart and growing, after a wake-up that found nothing new yet.

The wake-up is the inbox message crossing its subject, which can come moments before the
hub's inbox read answers with it; without these a follower waited for the next second's poll.
"""
WAKE_REREAD_SECONDS: Final = 0.005
"""A follower asks again at least this often, even when no wake-up arrived."""
CONSUME_WAIT_SECONDS: Final = 5.0
CONNECT_TIMEOUT_SECONDS: Final = 3.0
CONNECT_ATTEMPTS: Final = 2
"""Each server is tried this often before connecting gives up: a few seconds, never minutes."""
NEWEST: Final = 2**62
"""An ``after`` above every event number: the answer carries only the newest number."""
_read: Final = msgspec.json.Encoder()
_page: Final = msgspec.json.Decoder(InboxPage)


class HubUnreachableError(HubError):
    """No NATS server answered: the hub is not running, or the URL is wrong."""


class HubFullError(HubError):
    """The hub refused a submission because its store is at its budget: nothing was stored.

    Back-pressure, never silent loss: the sender keeps the message and sends it again later
    (the same message id makes that safe). Operators see the stream's depth alert first.
    """


async def silence_nats_error_log(_error: Exception) -> None:
    """nats-py's default error callback prints a traceback; our callers get the exception."""


def new_id() -> uuid.UUID:
    """A fresh message, referral or correlation id."""
    return uuid.uuid4()


def utc_now() -> datetime:
    """Now, as the timezone-aware UTC timestamp contracts require."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class InboxItem:
    """One inbox delivery: its stream sequence, subject and decoded message."""

    sequence: int
    subject: str
    message: HubMessage

    @property
    def event_number(self) -> int:
        """The clinic's gap-free inbox number of this message (0 for unnumbered kinds)."""
        return int(getattr(self.message, "event_number", 0))


@dataclass(frozen=True)
class SendReceipt:
    """The server's answer to a send: where it was stored, and whether it was a duplicate."""

    sequence: int
    duplicate: bool


def clinic_credentials(clinic_id: str) -> NatsCredentials:
    """A clinic's credentials: what the environment names, else the local hub's (``$HUB_DATA_DIR/auth``).

    ``hubctl`` looks in the same places, so a script using this client in the folder where
    ``hubctl up`` runs connects just as ``hubctl`` does. A clinic with no seed there is
    named in a one-line error instead of a refused connection.
    """
    chosen = credentials.for_clinic(clinic_id)
    named = os.environ.get(CREDS_DIR_ENV) or os.environ.get(NKEY_FILE_ENV)
    directory = Path(os.environ[CREDS_DIR_ENV]) if os.environ.get(CREDS_DIR_ENV) else None
    if not named and credentials.local_creds_dir().is_dir():
        directory = credentials.local_creds_dir()
        ca_file = directory / "tls" / "ca.pem"
        chosen = replace(
            chosen,
            nkey_file=clinic_seed_path(directory, clinic_id),
            ca_file=chosen.ca_file or (ca_file if ca_file.exists() else None),
        )
    if chosen.nkey_file is not None and not chosen.nkey_file.is_file():
        where = f" in {directory}" if directory is not None else f" ({chosen.nkey_file})"
        msg = f"no credentials for clinic {clinic_id!r}{where}: is it registered? see 'hubctl clinics'"
        raise credentials.CredentialsError(msg)
    return chosen


class ClinicClient:
    """A clinic's connection to the hub."""

    def __init__(self, connection: Client, clinic_id: str) -> None:
        """Wrap an open NATS connection; use :meth:`connect` to open one."""
        self.connection = connection
        self.clinic_id = clinic_id
        self.js: JetStreamContext = connection.jetstream()

    @classmethod
    async def connect(cls, nats_url: str, clinic_id: str, auth: NatsCredentials | None = None) -> Self:
        """Open a connection for ``clinic_id``, with ``auth`` or the credentials the environment names.

        The connection's reply inbox is the clinic's own (``_INBOX.clinic.<id>``): on a hub
        with authorization that is the only inbox the clinic may subscribe to.
        """
        chosen = auth or clinic_credentials(clinic_id)
        try:
            connection = await nats.connect(
                server_urls(nats_url),
                name=f"clinic-{clinic_id}",
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                max_reconnect_attempts=CONNECT_ATTEMPTS - 1,
                reconnect_time_wait=0.5,
                error_cb=silence_nats_error_log,
                **chosen.connect_options(),
            )
        except nats.errors.NoServersError as exc:
            msg = f"cannot reach NATS at {nats_url} (is the hub running? pass --nats-url or set NATS_URL)"
            raise HubUnreachableError(msg) from exc
        return cls(connection, clinic_id)

    async def close(self) -> None:
        """Flush and close."""
        await self.connection.drain()

    async def send(self, message: Message) -> SendReceipt:
        """Publish ``message`` on this clinic's out subject and wait for JetStream to store it.

        ``Nats-Msg-Id`` is the message id, so retrying a send whose ack was lost is safe.
        """
        return await self._store(
            subjects.clinic_out(self.clinic_id, message_type(type(message))),
            encode(message),
            {MSG_ID_HEADER: str(message.message_id)},
        )

    async def publish_raw(self, message_type_tokens: str, payload: bytes, msg_id: str | None = None) -> SendReceipt:
        """Publish arbitrary bytes on an out subject (for tools and tests of bad input)."""
        headers = {MSG_ID_HEADER: msg_id} if msg_id else None
        return await self._store(subjects.clinic_out(self.clinic_id, message_type_tokens), payload, headers)

    async def _store(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> SendReceipt:
        """Publish and wait for JetStream's acknowledgement; a full store raises :class:`HubFullError`."""
        try:
            ack = await self.js.publish(subject, payload, headers=headers)
        except APIError as exc:
            if exc.err_code in STREAM_FULL_CODES:
                msg = f"the hub is full and stored nothing ({exc.description}); send the same message again later"
                raise HubFullError(msg) from exc
            raise
        return SendReceipt(sequence=ack.seq, duplicate=bool(ack.duplicate))

    async def heartbeats(self) -> AsyncIterator[InboxHeartbeat]:
        """The hub's heartbeats for this clinic: compare ``last_event_number`` with what you hold."""
        subscription = await self.connection.subscribe(subjects.clinic_heartbeat(self.clinic_id))
        try:
            async for raw in subscription.messages:
                beat = decode_hub_message(raw.data)
                if isinstance(beat, InboxHeartbeat):
                    yield beat
        finally:
            await subscription.unsubscribe()

    async def read_page(self, after: int = 0, limit: int = 100) -> InboxPage:
        """One page of this clinic's stored inbox messages numbered above ``after``, oldest first.

        The hub answers (``hub.inbox.<id>.read``): a clinic creates no consumer, and any number
        of readers see the same inbox.
        """
        request = _read.encode(InboxRead(after=after, limit=limit))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_TIMEOUT
        while True:
            try:
                reply = await self.connection.request(subjects.inbox_read(self.clinic_id), request, READ_TIMEOUT)
                break
            except nats.errors.NoRespondersError as exc:
                # A referrals process (re)starting answers within moments; ask again until the deadline.
                if loop.time() > deadline:
                    msg = "the hub did not answer the inbox read (is the referrals service running?)"
                    raise HubError(msg) from exc
                await asyncio.sleep(NO_RESPONDERS_PAUSE_SECONDS)
        page = _page.decode(reply.data)
        if page.error:
            raise HubError(page.error)
        return page

    def _items(self, page: InboxPage) -> list[InboxItem]:
        items = []
        for stored in page.messages:
            message = decode_hub_message(bytes(stored.message))
            items.append(
                InboxItem(stored.sequence, subjects.clinic_in(self.clinic_id, message_type(type(message))), message)
            )
        return items

    async def last_event_number(self) -> int:
        """The newest event number in this clinic's inbox (0 while it is empty)."""
        return (await self.read_page(after=NEWEST, limit=1)).last_event_number

    async def inbox_count(self) -> int:
        """How many messages this clinic's inbox holds: its numbers are gap-free, from 1."""
        return await self.last_event_number()

    async def inbox(self, *, since: int = 1, follow: bool = False) -> AsyncGenerator[InboxItem, None]:
        """Inbox messages with event number ``since`` and later; with ``follow``, wait for more.

        Without ``follow`` it stops once it has read what is stored now. Following, it asks
        again whenever this clinic's inbox subject shows activity (a wake-up only: what it
        yields is always what the store holds), a few more times shortly after a wake-up
        that found nothing new yet, and at least every second.
        """
        after = since - 1
        wake = asyncio.Event()
        woken_reads = 0

        async def woken(_raw: Msg) -> None:
            wake.set()

        subscription = (
            await self.connection.subscribe(subjects.clinic_inbox(self.clinic_id), cb=woken) if follow else None
        )
        try:
            while True:
                wake.clear()
                before = after
                page = await self.read_page(after=after)
                for item in self._items(page):
                    after = max(after, item.event_number)
                    yield item
                if after < page.last_event_number:
                    continue
                if not follow:
                    return
                if woken_reads and after == before and woken_reads <= WAKE_REREADS:
                    await asyncio.sleep(WAKE_REREAD_SECONDS * woken_reads)
                    woken_reads += 1
                    continue
                woken_reads = 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), FOLLOW_POLL_SECONDS)
                    woken_reads = 1
        finally:
            if subscription is not None:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()

    async def consume(self, batch: int = 64) -> AsyncIterator[InboxItem]:
        """Read the inbox through the clinic's hub-made durable consumer: at least once, resuming where it left off.

        Each message is acknowledged once the caller asks for the next one, so a process that
        dies mid-message gets it again (after the consumer's ack wait). Every process of a
        clinic that consumes shares the one consumer: each message goes to one of them.
        """
        spec = topology.clinic_inbox_consumer(self.clinic_id)
        subscription = await self.js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
        unsettled: list[Msg] = []
        try:
            while True:
                try:
                    unsettled = await subscription.fetch(batch, timeout=CONSUME_WAIT_SECONDS)
                except TimeoutError:  # nats.errors.TimeoutError subclasses it
                    continue
                while unsettled:
                    raw = unsettled[0]
                    yield InboxItem(raw.metadata.sequence.stream, raw.subject, decode_hub_message(raw.data))
                    await raw.ack()
                    unsettled.pop(0)
        finally:
            # Fetched but not acknowledged (the caller stopped): hand them back at once,
            # rather than after the consumer's ack wait.
            with contextlib.suppress(nats.errors.Error):
                for raw in unsettled:
                    await raw.nak()
                await subscription.unsubscribe()

    async def send_and_confirm(self, message: Message, within: float = 10.0) -> InboxItem:
        """Send ``message`` and wait for the hub's answer in this clinic's inbox.

        The answer is the first inbox message caused by this one: the hub's confirmation
        (for example ``referral.requested``) or a typed ``rejection``.
        """
        _, answer = await self.send_and_wait(message, within)
        if answer is None:
            msg = f"no answer from the hub within {within:.0f}s for message {message.message_id}"
            raise HubError(msg)
        return answer

    async def send_and_wait(self, message: Message, within: float = 10.0) -> tuple[SendReceipt, InboxItem | None]:
        """Send ``message``; return where it was stored and the hub's answer, or ``None`` if none came in time.

        The send is stored either way: a missing answer means the hub has not processed it
        yet (a service is down or behind), never that the message was lost.
        """
        after = await self.last_event_number()
        deadline = asyncio.get_running_loop().time() + within
        receipt = await self.send(message)
        async for item in self._inbox_until(after, deadline):
            if item.message.causation_id == message.message_id:
                return receipt, item
        return receipt, None

    async def _inbox_until(self, after: int, deadline: float) -> AsyncIterator[InboxItem]:
        """Inbox messages numbered above ``after``, as they are stored, until ``deadline`` (loop time)."""
        follower = self.inbox(since=after + 1, follow=True)
        try:
            while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    yield await asyncio.wait_for(anext(follower), remaining)
                except TimeoutError:
                    return
        finally:
            await follower.aclose()
