"""Records in JetStream KV: compare-and-set writes, and a live view kept current by a watch.

No service keeps state of its own: a record's KV revision is the only truth, and every write
says which revision it replaces, so two replicas can never silently overwrite each other.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from referral_hub.errors import HubError

T = TypeVar("T", bound=msgspec.Struct)
R = TypeVar("R")
ATTEMPTS: Final = 5
"""Compare-and-set rounds before a write gives up and the message is redelivered."""


class ConcurrentUpdateError(HubError):
    """Another writer changed the record between our read and our write.

    The handler lets this propagate, so the command is redelivered and decided again
    against the state that won: two replicas never silently overwrite each other.
    """


class Records(Protocol[T]):
    """What a compare-and-set read-modify-write needs of a store: the seam fakes stand in at."""

    async def load(self, key: str, *, fresh: bool = True) -> tuple[T, int] | None:
        """The record and its revision, or ``None``."""
        ...

    async def save(self, key: str, record: T, revision: int | None) -> int:
        """Create (``revision=None``) or compare-and-set update; returns the new revision."""
        ...


@dataclass(frozen=True)
class Decided(Generic[T, R]):
    """What one round of :func:`update_with_retry` decided: the record to write, and its result.

    ``record=None`` writes nothing; ``result`` is handed back to the caller either way, so a
    decision that refuses or finds a replay returns without a write.
    """

    record: T | None
    result: R
    confirm: bool = False
    """A result without a write that must stand on a fresh read (a refusal): decided on a copy
    that was not read fresh (the cache, ``known``, or ``assume_new``), it is decided again on one."""


@dataclass(frozen=True)
class Updated(Generic[R]):
    """The decision that stood, and the revision its write made (``None``: nothing written)."""

    result: R
    revision: int | None


async def update_with_retry(  # noqa: PLR0913 - keyword-only knobs of the one CAS loop
    store: Records[T],
    key: str,
    decide: Callable[[T | None], Decided[T, R]],
    *,
    attempts: int = ATTEMPTS,
    known: tuple[T, int] | None = None,
    fresh: bool = True,
    assume_new: bool = False,
) -> Updated[R]:
    """Read, decide, compare-and-set write; decide again against the winner after a lost race.

    The one read-modify-write loop of the hub: ``decide`` is pure and may run several times.
    ``known`` (a record and revision the caller already holds) spares the first read;
    ``fresh=False`` lets the first read come from the store's cache (the write still
    compares revisions, so a stale copy only costs a round). ``assume_new`` decides the first
    round as if there were no record, without a read: for records that are almost always new,
    since the create fails if one exists and the next round reads it. Each lost race, and
    each ``confirm`` result decided on a copy that was not read fresh, costs a round; after
    ``attempts`` rounds it raises :class:`ConcurrentUpdateError`, so the message is redelivered.
    """
    for round_ in range(attempts):
        first = round_ == 0
        stored: tuple[T, int] | None
        if first and known is not None:
            stored, read_fresh = known, False
        elif first and assume_new:
            stored, read_fresh = None, False
        else:
            stored, read_fresh = await store.load(key, fresh=fresh or not first), fresh or not first
        current, revision = stored if stored is not None else (None, None)
        decided = decide(current)
        if decided.record is None:
            if decided.confirm and not read_fresh:
                continue
            return Updated(decided.result, None)
        try:
            saved = await store.save(key, decided.record, revision)
        except ConcurrentUpdateError:
            continue
        return Updated(decided.result, saved)
    msg = f"{key} kept changing under us"
    raise ConcurrentUpdateError(msg)


def changing(update: Callable[[T | None], T | None]) -> Callable[[T | None], Decided[T, T | None]]:
    """A decision for :func:`update_with_retry` from a plain update: the record as it then stands.

    ``update`` returning ``None`` or an equal record writes nothing.
    """

    def decide(current: T | None) -> Decided[T, T | None]:
        updated = update(current)
        if updated is None or updated == current:
            return Decided(None, current)
        return Decided(updated, updated)

    return decide


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

    async def change(self, key: str, update: Callable[[T | None], T | None], attempts: int = ATTEMPTS) -> T | None:
        """Apply ``update`` to the stored record with compare-and-set, re-reading after a lost race.

        ``update`` gets the record (``None`` if there is none) and returns the record to store;
        returning ``None`` or an equal record writes nothing. Returns the record as it stands.
        """
        return (await update_with_retry(self, key, changing(update), attempts=attempts)).result

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


class KvView(Generic[T]):
    """An in-memory view of the keys under ``prefix``, kept current by a KV watch.

    ``keep`` drops records the owner has no use for (for example closed pages), so the view
    stays as small as the live set. Reads never touch the server.
    """

    def __init__(self, record: type[T], prefix: str = "", keep: Callable[[T], bool] | None = None) -> None:
        """Start empty; :meth:`follow` fills it and sets :attr:`loaded` after the first pass."""
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(record)
        self._prefix = prefix
        self._keep = keep
        self._records: dict[str, T] = {}
        self.loaded = asyncio.Event()

    def get(self, key: str) -> T | None:
        """The record under ``key`` (without the prefix), if kept."""
        return self._records.get(key)

    def values(self) -> list[T]:
        """Every kept record, by key."""
        return [self._records[key] for key in sorted(self._records)]

    def apply(self, key: str, value: bytes | None) -> None:
        """Fold one KV update in; an empty, deleted or unwanted value drops the key."""
        name = key.removeprefix(self._prefix)
        record = self._decoder.decode(value) if value else None
        if record is None or (self._keep is not None and not self._keep(record)):
            self._records.pop(name, None)
        else:
            self._records[name] = record

    async def follow(self, kv: KeyValue) -> None:
        """Forever: apply every update under the prefix."""
        watcher = await kv.watch(f"{self._prefix}>" if self._prefix else ">")
        try:
            while True:
                entry = await watcher.updates(timeout=None)  # type: ignore[no-untyped-call]  # nats-py leaves this unannotated
                if entry is None:
                    self.loaded.set()
                    continue
                if entry.key is not None:
                    self.apply(entry.key, None if entry.operation in {"DEL", "PURGE"} else entry.value)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves this unannotated
