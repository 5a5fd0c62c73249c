"""The intake's pipeline: in order within a key, concurrent across keys, a failure holds its key back."""

from __future__ import annotations

import asyncio

from referral_hub.runtime.messaging.pull_loop import KeyedPipeline


class Recorder:
    """Handles ``(key, n)`` items slowly, recording starts, finishes and hold-backs."""

    def __init__(self, failing: frozenset[tuple[str, int]] = frozenset()) -> None:
        self.failing = failing
        self.started: list[tuple[str, int]] = []
        self.finished: list[tuple[str, int]] = []
        self.held_back: list[tuple[str, int]] = []
        self.events: list[tuple[str, str, int]] = []

    async def handle(self, item: tuple[str, int]) -> bool:
        self.started.append(item)
        self.events.append(("start", *item))
        await asyncio.sleep(0.01 * (3 - item[1] % 3))  # earlier items are slower, to tempt overtaking
        self.finished.append(item)
        self.events.append(("finish", *item))
        return item not in self.failing

    async def hold_back(self, item: tuple[str, int]) -> None:
        self.held_back.append(item)


async def run(recorder: Recorder, items: list[tuple[str, int]], limit: int = 16) -> None:
    pipeline: KeyedPipeline[tuple[str, int]] = KeyedPipeline(recorder.handle, recorder.hold_back, limit)
    for item in items:
        await pipeline.submit(item[0], item)
    await pipeline.drain()


async def test_items_of_one_key_finish_in_the_order_they_were_submitted() -> None:
    recorder = Recorder()

    await run(recorder, [("a", n) for n in range(6)])

    assert recorder.finished == [("a", n) for n in range(6)]


async def test_different_keys_run_at_the_same_time() -> None:
    recorder = Recorder()

    await run(recorder, [("a", 0), ("b", 0), ("c", 0)])

    assert recorder.events[:3] == [("start", "a", 0), ("start", "b", 0), ("start", "c", 0)]


async def test_a_failed_item_holds_back_the_rest_of_its_key_only() -> None:
    recorder = Recorder(failing=frozenset({("a", 1)}))

    await run(recorder, [("a", 0), ("a", 1), ("b", 0), ("a", 2), ("b", 1), ("a", 3)])

    assert recorder.held_back == [("a", 2), ("a", 3)]
    assert ("a", 2) not in recorder.started
    assert [item for item in recorder.finished if item[0] == "b"] == [("b", 0), ("b", 1)]


async def test_no_more_than_the_limit_run_at_once() -> None:
    recorder = Recorder()
    running = 0
    most = 0

    async def counted(item: tuple[str, int]) -> bool:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            return await recorder.handle(item)
        finally:
            running -= 1

    pipeline: KeyedPipeline[tuple[str, int]] = KeyedPipeline(counted, recorder.hold_back, 4)
    for n in range(20):
        await pipeline.submit(f"k{n}", (f"k{n}", n))
    await pipeline.drain()

    assert most == 4
    assert len(recorder.finished) == 20
