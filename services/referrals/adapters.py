"""Referral and care-team state in JetStream KV, with revision compare-and-set on every write."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from referral_hub.errors import HubError
from referral_hub.referrals.careteam import CareTeam
from referral_hub.referrals.domain import Referral
from referral_hub.runtime.topology import CARETEAMS_KV, REFERRALS_KV

T = TypeVar("T", bound=msgspec.Struct)


class ConcurrentUpdateError(HubError):
    """Another writer changed the record between our read and our write.

    The handler lets this propagate, so the command is redelivered and decided again
    against the state that won: two replicas never silently overwrite each other.
    """


class KvStore(Generic[T]):
    """Load and save one record type by key; ``revision`` is the KV revision a save must match."""

    def __init__(self, kv: KeyValue, record: type[T]) -> None:
        """Wrap a provisioned bucket holding ``record`` values."""
        self._kv = kv
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(record)

    async def load(self, key: str) -> tuple[T, int] | None:
        """The stored record and its revision, or ``None``."""
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return self._decoder.decode(entry.value), entry.revision

    async def save(self, key: str, record: T, revision: int | None) -> int:
        """Create (``revision=None``) or compare-and-set update; returns the new revision."""
        value = msgspec.json.encode(record)
        try:
            if revision is None:
                return await self._kv.create(key, value)
            return await self._kv.update(key, value, last=revision)
        except KeyWrongLastSequenceError as exc:
            msg = f"{key} changed concurrently"
            raise ConcurrentUpdateError(msg) from exc

    async def keys(self) -> list[str]:
        """Every key in the bucket. A full scan: fine for thousands of records, not millions."""
        try:
            return list(await self._kv.keys())
        except NoKeysError:
            return []

    async def scan(self) -> AsyncIterator[tuple[str, T, int]]:
        """Every record with its key and revision."""
        for key in await self.keys():
            loaded = await self.load(key)
            if loaded is not None:
                yield key, loaded[0], loaded[1]


async def referral_store(js: JetStreamContext) -> KvStore[Referral]:
    """Referrals, keyed by referral id."""
    return KvStore(await js.key_value(REFERRALS_KV), Referral)


async def careteam_store(js: JetStreamContext) -> KvStore[CareTeam]:
    """Care teams, keyed by :func:`team_key` of the patient."""
    return KvStore(await js.key_value(CARETEAMS_KV), CareTeam)
