"""The audit chain's single writer, enforced by the server, not by us.

Entries are appended in JetStream atomic batches (ADR-50): the first message of a batch
carries ``Nats-Expected-Last-Sequence``, and the server stores the whole batch directly
after the head we chained it on, or nothing. Two audit replicas can therefore never fork
the chain: the loser re-reads the head and re-chains. ``Nats-Msg-Id`` is the source
message's stream position, so a source message audited twice yields one entry.

Why not ``Nats-Expected-Last-Msg-Id`` on pipelined publishes, as this writer did first: on
a replicated stream (R3) nats-server 2.15 lets a mismatched expected message id through its
leader and fails it on the replicas, which then report ``stream write error: last msgid
mismatch`` and stop accepting writes (found by ``hubctl up --cluster 3``; see
``tests/test_cluster.py``). Atomic batches are checked once, by the leader, before
replication.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec
import nats.errors
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from referral_hub.audit.checkpoints import make_checkpoint
from referral_hub.audit.domain import GENESIS_HASH, chain
from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry
from referral_hub.runtime import subjects, topology
from referral_hub.runtime.batching import (
    WRONG_LAST_SEQUENCE,
    GroupCommit,
    Pending,
    Publish,
    publish_atomic,
    store_in_order,
)
from referral_hub.runtime.metrics import AUDIT_LAST_CHECKPOINT

MAX_BATCH: Final = 256
"""Entries per atomic batch; the server's own limit is 1,000."""
READ_IDLE_SECONDS: Final = 5.0
"""A chain read ends when nothing more arrives for this long."""
READER_IDLE_SECONDS: Final = 30.0
"""The server removes a chain reader's consumer this long after its last fetch."""
READER_CREATE_ATTEMPTS: Final = 20
READER_RETRY_SECONDS: Final = 0.5
CHAIN: Final = "chain"
"""The one key of the chain's group commit: every entry follows the one before."""
_decoder: Final = msgspec.json.Decoder(AuditEntry)
_encoder: Final = msgspec.json.Encoder()


@dataclass(frozen=True)
class _Append:
    entry: AuditEntry
    dedupe_key: str


class ChainWriter:
    """Appends entries to the audit stream, each chained to the last, in atomic batches.

    Group commit: concurrent ``append`` calls queue up, and one task chains a batch and
    stores it as one atomic batch, one round trip (``runtime.batching``). A batch refused
    because the head moved is chained again on the fresh head. A batch refused because it
    holds a duplicate (a source message audited before a crash) is appended one entry at a
    time, each waiting for its acknowledgement, so the duplicate is skipped and the rest
    re-chained around it.
    """

    def __init__(self, connection: Client, max_batch: int = MAX_BATCH) -> None:
        """Start knowing nothing of the head; the first batch reads it."""
        self._nc = connection
        self._js = connection.jetstream()
        self._head: tuple[int, str] | None = None
        self._group: GroupCommit[str, _Append, AuditEntry] = GroupCommit(self._commit, max_batch)

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
        return await self._group.submit(CHAIN, _Append(entry, dedupe_key))

    async def _commit(self, _key: str, batch: list[Pending[_Append, AuditEntry]]) -> None:
        await store_in_order(batch, self._store, self._forget_head, "audit entries")

    async def _store(self, waiting: list[Pending[_Append, AuditEntry]], one_by_one: bool) -> None:  # noqa: FBT001 - store_in_order's callback shape
        if self._head is None:
            self._head = await self._read_head()
        await (self._publish_each(waiting) if one_by_one else self._publish_atomic(waiting))

    def _forget_head(self) -> None:
        self._head = None

    def _seal(self, batch: list[Pending[_Append, AuditEntry]]) -> list[AuditEntry]:
        """The batch's entries chained on the current head, in order."""
        assert self._head is not None  # noqa: S101 - _commit reads the head first
        index, prev_hash = self._head
        sealed = []
        for offset, pending in enumerate(batch):
            entry = chain(pending.item.entry, index + offset + 1, prev_hash)
            sealed.append(entry)
            prev_hash = entry.entry_hash
        return sealed

    async def _publish_atomic(self, batch: list[Pending[_Append, AuditEntry]]) -> None:
        """Store ``batch`` whole after the head, or raise the server's refusal (nothing stored)."""
        assert self._head is not None  # noqa: S101 - _commit reads the head first
        sealed = self._seal(batch)
        await publish_atomic(
            self._nc,
            [
                Publish(subjects.AUDIT_ENTRY, _encoder.encode(entry), pending.item.dedupe_key)
                for pending, entry in zip(batch, sealed, strict=True)
            ],
            {"Nats-Expected-Last-Sequence": str(self._head[0])},
        )
        for pending, entry in zip(batch, sealed, strict=True):
            pending.done.set_result(entry)
        self._head = (sealed[-1].index, sealed[-1].entry_hash)

    async def _publish_each(self, batch: list[Pending[_Append, AuditEntry]]) -> None:
        """Store ``batch`` one entry at a time, each waiting for the previous one's acknowledgement.

        Slow, and only for a batch holding a duplicate: ``Nats-Expected-Last-Sequence`` on an
        entry sent after its predecessor was acknowledged proves it follows our own entry.
        """
        for pending in batch:
            assert self._head is not None  # noqa: S101 - _store reads the head first
            entry = self._seal([pending])[0]
            headers = {"Nats-Expected-Last-Sequence": str(self._head[0]), "Nats-Msg-Id": pending.item.dedupe_key}
            ack = await self._js.publish(subjects.AUDIT_ENTRY, _encoder.encode(entry), headers=headers)
            pending.done.set_result(entry)
            if not ack.duplicate:
                self._head = (ack.seq, entry.entry_hash)


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
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        ack_policy=api.AckPolicy.NONE,
        mem_storage=True,
        num_replicas=1,
        inactive_threshold=READER_IDLE_SECONDS,
    )
    for attempt in range(1, READER_CREATE_ATTEMPTS + 1):
        try:
            subscription = await js.pull_subscribe(
                subjects.AUDIT_ENTRY, durable=None, stream=topology.AUDIT, config=config
            )
            break
        except (ServiceUnavailableError, nats.errors.TimeoutError):
            # A cluster that just lost or regained a node may refuse consumer creation briefly.
            if attempt == READER_CREATE_ATTEMPTS:
                raise
            await asyncio.sleep(READER_RETRY_SECONDS)
    unavailable = 0
    try:
        while True:
            try:
                fetched = await subscription.fetch(batch, timeout=READ_IDLE_SECONDS)
            except (TimeoutError, nats.errors.TimeoutError):
                return
            except ServiceUnavailableError:
                # On a cluster a just-created reader may answer "no responders" for a moment.
                unavailable += 1
                if unavailable >= READER_CREATE_ATTEMPTS:
                    raise
                await asyncio.sleep(READER_RETRY_SECONDS)
                continue
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
