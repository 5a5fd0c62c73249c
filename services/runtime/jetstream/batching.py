"""Group commit and JetStream atomic batches: how writes that must not interleave are stored.

Concurrent writes queue per key, and one task commits what has queued up as one JetStream
atomic batch (ADR-50). The first message carries the expectation
(``Nats-Expected-Last-Sequence``), and the server stores the whole batch right after it, or
nothing. One round trip stores many messages, and a lost race costs one retry of the batch
instead of a fork or a gap. Two users: the audit chain (``audit.adapters.ChainWriter``,
one key) and the clinic inboxes (``runtime.messaging.inbox_writer.InboxWriter``, one key per clinic,
expecting ``Nats-Expected-Last-Subject-Sequence`` on the clinic's inbox subjects).

A core NATS subscriber on the stream's subjects sees a batch's messages as they are sent,
before the commit and even when the server then refuses the batch, exactly as it sees a
single publish that JetStream refuses. Only what a JetStream consumer reads was stored.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.js.errors import APIError

from referral_hub.errors import HubError
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER

WRONG_LAST_SEQUENCE: Final = 10071
BATCH_HAS_DUPLICATE: Final = 10201
"""The server's answer to an atomic batch holding a message id it has already stored."""
COMMIT_TIMEOUT_SECONDS: Final = 10.0
MAX_ATTEMPTS: Final = 50
BACKOFF_SECONDS: Final = 0.002
"""Base of the jittered pause after losing a race, so two writers stop colliding in lockstep."""
_ack_decoder: Final = msgspec.json.Decoder(dict[str, object])

Item = TypeVar("Item")
Result = TypeVar("Result")
Key = TypeVar("Key", bound=Hashable)


class ContentionError(HubError):
    """Other writers kept winning the race; the inputs are redelivered and tried again later."""


class AtomicBatchError(HubError):
    """The server answered an atomic batch's commit with something that is neither an ack nor an error."""


@dataclass(frozen=True)
class Publish:
    """One message of an atomic batch."""

    subject: str
    payload: bytes
    msg_id: str


async def publish_atomic(connection: Client, messages: Sequence[Publish], expect: dict[str, str]) -> int:
    """Store ``messages`` as one atomic batch with the headers ``expect`` on the first; returns the last sequence.

    Raises the server's refusal as the typed ``APIError`` (nothing was stored then).
    """
    batch_id = uuid.uuid4().hex
    last = len(messages) - 1
    for position, message in enumerate(messages):
        headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(position + 1), MSG_ID_HEADER: message.msg_id}
        if position == 0:
            headers.update(expect)
        if position < last:
            await connection.publish(message.subject, message.payload, headers=headers)
            continue
        headers["Nats-Batch-Commit"] = "1"
        reply = await connection.request(
            message.subject, message.payload, timeout=COMMIT_TIMEOUT_SECONDS, headers=headers
        )
        return _sequence_or_refusal(reply.data)
    msg = "an atomic batch needs at least one message"
    raise AtomicBatchError(msg)


def _sequence_or_refusal(reply: bytes) -> int:
    answer = _ack_decoder.decode(reply)
    error = answer.get("error")
    if isinstance(error, dict):
        APIError.from_error(error)  # raises the typed error (BadRequestError, ...)
    sequence = answer.get("seq")
    if not isinstance(sequence, int):
        msg = f"unexpected reply to an atomic batch commit: {reply[:200]!r}"
        raise AtomicBatchError(msg)
    return sequence


@dataclass
class Pending(Generic[Item, Result]):
    """One queued write and the future its caller awaits."""

    item: Item
    done: asyncio.Future[Result]


class GroupCommit(Generic[Key, Item, Result]):
    """Per key, queue concurrent writes and commit them in batches, one batch at a time.

    ``commit(key, batch)`` must resolve every future in ``batch`` or raise; if it raises,
    every caller of that batch, and of every write queued behind it, hears of the failure
    (and retries through redelivery): a key's writes are stored in the order they were
    queued, never with a gap left by a failed batch.
    """

    def __init__(self, commit: Callable[[Key, list[Pending[Item, Result]]], Awaitable[None]], max_batch: int) -> None:
        """Batches hold at most ``max_batch`` writes."""
        self._commit = commit
        self._max_batch = max_batch
        self._queues: defaultdict[Key, list[Pending[Item, Result]]] = defaultdict(list)
        self._committers: dict[Key, asyncio.Task[None]] = {}

    async def submit(self, key: Key, item: Item) -> Result:
        """Queue ``item`` under ``key`` and wait until its batch is committed."""
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queues[key].append(Pending(item, done))
        committer = self._committers.get(key)
        if committer is None or committer.done():
            self._committers[key] = asyncio.create_task(self._commit_forever(key))
        return await done

    async def _commit_forever(self, key: Key) -> None:
        queue = self._queues[key]
        while queue:
            batch = queue[: self._max_batch]
            del queue[: len(batch)]
            try:
                await self._commit(key, batch)
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of the failure, not just one
                # What queued behind a failed batch fails with it: a caller's writes to one key
                # may span two batches, and the later half must not be stored without the
                # earlier (a referral's re-announced step ahead of its successor, decision 0002).
                batch += queue
                del queue[:]
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(exc)


async def store_in_order(
    batch: list[Pending[Item, Result]],
    store: Callable[[list[Pending[Item, Result]], bool], Awaitable[None]],
    forget_head: Callable[[], None],
    what: str,
) -> None:
    """Store ``batch`` right after the head its writer numbered or chained it from, retrying lost races.

    ``store(waiting, one_by_one)`` resolves the futures of what it stored, reading the head
    itself when it has none; it stores everything as one atomic batch, or, with
    ``one_by_one``, one message at a time, each after the previous acknowledgement. A batch
    refused for holding a duplicate (a redelivered input's copy) is retried one by one, so
    the duplicate is skipped and the rest follow it. A refusal because the head moved
    forgets the head and retries after a jittered pause; anything else forgets the head
    (a timeout leaves it unknown what was stored) and raises.
    """
    one_by_one = False
    for attempt in range(1, MAX_ATTEMPTS + 1):
        waiting = [pending for pending in batch if not pending.done.done()]
        if not waiting:
            return
        try:
            await store(waiting, one_by_one)
        except APIError as exc:
            if exc.err_code == BATCH_HAS_DUPLICATE:
                one_by_one = True
                continue
            forget_head()
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            await asyncio.sleep(random.uniform(0, BACKOFF_SECONDS * attempt))  # noqa: S311 - jitter, not security
        except Exception:
            forget_head()
            raise
    msg = f"could not store {what} after {MAX_ATTEMPTS} attempts"
    raise ContentionError(msg)
