"""``update_with_retry`` against a real KV bucket: what a stale or assumed read may decide.

Two stores over one bucket play two replicas: one remembers a copy the other has since
overwritten. A refusal (``confirm``) decided on that copy must be decided again on the
record as stored; a first round that assumes a new record must fall back to reading it.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from nats.aio.client import Client

from referral_hub.runtime.jetstream.kvstore import ConcurrentUpdateError, Decided, KvStore, update_with_retry
from referral_hub.runtime.jetstream.topology import REFERRALS_KV


class Counter(msgspec.Struct, frozen=True):
    value: int


def at_least(floor: int) -> Callable[[Counter | None], Decided[Counter, str]]:
    """Increment a counter that has reached ``floor``; refuse (``confirm``) one that has not."""

    def decide(current: Counter | None) -> Decided[Counter, str]:
        if current is None or current.value < floor:
            return Decided(None, f"refused at {current.value if current else None}", confirm=True)
        return Decided(Counter(current.value + 1), f"incremented {current.value}")

    return decide


async def stores(connection: Client) -> tuple[KvStore[Counter], KvStore[Counter]]:
    kv = await connection.jetstream().key_value(REFERRALS_KV)
    return KvStore(kv, Counter, cache_size=8), KvStore(kv, Counter, cache_size=8)


async def test_a_refusal_decided_on_a_stale_copy_is_decided_again_on_the_stored_record(provisioned: Client) -> None:
    mine, other = await stores(provisioned)
    revision = await mine.save("retry-stale", Counter(1), None)
    await other.save("retry-stale", Counter(2), revision)  # ``mine`` still remembers 1

    updated = await update_with_retry(mine, "retry-stale", at_least(2), fresh=False)

    assert updated.result == "incremented 2"
    assert await other.load("retry-stale") == (Counter(3), updated.revision)


async def test_a_refusal_decided_on_a_fresh_read_stands_without_a_write(provisioned: Client) -> None:
    mine, _ = await stores(provisioned)
    revision = await mine.save("retry-fresh", Counter(1), None)

    updated = await update_with_retry(mine, "retry-fresh", at_least(2), attempts=1)

    assert (updated.result, updated.revision) == ("refused at 1", None)
    assert await mine.load("retry-fresh") == (Counter(1), revision)


async def test_an_assumed_new_record_that_exists_is_read_and_decided_again(provisioned: Client) -> None:
    mine, other = await stores(provisioned)
    await other.save("retry-new", Counter(5), None)

    def create_or_increment(current: Counter | None) -> Decided[Counter, str]:
        if current is None:
            return Decided(Counter(0), "created")
        return Decided(Counter(current.value + 1), f"incremented {current.value}")

    updated = await update_with_retry(mine, "retry-new", create_or_increment, assume_new=True)

    assert updated.result == "incremented 5"
    assert await other.load("retry-new") == (Counter(6), updated.revision)


async def test_a_stale_refusal_with_no_round_left_is_redelivered_not_sent(provisioned: Client) -> None:
    mine, other = await stores(provisioned)
    revision = await mine.save("retry-last", Counter(1), None)
    await other.save("retry-last", Counter(2), revision)

    with pytest.raises(ConcurrentUpdateError):
        await update_with_retry(mine, "retry-last", at_least(2), attempts=1, fresh=False)
