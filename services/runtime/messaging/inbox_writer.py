"""Delivery to clinic inboxes with per-clinic, gap-free event numbers.

Each inbox message carries ``event_number``: 1, 2, 3 ... per clinic, with no gaps, as FHIR
topic-based subscriptions' ``eventsSinceSubscriptionStart`` does, so a clinic can detect a
missed message and replay from a number.

The server enforces it. Deliveries are published with
``Nats-Expected-Last-Subject-Sequence`` checked against ``clinic.<id>.in.>`` (the
``...-Subject`` header), in per-clinic atomic batches: if anything reached that inbox since
we read its head, JetStream refuses the whole batch, and we re-read and renumber. Two
replicas can therefore never hand out one number twice or skip one. A redelivered
command's copy is refused as a duplicate by its ``Nats-Msg-Id`` and keeps its original
number.
"""

from __future__ import annotations

from typing import Final

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from referral_hub.contracts.codec import encode
from referral_hub.runtime.jetstream import streams, subjects
from referral_hub.runtime.jetstream.batching import GroupCommit, Pending, Publish, publish_atomic, store_in_order
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER
from referral_hub.runtime.messaging.outgoing import ToInbox

MAX_BATCH: Final = 64
"""Deliveries per atomic batch; the server's own limit is 1,000."""
MIN_ATOMIC_BATCH: Final = 4
"""Fewer queued deliveries than this go one at a time: an atomic batch holds up every other
writer of the shared inbox stream while it commits (measured on nats-server 2.15.1: one
writer committing batches of two cut the stream's other publishes from 6,200/s to 4,100/s),
so it pays only where one clinic's queue is long."""
EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_FILTER: Final = "Nats-Expected-Last-Subject-Sequence-Subject"


class _Numbered(msgspec.Struct):
    event_number: int = 0


_numbered: Final = msgspec.json.Decoder(_Numbered)


def event_number_of(data: bytes) -> int:
    """The inbox event number a stored inbox message carries (0 for one that carries none)."""
    try:
        return _numbered.decode(data or b"{}").event_number
    except msgspec.DecodeError:
        return 0


class InboxWriter:
    """Numbers and stores deliveries, one group commit per clinic; different clinics proceed in parallel.

    Deliveries to one clinic queue while its previous ones are being stored. When
    :data:`MIN_ATOMIC_BATCH` or more have queued, they go out together as one JetStream
    atomic batch (``runtime.jetstream.batching``): the first message carries
    ``Nats-Expected-Last-Subject-Sequence`` for the clinic's inbox, so the batch is stored
    right after the head we numbered from, whole, or not at all. One round trip then numbers
    many deliveries; one at a time, a busy clinic's inbox was the hub's bottleneck (every
    delivery waited for the previous one's fsync'd acknowledgement). Fewer go one at a time.
    """

    def __init__(self, connection: Client, max_batch: int = MAX_BATCH) -> None:
        """Heads are read lazily and cached; a refusal by the server refreshes them."""
        self._nc = connection
        self._js = connection.jetstream()
        self._heads: dict[str, tuple[int, int]] = {}
        self._group: GroupCommit[str, ToInbox, int] = GroupCommit(self._commit, max_batch)

    @property
    def jetstream(self) -> JetStreamContext:
        """The writer's JetStream context, for the effects published beside inbox deliveries."""
        return self._js

    async def head(self, clinic: str) -> tuple[int, int]:
        """(stream sequence, event number) of the newest message in ``clinic``'s inbox."""
        try:
            last = await self._js.get_last_msg(streams.CLINIC_IN, subjects.clinic_inbox(clinic))
        except NotFoundError:
            return 0, 0
        return last.seq or 0, event_number_of(last.data or b"")

    async def deliver(self, delivery: ToInbox) -> int:
        """Store the message as the clinic's next event; returns its event number (0 if a duplicate)."""
        return await self._group.submit(delivery.clinic, delivery)

    async def _commit(self, clinic: str, batch: list[Pending[ToInbox, int]]) -> None:
        async def store(waiting: list[Pending[ToInbox, int]], one_by_one: bool) -> None:  # noqa: FBT001 - store_in_order's callback shape
            await (self._store_each(clinic, waiting) if one_by_one else self._store_batch(clinic, waiting))

        def forget_head() -> None:
            self._heads.pop(clinic, None)

        await store_in_order(batch, store, forget_head, f"{clinic}'s inbox deliveries")

    async def _store_batch(self, clinic: str, batch: list[Pending[ToInbox, int]]) -> None:
        """Store ``batch`` numbered after the head, as one atomic batch right after it (or nothing)."""
        if len(batch) < MIN_ATOMIC_BATCH:
            await self._store_each(clinic, batch)
            return
        sequence, number = self._heads.get(clinic) or await self.head(clinic)
        last = await publish_atomic(
            self._nc,
            [_numbered_publish(pending.item, number + offset) for offset, pending in enumerate(batch, start=1)],
            _after(clinic, sequence),
        )
        self._heads[clinic] = (last, number + len(batch))
        for offset, pending in enumerate(batch, start=1):
            pending.done.set_result(number + offset)

    async def _store_each(self, clinic: str, batch: list[Pending[ToInbox, int]]) -> None:
        """Store ``batch`` one delivery at a time, each after the previous one's acknowledgement.

        The way through a batch holding a duplicate: a redelivered command's copy is refused
        by its ``Nats-Msg-Id`` and keeps its original number (its caller hears 0).
        """
        for pending in batch:
            sequence, number = self._heads.get(clinic) or await self.head(clinic)
            message = _numbered_publish(pending.item, number + 1)
            ack = await self._js.publish(
                message.subject, message.payload, headers={MSG_ID_HEADER: message.msg_id, **_after(clinic, sequence)}
            )
            if ack.duplicate:
                self._heads.pop(clinic, None)
                pending.done.set_result(0)
            else:
                self._heads[clinic] = (ack.seq, number + 1)
                pending.done.set_result(number + 1)


def _after(clinic: str, sequence: int) -> dict[str, str]:
    """The headers that make the server store a message only right after ``sequence`` in ``clinic``'s inbox."""
    return {EXPECTED_LAST_SUBJECT_SEQUENCE: str(sequence), EXPECTED_LAST_SUBJECT_FILTER: subjects.clinic_inbox(clinic)}


def _numbered_publish(delivery: ToInbox, number: int) -> Publish:
    numbered = msgspec.structs.replace(delivery.message, event_number=number)
    return Publish(subjects.clinic_in(delivery.clinic, delivery.message_type), encode(numbered), delivery.msg_id)
