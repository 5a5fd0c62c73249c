"""A task that swallows its cancellation is cancelled again until it ends (Python 3.11, gh-86296)."""

from __future__ import annotations

import asyncio
import time

from referral_hub.runtime.hosting.tasks import cancel_and_wait


async def test_a_task_that_swallowed_one_cancellation_still_ends() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            swallowed.set()  # lost, as asyncio.wait_for can lose it
        await asyncio.sleep(60)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # let it reach its first wait
    began = time.monotonic()

    failures = await asyncio.wait_for(cancel_and_wait([task]), 10)

    assert swallowed.is_set()
    assert task.cancelled()
    assert failures == []
    assert time.monotonic() - began < 5
