"""Referral and care-team state in JetStream KV, with revision compare-and-set on every write."""

from __future__ import annotations

from collections import OrderedDict
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
    """Load and save one record type by key; ``revision`` is the KV revision a save must match.

    With ``cache_size`` it remembers what it last read or wrote. A cached record may be stale
    (another replica wrote since), which is safe for writes, since the compare-and-set save
    refuses a stale revision; callers that would act on a cached read without writing
    (a refusal) must ``load(fresh=True)`` first.
    """

    def __init__(self, kv: KeyValue, record: type[T], cache_size: int = 0) -> None:
        """Wrap a provisioned bucket holding ``record`` values."""
        self._kv = kv
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(record)
        self._cache: OrderedDict[str, tuple[T, int]] = OrderedDict()
        self._cache_size = cache_size

    def cached(self, key: str) -> tuple[T, int] | None:
        """What this store last read or wrote for ``key``, if it still remembers."""
        return self._cache.get(key)

    def _remember(self, key: str, value: tuple[T, int]) -> None:
        if self._cache_size:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    async def load(self, key: str, *, fresh: bool = True) -> tuple[T, int] | None:
        """The record and its revision, or ``None``; ``fresh=False`` accepts the cached copy."""
        if not fresh and (hit := self._cache.get(key)) is not None:
            return hit
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            self._cache.pop(key, None)
            return None
        if entry.value is None or entry.revision is None:
            return None
        loaded = self._decoder.decode(entry.value), entry.revision
        self._remember(key, loaded)
        return loaded

    async def save(self, key: str, record: T, revision: int | None) -> int:
        """Create (``revision=None``) or compare-and-set update; returns the new revision."""
        value = msgspec.json.encode(record)
        try:
            if revision is None:
                new_revision = await self._kv.create(key, value)
            else:
                new_revision = await self._kv.update(key, value, last=revision)
        except KeyWrongLastSequenceError as exc:
            self._cache.pop(key, None)
            msg = f"{key} changed concurrently"
            raise ConcurrentUpdateError(msg) from exc
        self._remember(key, (record, new_revision))
        return new_revision

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


async def referral_store(js: JetStreamContext, cache_size: int = 0) -> KvStore[Referral]:
    """Referrals, keyed by referral id."""
    return KvStore(await js.key_value(REFERRALS_KV), Referral, cache_size)


async def careteam_store(js: JetStreamContext) -> KvStore[CareTeam]:
    """Care teams, keyed by :func:`team_key` of the patient."""
    return KvStore(await js.key_value(CARETEAMS_KV), CareTeam)
