"""The audit chain's single writer, enforced by the server, not by us; and the chain's readers.

Entries are appended in JetStream atomic batches (ADR-50): the first message of a batch
carries ``Nats-Expected-Last-Sequence``, the AUDIT stream's last sequence as the writer read
it, and the server stores the whole batch directly after that, or nothing. Two audit
replicas can therefore never fork the chain: the loser re-reads the head and re-chains.
``Nats-Msg-Id`` is the source message's stream position, so a source message audited twice
yields one entry.

The expectation is the stream's own last sequence, not the last entry's index. Should
anything other than the audit service ever store a message in the stream (a *foreign*
message: before the audit log had its own NATS account, a push consumer's unchecked
``deliver_subject`` could do that), the writer chains on the last valid entry, expects the
foreign message's sequence and keeps appending; the foreign message is logged and counted
(``hub_audit_foreign_messages_total``), and readers leave it out of the chain and name it.
An entry's index is its position in the chain; its stream sequence is the same, or higher
by the foreign messages stored before it. The checkpointer treats AUDIT_CHECKPOINTS alike.

Readers use JetStream direct gets (``runtime.jetstream.directget``), never a consumer: outside the
audit service nobody may create a consumer on the audit streams.

Why not ``Nats-Expected-Last-Msg-Id`` on pipelined publishes: on
a replicated stream (R3) nats-server 2.15 lets a mismatched expected message id through its
leader and fails it on the replicas, which then report ``stream write error: last msgid
mismatch`` and stop accepting writes (``tests/test_cluster.py`` shows it). Atomic batches
are checked once, by the leader, before replication.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol, TypeVar

import msgspec
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError

from referral_hub.audit.checkpoints import SigningKeys, chain_onto, make_checkpoint
from referral_hub.audit.domain import GENESIS_HASH, chain, entry_hash
from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry, CheckpointWitnessed
from referral_hub.contracts.base import message_type
from referral_hub.errors import HubError
from referral_hub.runtime.hosting.metrics import AUDIT_FOREIGN_MESSAGES, AUDIT_LAST_CHECKPOINT
from referral_hub.runtime.jetstream import directget, streams, subjects
from referral_hub.runtime.jetstream.batching import (
    WRONG_LAST_SEQUENCE,
    GroupCommit,
    Pending,
    Publish,
    publish_atomic,
    store_in_order,
)
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER

MAX_BATCH: Final = 256
"""Entries per atomic batch; the server's own limit is 1,000."""
CHAIN: Final = "chain"
"""The one key of the chain's group commit: every entry follows the one before."""
ENTRIES: Final = "audit entries"
CHECKPOINTS: Final = "checkpoints"
MAX_LISTED: Final = 10
"""Foreign messages named one by one in an error; the rest are counted."""
MAX_REMEMBERED: Final = 10_000
"""Foreign messages a :class:`ForeignLog` remembers having reported, so each is logged and counted once."""
_decoder: Final = msgspec.json.Decoder(AuditEntry)
_checkpoint_decoder: Final = msgspec.json.Decoder(AuditCheckpoint)
_encoder: Final = msgspec.json.Encoder()
WITNESS_COPY: Final = message_type(CheckpointWitnessed)
"""The audit entries of checkpoints delivered to inboxes: alone, they never make a checkpoint due."""
log = structlog.get_logger(__name__)
Valid = TypeVar("Valid")


@dataclass(frozen=True)
class ForeignMessage:
    """A message in an audit stream that is not what the stream holds (an audit entry, a checkpoint)."""

    stream: str
    sequence: int
    subject: str
    size: int

    def __str__(self) -> str:
        """How errors and logs name it: by stream and sequence."""
        return f"{self.stream} sequence {self.sequence} ({self.subject}, {self.size} bytes)"


OnForeign = Callable[[ForeignMessage], None]
"""What a reader does with a foreign message it skips."""


class ForeignMessagesError(HubError):
    """A reader not told what to do with foreign messages met some; raised after everything else was read."""

    def __init__(self, kind: str, found: Sequence[ForeignMessage]) -> None:
        """Name the first few of ``found``, messages that are not ``kind``."""
        self.found = tuple(found)
        listed = ", ".join(str(message) for message in found[:MAX_LISTED])
        more = f" and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
        plural = "s" if len(found) > 1 else ""
        super().__init__(
            f"the audit log holds {len(found)} foreign message{plural}, not {kind} and not written by the audit "
            f"service: {listed}{more}; left out of the log, which is read around them"
        )


class ForeignLog:
    """Logs each foreign message it is told of and counts it (``hub_audit_foreign_messages_total``), once."""

    def __init__(self) -> None:
        """Nothing reported yet."""
        self._seen: set[tuple[str, int]] = set()

    def __call__(self, message: ForeignMessage) -> None:
        """Report ``message`` unless this log already has (the writer meets a foreign tail on every re-read)."""
        key = (message.stream, message.sequence)
        if key in self._seen:
            return
        if len(self._seen) < MAX_REMEMBERED:
            self._seen.add(key)
        AUDIT_FOREIGN_MESSAGES.labels(stream=message.stream).inc()
        log.warning(
            "foreign message in the audit log, skipped",
            stream=message.stream,
            sequence=message.sequence,
            subject=message.subject,
            size=message.size,
        )


def _entry(subject: str, data: bytes) -> AuditEntry | None:
    """The audit entry ``data`` holds, or ``None`` if it is a foreign message."""
    if subject != subjects.AUDIT_ENTRY:
        return None
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None


def _checkpoint(subject: str, data: bytes) -> AuditCheckpoint | None:
    """The checkpoint ``data`` holds, or ``None`` if it is a foreign message."""
    if subject != subjects.AUDIT_CHECKPOINT:
        return None
    try:
        return _checkpoint_decoder.decode(data)
    except msgspec.DecodeError:
        return None


async def _last_valid(
    js: JetStreamContext,
    stream: str,
    valid: Callable[[int, str, bytes], Valid | None],
    on_foreign: OnForeign,
) -> tuple[int, Valid | None]:
    """The stream's last sequence, and its last message that ``valid`` accepts (through the leader).

    Walks back over the messages ``valid`` refuses, reporting each to ``on_foreign``. Reads
    go to the stream's leader: a replica's direct get may lag, and a head read from a
    lagging replica would chain a batch on an older entry than the one the server expects.
    """
    state = (await js.stream_info(stream)).state
    sequence = state.last_seq
    while state.messages and sequence >= state.first_seq:
        stored = await directget.leader_get(js, stream, {"seq": sequence})
        if stored is not None:
            found = valid(stored.sequence, stored.subject, stored.data)
            if found is not None:
                return state.last_seq, found
            on_foreign(ForeignMessage(stream, stored.sequence, stored.subject, len(stored.data)))
        sequence -= 1
    return state.last_seq, None


@dataclass(frozen=True)
class ChainHead:
    """Where the next entry goes: after the stream's last ``sequence``, chained on entry ``index``."""

    sequence: int
    """The AUDIT stream's last sequence: the next batch's ``Nats-Expected-Last-Sequence``."""
    index: int
    """The last valid entry's index (0 before the first)."""
    entry_hash: str
    """The last valid entry's hash (the genesis hash before the first)."""


def _chainable(sequence: int, subject: str, data: bytes) -> tuple[int, str] | None:
    """(index, hash) of an entry the chain may continue from: well formed, self-consistent, in place."""
    entry = _entry(subject, data)
    if entry is None or not 1 <= entry.index <= sequence or entry_hash(entry) != entry.entry_hash:
        return None
    return entry.index, entry.entry_hash


async def read_head(js: JetStreamContext, on_foreign: OnForeign) -> ChainHead:
    """The chain's head as the stream's leader holds it, foreign messages at the end stepped over."""
    sequence, found = await _last_valid(js, streams.AUDIT, _chainable, on_foreign)
    index, head_hash = found or (0, GENESIS_HASH)
    return ChainHead(sequence, index, head_hash)


@dataclass(frozen=True)
class _Append:
    entry: AuditEntry
    dedupe_key: str


class ChainWriter:
    """Appends entries to the audit stream, each chained to the last, in atomic batches.

    Group commit: concurrent ``append`` calls queue up, and one task chains a batch and
    stores it as one atomic batch, one round trip (``runtime.jetstream.batching``). A batch refused
    because the head moved is chained again on the fresh head. A batch refused because it
    holds a duplicate (a source message audited before a crash) is appended one entry at a
    time, each waiting for its acknowledgement, so the duplicate is skipped and the rest
    re-chained around it.
    """

    def __init__(self, connection: Client, max_batch: int = MAX_BATCH) -> None:
        """Start knowing nothing of the head; the first batch reads it."""
        self._nc = connection
        self._js = connection.jetstream()
        self._head: ChainHead | None = None
        self._foreign = ForeignLog()
        self._group: GroupCommit[str, _Append, AuditEntry] = GroupCommit(self._commit, max_batch)

    async def append(self, entry: AuditEntry, dedupe_key: str) -> AuditEntry:
        """Chain and store ``entry``; returns it as stored (or as first stored, if a duplicate)."""
        return await self._group.submit(CHAIN, _Append(entry, dedupe_key))

    async def _commit(self, _key: str, batch: list[Pending[_Append, AuditEntry]]) -> None:
        await store_in_order(batch, self._store, self._forget_head, "audit entries")

    async def _store(self, waiting: list[Pending[_Append, AuditEntry]], one_by_one: bool) -> None:  # noqa: FBT001 - store_in_order's callback shape
        head = self._head or await read_head(self._js, self._foreign)
        self._head = head
        await (self._publish_each(waiting) if one_by_one else self._publish_atomic(waiting, head))

    def _forget_head(self) -> None:
        self._head = None

    @staticmethod
    def _seal(batch: list[Pending[_Append, AuditEntry]], head: ChainHead) -> list[AuditEntry]:
        """The batch's entries chained on ``head``, in order."""
        prev_hash, sealed = head.entry_hash, []
        for offset, pending in enumerate(batch):
            entry = chain(pending.item.entry, head.index + offset + 1, prev_hash)
            sealed.append(entry)
            prev_hash = entry.entry_hash
        return sealed

    async def _publish_atomic(self, batch: list[Pending[_Append, AuditEntry]], head: ChainHead) -> None:
        """Store ``batch`` whole right after ``head.sequence``, or raise the server's refusal (nothing stored)."""
        sealed = self._seal(batch, head)
        last_sequence = await publish_atomic(
            self._nc,
            [
                Publish(subjects.AUDIT_ENTRY, _encoder.encode(entry), pending.item.dedupe_key)
                for pending, entry in zip(batch, sealed, strict=True)
            ],
            {"Nats-Expected-Last-Sequence": str(head.sequence)},
        )
        for pending, entry in zip(batch, sealed, strict=True):
            pending.done.set_result(entry)
        self._head = ChainHead(last_sequence, sealed[-1].index, sealed[-1].entry_hash)

    async def _publish_each(self, batch: list[Pending[_Append, AuditEntry]]) -> None:
        """Store ``batch`` one entry at a time, each waiting for the previous one's acknowledgement.

        Slow, and only for a batch holding a duplicate: ``Nats-Expected-Last-Sequence`` on an
        entry sent after its predecessor was acknowledged proves it follows our own entry.
        """
        for pending in batch:
            assert self._head is not None  # noqa: S101 - _store reads the head first
            entry = self._seal([pending], self._head)[0]
            headers = {
                "Nats-Expected-Last-Sequence": str(self._head.sequence),
                MSG_ID_HEADER: pending.item.dedupe_key,
            }
            ack = await self._js.publish(subjects.AUDIT_ENTRY, _encoder.encode(entry), headers=headers)
            pending.done.set_result(entry)
            if not ack.duplicate:
                self._head = ChainHead(ack.seq, entry.index, entry.entry_hash)


async def read_chain(
    js: JetStreamContext,
    batch: int = directget.BATCH,
    start: int = 1,
    count: int | None = None,
    *,
    foreign: OnForeign | None = None,
) -> AsyncIterator[AuditEntry]:
    """Audit entries in stream order by direct gets: all of them, or ``count`` from index ``start``.

    Reads up to the stream's end as it is when the read begins, ``batch`` messages per
    request, and creates nothing on the server. An entry's stream sequence is never below
    its index, so the read starts at sequence ``start`` and skips the entries before index
    ``start`` (there are some only if foreign messages came before). From there on every
    entry is yielded as stored, for verification to judge.

    Foreign messages (not an audit entry) are left out and passed to ``foreign``; without
    it, the read raises :class:`ForeignMessagesError` naming them once every entry has been
    yielded, so no reader mistakes a log with foreign messages for a clean one.
    """
    if count is not None and count <= 0:
        return
    found: list[ForeignMessage] = []
    skip = foreign or found.append
    yielded, started = 0, start <= 1
    size = batch if count is None else min(batch, count)
    entries = directget.read_stream(js, streams.AUDIT, start, subject=subjects.AUDIT_ENTRY, batch=size)
    async with contextlib.aclosing(entries) as stored:
        async for sequence, subject, data in stored:
            entry = _entry(subject, data)
            if entry is None:
                skip(ForeignMessage(streams.AUDIT, sequence, subject, len(data)))
                continue
            if not started and entry.index < start:
                continue
            started = True
            yield entry
            yielded += 1
            if yielded == count:
                break
    if found:
        raise ForeignMessagesError(ENTRIES, found)


async def read_checkpoints(js: JetStreamContext, *, foreign: OnForeign | None = None) -> list[AuditCheckpoint]:
    """Every published checkpoint, in order, by direct gets (there are few: one per N entries or T seconds).

    Foreign messages are handled as :func:`read_chain` handles them.
    """
    found: list[ForeignMessage] = []
    skip = foreign or found.append
    checkpoints = []
    published = directget.read_stream(js, streams.AUDIT_CHECKPOINTS, subject=subjects.AUDIT_CHECKPOINT)
    async with contextlib.aclosing(published) as stored:
        async for sequence, subject, data in stored:
            checkpoint = _checkpoint(subject, data)
            if checkpoint is None:
                skip(ForeignMessage(streams.AUDIT_CHECKPOINTS, sequence, subject, len(data)))
            else:
                checkpoints.append(checkpoint)
    if found:
        raise ForeignMessagesError(CHECKPOINTS, found)
    return checkpoints


def _checkpoint_at(_sequence: int, subject: str, data: bytes) -> AuditCheckpoint | None:
    return _checkpoint(subject, data)


class Witnesses(Protocol):
    """Where a published checkpoint is also delivered (``audit.witnessing.InboxWitnesses``: every clinic's inbox)."""

    async def deliver(self, checkpoint: AuditCheckpoint) -> list[str]:
        """Deliver ``checkpoint``; returns who got it."""
        ...


class Checkpointer:
    """Publishes a signed checkpoint every ``every_entries`` entries or ``every_seconds``.

    Several audit replicas may run it: each publish carries ``Nats-Expected-Last-Sequence``
    of the checkpoint stream, so only one checkpoint follows another, and the loser skips.
    A foreign message in either stream is stepped over, logged and counted, never chained on.

    It chains only onto a checkpoint its own key signed, or the key it is rotating from
    (``checkpoints.chain_onto``); then it signs with both, once. A checkpoint signed by
    anyone else (a forgery stored as ``audit``, or a rotation this replica was not told of)
    stops it: it publishes nothing, and logs an error naming that checkpoint once. Chaining
    on would make a forgery part of the signed history, and stepping over it would fork the
    checkpoint chain. ``hub_audit_last_checkpoint_timestamp_seconds`` then ages, which is what
    the stale-checkpoint alert watches.

    With ``witnesses``, every checkpoint it publishes is delivered there too. Entries that
    record nothing but such deliveries never make a checkpoint due (or each checkpoint's
    copies would be the next one's reason, forever); the next checkpoint covers them.
    """

    def __init__(
        self,
        js: JetStreamContext,
        keys: SigningKeys,
        every_entries: int = 1000,
        every_seconds: float = 60.0,
        witnesses: Witnesses | None = None,
    ) -> None:
        """Sign with ``keys.current`` (and ``keys.previous`` on the rotation checkpoint)."""
        self._js = js
        self._keys = keys
        self._every_entries = every_entries
        self._every_seconds = every_seconds
        self._witnesses = witnesses
        self._foreign = ForeignLog()
        self._refused = 0

    async def _last(self) -> tuple[AuditCheckpoint | None, int]:
        """The last checkpoint and the checkpoint stream's last sequence (the next one's expectation)."""
        sequence, previous = await _last_valid(self._js, streams.AUDIT_CHECKPOINTS, _checkpoint_at, self._foreign)
        return previous, sequence

    def _refuse(self, previous: AuditCheckpoint) -> None:
        if self._refused == previous.checkpoint_index:
            return
        self._refused = previous.checkpoint_index
        log.error(
            "the last audit checkpoint is not signed by this service's key nor the key it rotates from: "
            "publishing no checkpoint on top of it",
            checkpoint=previous.checkpoint_index,
            key=self._keys.current.verifier.label,
            previous_key=self._keys.previous.verifier.label if self._keys.previous else "",
        )

    async def run_once(self, now: datetime) -> AuditCheckpoint | None:
        """Publish a checkpoint if one is due; returns it, or ``None``."""
        previous, sequence = await self._last()
        co_signers = chain_onto(previous, self._keys)
        if co_signers is None:
            assert previous is not None  # noqa: S101 - chain_onto accepts starting the chain
            self._refuse(previous)
            return None
        if previous is not None:
            AUDIT_LAST_CHECKPOINT.set(previous.created_at.timestamp())
        head = (await read_head(self._js, self._foreign)).index
        start = previous.to_index + 1 if previous else 1
        pending = head - start + 1
        age = (now - previous.created_at).total_seconds() if previous else float("inf")
        if pending <= 0 or (pending < self._every_entries and age < self._every_seconds):
            return None
        entries = [entry async for entry in read_chain(self._js, start=start, count=pending, foreign=self._foreign)]
        if len(entries) != pending:
            return None
        if all(entry.message_type == WITNESS_COPY for entry in entries):
            return None
        checkpoint = make_checkpoint(entries, previous, self._keys.current, now, co_signers=co_signers)
        try:
            await self._js.publish(
                subjects.AUDIT_CHECKPOINT,
                _encoder.encode(checkpoint),
                headers={
                    "Nats-Expected-Last-Sequence": str(sequence),
                    MSG_ID_HEADER: f"checkpoint-{checkpoint.checkpoint_index}",
                },
            )
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            return None
        AUDIT_LAST_CHECKPOINT.set(checkpoint.created_at.timestamp())
        await self._witness(checkpoint)
        return checkpoint

    async def _witness(self, checkpoint: AuditCheckpoint) -> None:
        """Best effort: a checkpoint that reached no inbox is covered by the next one that does."""
        if self._witnesses is None:
            return
        try:
            await self._witnesses.deliver(checkpoint)
        except Exception:
            log.warning("signed checkpoint not delivered to the clinics' inboxes", exc_info=True)
