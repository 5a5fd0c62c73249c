"""The audit chain's single writer, enforced by the server, not by us.

Every append carries ``Nats-Expected-Last-Sequence`` (and, inside a pipelined batch,
``Nats-Expected-Last-Msg-Id``): JetStream refuses it if anything else was appended since,
so two audit replicas can never fork the chain. The loser re-reads the head and re-chains.
``Nats-Msg-Id`` is the source message's stream position, so a source message audited twice
yields one entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec
import nats.errors
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from referral_hub.audit.checkpoints import make_checkpoint
from referral_hub.audit.domain import GENESIS_HASH, chain
from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry
from referral_hub.errors import HubError
from referral_hub.runtime import subjects, topology
from referral_hub.runtime.metrics import AUDIT_LAST_CHECKPOINT

WRONG_LAST_SEQUENCE: Final = 10071
WRONG_LAST_MSG_ID: Final = 10070
CHAIN_MOVED: Final = frozenset({WRONG_LAST_SEQUENCE, WRONG_LAST_MSG_ID})
"""The server's answers when the chain's head is not where a message expects it."""
MAX_BATCH: Final = 256
READ_IDLE_SECONDS: Final = 5.0
"""A chain read ends when nothing more arrives for this long."""
READER_IDLE_SECONDS: Final = 30.0
"""The server removes a chain reader's consumer this long after its last fetch."""
MAX_ATTEMPTS: Final = 50
BACKOFF_SECONDS: Final = 0.002
"""Base of the jittered pause after losing a race, so two writers stop colliding in lockstep."""
_decoder: Final = msgspec.json.Decoder(AuditEntry)
_encoder: Final = msgspec.json.Encoder()


class ChainContentionError(HubError):
    """Another writer kept winning; the message is redelivered and tried again later."""


@dataclass
class _Pending:
    entry: AuditEntry
    dedupe_key: str
    done: asyncio.Future[AuditEntry]


class ChainWriter:
    """Appends entries to the audit stream, each chained to the last, in pipelined batches.

    Group commit: concurrent ``append`` calls queue up, and one task chains a batch and
    publishes it without waiting between messages. Message ``i`` of a batch carries
    ``Nats-Expected-Last-Sequence`` (head + i) and ``Nats-Expected-Last-Msg-Id`` (the id of
    message ``i - 1``), so the server stores it only directly after our own predecessor:
    a message whose predecessor was refused, de-duplicated or overtaken by another writer is
    refused too, and is chained again on the fresh head. The chain can never fork or skip.
    """

    def __init__(self, js: JetStreamContext, max_batch: int = MAX_BATCH) -> None:
        """Start knowing nothing of the head; the first batch reads it."""
        self._js = js
        self._max_batch = max_batch
        self._head: tuple[int, str] | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._committer: asyncio.Task[None] | None = None

    async def _read_head(self) -> tuple[int, str]:
        try:
            last = await self._js.get_last_msg(topology.AUDIT, subjects.AUDIT_ENTRY)
        except NotFoundError:
            return 0, GENESIS_HASH
        if last.data is None:
            return 0, GENESIS_HASH
        entry = _decoder.decode(last.data)
        return entry.index, entry.entry_hash

    async def append(self, entry: AuditEntry, dedupe_key: str) -> AuditEntry:
        """Chain and store ``entry``; returns it as stored (or as first stored, if a duplicate)."""
        done: asyncio.Future[AuditEntry] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(entry, dedupe_key, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_forever())
        return await done

    async def _commit_forever(self) -> None:
        while not self._queue.empty():
            batch = [self._queue.get_nowait()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of the failure, not just one
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
                self._head = None

    async def _commit(self, batch: list[_Pending]) -> None:
        waiting = batch
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if self._head is None:
                self._head = await self._read_head()
            waiting = await self._publish(waiting)
            if not waiting:
                return
            self._head = None
            await asyncio.sleep(random.uniform(0, BACKOFF_SECONDS * attempt))  # noqa: S311 - jitter, not security
        msg = f"could not append to the audit chain after {MAX_ATTEMPTS} attempts"
        raise ChainContentionError(msg)

    async def _publish(self, batch: list[_Pending]) -> list[_Pending]:
        """Publish ``batch`` pipelined on the current head; returns what must be chained again."""
        assert self._head is not None  # noqa: S101 - _commit reads the head first
        index, prev_hash = self._head
        sealed, publishes = [], []
        for offset, pending in enumerate(batch):
            entry = chain(pending.entry, index + offset + 1, prev_hash)
            headers = {"Nats-Expected-Last-Sequence": str(index + offset), "Nats-Msg-Id": pending.dedupe_key}
            if offset:
                headers["Nats-Expected-Last-Msg-Id"] = batch[offset - 1].dedupe_key
            publishes.append(self._js.publish(subjects.AUDIT_ENTRY, _encoder.encode(entry), headers=headers))
            sealed.append(entry)
            prev_hash = entry.entry_hash
        # Concurrent requests, not publish_async: nats-py 2.16's async-publish reply handler
        # raises (instead of failing the future) when the server refuses with a known code, so
        # a refused expected-sequence publish would leave its future waiting forever.
        results = await asyncio.gather(*publishes, return_exceptions=True)
        for position, (pending, entry, result) in enumerate(zip(batch, sealed, results, strict=True)):
            if isinstance(result, APIError) and result.err_code in CHAIN_MOVED:
                return batch[position:]
            if isinstance(result, BaseException):
                raise result
            pending.done.set_result(entry)
            if result.duplicate:
                return batch[position + 1 :]
            self._head = (result.seq, entry.entry_hash)
        return []


async def read_chain(
    js: JetStreamContext, batch: int = 1000, start: int = 1, count: int | None = None
) -> AsyncIterator[AuditEntry]:
    """Audit entries in order through an ordered consumer: all of them, or ``count`` from index ``start``.

    Every entry is read exactly once, in stream order, or the reader stops early (nothing
    more arrived for a while). Stream sequences are checked: should one ever jump, reading
    starts again at the first one missing instead of skipping it. Before, the push consumer
    used here dropped deliveries to a reader slower than the server, so a verify or a
    checkpoint over some ten thousand entries could miss a few (found by the fuzz test).
    """
    info = await js.stream_info(topology.AUDIT)
    available = info.state.last_seq - start + 1 if info.state.messages else 0
    total = min(available, count) if count is not None else available
    wanted, end = start, start + max(total, 0)
    while wanted < end:
        resumed_at = wanted
        async with contextlib.aclosing(_ordered_from(js, wanted, batch)) as deliveries:
            async for sequence, raw in deliveries:
                if sequence != wanted:
                    break
                wanted += 1
                yield _decoder.decode(raw)
                if wanted == end:
                    return
        if wanted == resumed_at:
            return


async def _ordered_from(js: JetStreamContext, start: int, batch: int) -> AsyncGenerator[tuple[int, bytes], None]:
    """(stream sequence, data) of the audit stream from ``start`` until nothing more arrives.

    A pull consumer, fetched ``batch`` at a time: the reader sets the pace, so nothing is
    buffered beyond one batch and nothing is dropped. (A push consumer outran a slow reader:
    nats-py dropped deliveries and the flow-control request with them, and the read stalled.)
    """
    subscription = await js.pull_subscribe(
        subjects.AUDIT_ENTRY,
        durable=None,
        stream=topology.AUDIT,
        config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=READER_IDLE_SECONDS,
        ),
    )
    try:
        while True:
            try:
                fetched = await subscription.fetch(batch, timeout=READ_IDLE_SECONDS)
            except (TimeoutError, nats.errors.TimeoutError):
                return
            for raw in fetched:
                yield raw.metadata.sequence.stream, raw.data
    finally:
        await subscription.unsubscribe()


_checkpoint_decoder: Final = msgspec.json.Decoder(AuditCheckpoint)


async def read_checkpoints(js: JetStreamContext) -> list[AuditCheckpoint]:
    """Every published checkpoint, in order (there are few: one per N entries or T seconds)."""
    info = await js.stream_info(topology.AUDIT_CHECKPOINTS)
    if info.state.messages == 0:
        return []
    return [
        _checkpoint_decoder.decode((await js.get_msg(topology.AUDIT_CHECKPOINTS, seq)).data or b"")
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


class Checkpointer:
    """Publishes a signed checkpoint every ``every_entries`` entries or ``every_seconds``.

    Several audit replicas may run it: each publish carries ``Nats-Expected-Last-Sequence``
    of the checkpoint stream, so only one checkpoint follows another, and the loser skips.
    """

    def __init__(
        self, js: JetStreamContext, key: Ed25519PrivateKey, every_entries: int = 1000, every_seconds: float = 60.0
    ) -> None:
        """Sign with ``key``."""
        self._js = js
        self._key = key
        self._every_entries = every_entries
        self._every_seconds = every_seconds

    async def _last(self) -> tuple[AuditCheckpoint | None, int]:
        try:
            last = await self._js.get_last_msg(topology.AUDIT_CHECKPOINTS, subjects.AUDIT_CHECKPOINT)
        except NotFoundError:
            return None, 0
        return _checkpoint_decoder.decode(last.data or b""), last.seq or 0

    async def run_once(self, now: datetime) -> AuditCheckpoint | None:
        """Publish a checkpoint if one is due; returns it, or ``None``."""
        previous, sequence = await self._last()
        if previous is not None:
            AUDIT_LAST_CHECKPOINT.set(previous.created_at.timestamp())
        head = (await self._js.stream_info(topology.AUDIT)).state.last_seq
        start = previous.to_index + 1 if previous else 1
        pending = head - start + 1
        age = (now - previous.created_at).total_seconds() if previous else float("inf")
        if pending <= 0 or (pending < self._every_entries and age < self._every_seconds):
            return None
        entries = [entry async for entry in read_chain(self._js, start=start, count=pending)]
        if len(entries) != pending:
            return None
        checkpoint = make_checkpoint(entries, previous, self._key, now)
        try:
            await self._js.publish(
                subjects.AUDIT_CHECKPOINT,
                _encoder.encode(checkpoint),
                headers={
                    "Nats-Expected-Last-Sequence": str(sequence),
                    "Nats-Msg-Id": f"checkpoint-{checkpoint.checkpoint_index}",
                },
            )
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            return None
        AUDIT_LAST_CHECKPOINT.set(checkpoint.created_at.timestamp())
        return checkpoint
