"""The audit chain's single writer, enforced by the server, not by us.

Every append carries ``Nats-Expected-Last-Sequence``: JetStream refuses it if anything was
appended since we last looked, so two audit replicas can never fork the chain. The loser
re-reads the head and re-chains. ``Nats-Msg-Id`` is the source message's stream position,
so a source message audited twice yields one entry.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Final

import msgspec
import nats.errors
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from referral_hub.audit.domain import GENESIS_HASH, chain
from referral_hub.contracts.audit import AuditEntry
from referral_hub.errors import HubError
from referral_hub.runtime import subjects, topology

WRONG_LAST_SEQUENCE: Final = 10071
MAX_ATTEMPTS: Final = 50
BACKOFF_SECONDS: Final = 0.002
"""Base of the jittered pause after losing a race, so two writers stop colliding in lockstep."""
_decoder: Final = msgspec.json.Decoder(AuditEntry)
_encoder: Final = msgspec.json.Encoder()


class ChainContentionError(HubError):
    """Another writer kept winning; the message is redelivered and tried again later."""


class ChainWriter:
    """Appends entries to the audit stream, one at a time, each chained to the last."""

    def __init__(self, js: JetStreamContext) -> None:
        """Start knowing nothing of the head; the first append reads it."""
        self._js = js
        self._lock = asyncio.Lock()
        self._head: tuple[int, str] | None = None

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
        async with self._lock:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                if self._head is None:
                    self._head = await self._read_head()
                index, prev_hash = self._head
                sealed = chain(entry, index + 1, prev_hash)
                try:
                    ack = await self._js.publish(
                        subjects.AUDIT_ENTRY,
                        _encoder.encode(sealed),
                        headers={"Nats-Expected-Last-Sequence": str(index), "Nats-Msg-Id": dedupe_key},
                    )
                except APIError as exc:
                    if exc.err_code != WRONG_LAST_SEQUENCE:
                        raise
                    self._head = None
                    await asyncio.sleep(random.uniform(0, BACKOFF_SECONDS * attempt))  # noqa: S311 - jitter, not security
                    continue
                if ack.duplicate:
                    self._head = None
                    return sealed
                self._head = (ack.seq, sealed.entry_hash)
                return sealed
        msg = f"could not append to the audit chain after {MAX_ATTEMPTS} attempts"
        raise ChainContentionError(msg)


async def read_chain(js: JetStreamContext, batch: int = 1000) -> AsyncIterator[AuditEntry]:
    """Every audit entry, in order, through an ordered consumer."""
    info = await js.stream_info(topology.AUDIT)
    total = info.state.messages
    if total == 0:
        return
    subscription = await js.subscribe(
        subjects.AUDIT_ENTRY,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
        pending_msgs_limit=batch * 10,
    )
    try:
        seen = 0
        while seen < total:
            try:
                raw = await subscription.next_msg(timeout=5.0)
            except nats.errors.TimeoutError:
                return
            seen += 1
            yield _decoder.decode(raw.data)
    finally:
        await subscription.unsubscribe()
