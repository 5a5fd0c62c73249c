"""In-memory stand-ins for the notifications service's adapters, for fast handler tests.

They keep the contracts the real ones keep, which is what the handlers rely on: a KV store
numbers revisions and refuses a write against a stale one (and can be told to lose the next
race), views follow the store as a KV watch would, publishes are recorded in order, and
channels report every attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import msgspec

from referral_hub.contracts.codec import decode_hub_message
from referral_hub.contracts.paging import DeliveryStatus
from referral_hub.contracts.registry import ContactChannel
from referral_hub.notifications.channels import Report
from referral_hub.notifications.rendering import Attempt, Outbound
from referral_hub.runtime.jetstream.kvstore import ConcurrentUpdateError, KvView
from referral_hub.runtime.messaging.outgoing import Outgoing, ToInbox

T = TypeVar("T", bound=msgspec.Struct)


class FakeKv(Generic[T]):
    """A compare-and-set store in a dict; ``views`` (prefix, view) follow it as KV watches do."""

    def __init__(self, views: Sequence[tuple[str, KvView[T]]] = ()) -> None:
        self.records: dict[str, tuple[T, int]] = {}
        self.saves = 0
        self.conflicts = 0
        self._revision = 0
        self._views = views
        self._rivals: dict[str, T] = {}

    def lose_next_race(self, key: str, winner: T) -> None:
        """Before the next save to ``key``, another writer stores ``winner`` there."""
        self._rivals[key] = winner

    def _store(self, key: str, record: T) -> int:
        self._revision += 1
        self.records[key] = (record, self._revision)
        for prefix, view in self._views:
            if key.startswith(prefix):
                view.apply(key, msgspec.json.encode(record))
        return self._revision

    async def load(self, key: str, *, fresh: bool = True) -> tuple[T, int] | None:  # noqa: ARG002 - no cache to skip
        return self.records.get(key)

    async def save(self, key: str, record: T, revision: int | None) -> int:
        if (rival := self._rivals.pop(key, None)) is not None:
            self._store(key, rival)
        current = self.records.get(key)
        if (current[1] if current is not None else None) != revision:
            self.conflicts += 1
            msg = f"{key} changed concurrently"
            raise ConcurrentUpdateError(msg)
        self.saves += 1
        return self._store(key, record)


@dataclass
class FakePublisher:
    """Records what handlers and deliveries publish."""

    published: list[Outgoing | ToInbox] = field(default_factory=list)

    async def apply(self, outgoing: Sequence[Outgoing | ToInbox]) -> None:
        self.published.extend(outgoing)

    def events(self, event_type: str) -> list[msgspec.Struct]:
        """The published domain events of one type, decoded."""
        return [
            decode_hub_message(item.payload)
            for item in self.published
            if isinstance(item, Outgoing) and item.subject == f"hub.event.{event_type}"
        ]


@dataclass
class FakeChannels:
    """Takes every message on the first channel tried and reports it delivered."""

    sent: list[tuple[ContactChannel, Outbound]] = field(default_factory=list)

    async def deliver(self, channels: tuple[ContactChannel, ...], outbound: Outbound, report: Report) -> bool:
        self.sent.append((channels[0], outbound))
        await report(Attempt(channels[0].kind, 1, DeliveryStatus.DELIVERED))
        return True
