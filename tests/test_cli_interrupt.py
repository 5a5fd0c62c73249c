"""One Ctrl-C ends a command even when its first cancellation is lost (Python 3.11, gh-86296)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from referral_hub.cli.main import EXIT_INTERRUPTED, interruptible


async def test_one_interrupt_ends_a_command_that_swallowed_its_cancellation() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> int:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            swallowed.set()  # lost, as asyncio.wait_for can lose it
        await asyncio.sleep(60)
        return 0

    running = asyncio.create_task(interruptible(stubborn()))
    await asyncio.sleep(0)  # let it start and take SIGINT
    began = time.monotonic()
    os.kill(os.getpid(), signal.SIGINT)

    status = await asyncio.wait_for(running, 10)

    assert swallowed.is_set()
    assert status == EXIT_INTERRUPTED
    assert time.monotonic() - began < 5


async def test_a_command_that_ends_by_itself_returns_its_status() -> None:
    async def quick() -> int:
        return 3

    assert await interruptible(quick()) == 3
