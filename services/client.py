"""The Python client partner clinics use: send commands, read the inbox.

It speaks only the public v1 subjects, exactly as a clinic on plain NATS would: publish to
``clinic.<id>.out.<type>`` with ``Nats-Msg-Id`` set to the message id, read
``clinic.<id>.in.>`` from JetStream.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Self

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError

from referral_hub.contracts.base import Message, message_type
from referral_hub.contracts.codec import HubMessage, decode_hub_message, encode
from referral_hub.contracts.inbox import InboxHeartbeat
from referral_hub.errors import HubError
from referral_hub.runtime import credentials, subjects, topology
from referral_hub.runtime.credentials import NatsCredentials
from referral_hub.runtime.servers import server_urls

MSG_ID_HEADER: Final = "Nats-Msg-Id"
STREAM_FULL_CODES: Final = frozenset({10077, 10023})
"""JetStream's refusals of a store that is at its limit: a stream's byte or message budget
(``maximum bytes exceeded``), or the server's own storage (insufficient resources)."""
IDLE_SECONDS: Final = 0.5
INBOX_CONSUMER_IDLE_SECONDS: Final = 30.0
"""How long the server keeps an inbox reader's consumer once nobody listens to it."""


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
        chosen = auth or credentials.for_clinic(clinic_id)
        connection = await nats.connect(
            server_urls(nats_url),
            name=f"clinic-{clinic_id}",
            connect_timeout=5,
            max_reconnect_attempts=3,
            error_cb=silence_nats_error_log,
            **chosen.connect_options(),
        )
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

    def _inbox_consumer(self, deliver_policy: api.DeliverPolicy) -> api.ConsumerConfig:
        """A named consumer on this clinic's inbox only.

        The name puts the filter into the API subject (``CONSUMER.CREATE.CLINIC_IN.<name>.<filter>``),
        which is the one consumer request a clinic's NATS permissions allow.
        """
        return api.ConsumerConfig(
            name=f"inbox-{new_id().hex}",
            filter_subject=subjects.clinic_inbox(self.clinic_id),
            deliver_policy=deliver_policy,
            inactive_threshold=INBOX_CONSUMER_IDLE_SECONDS,
        )

    async def inbox_count(self) -> int:
        """How many messages this clinic's inbox holds.

        Counted by a consumer that is never read (the server drops it when idle): a clinic
        may not read stream info, which would also count other clinics' subjects.
        """
        config = self._inbox_consumer(api.DeliverPolicy.ALL)
        config.deliver_subject = self.connection.new_inbox()
        config.ack_policy = api.AckPolicy.NONE
        config.mem_storage = True
        info = await self.js.add_consumer(topology.CLINIC_IN, config)
        return int(info.num_pending or 0)

    async def inbox(self, *, since: int = 1, follow: bool = False) -> AsyncIterator[InboxItem]:
        """Inbox messages with event number ``since`` and later; with ``follow``, wait for more.

        Without ``follow`` it stops once it has caught up with what is stored now.
        """
        if not follow and await self.inbox_count() == 0:
            return
        subscription = await self.js.subscribe(
            subjects.clinic_inbox(self.clinic_id),
            stream=topology.CLINIC_IN,
            ordered_consumer=True,
            config=self._inbox_consumer(api.DeliverPolicy.ALL),
        )
        try:
            while True:
                try:
                    raw: Msg = await subscription.next_msg(timeout=None if follow else IDLE_SECONDS)
                except (TimeoutError, nats.errors.TimeoutError):
                    return
                item = InboxItem(raw.metadata.sequence.stream, raw.subject, decode_hub_message(raw.data))
                if item.event_number >= since:
                    yield item
                if not follow and raw.metadata.num_pending == 0:
                    return
        finally:
            await subscription.unsubscribe()

    async def send_and_confirm(self, message: Message, within: float = 10.0) -> InboxItem:
        """Send ``message`` and wait for the hub's answer in this clinic's inbox.

        The answer is the first inbox message caused by this one: the hub's confirmation
        (for example ``referral.requested``) or a typed ``rejection``.
        """
        subscription = await self.js.subscribe(
            subjects.clinic_inbox(self.clinic_id),
            stream=topology.CLINIC_IN,
            ordered_consumer=True,
            config=self._inbox_consumer(api.DeliverPolicy.NEW),
        )
        try:
            await self.send(message)
            deadline = asyncio.get_running_loop().time() + within
            while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    raw = await subscription.next_msg(timeout=remaining)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                item = InboxItem(raw.metadata.sequence.stream, raw.subject, decode_hub_message(raw.data))
                if item.message.causation_id == message.message_id:
                    return item
        finally:
            await subscription.unsubscribe()
        msg = f"no answer from the hub within {within:.0f}s for message {message.message_id}"
        raise HubError(msg)
