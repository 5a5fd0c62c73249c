"""Ending asyncio tasks for sure, on Python 3.11, where one cancellation can be lost.

Here and not in ``hosting.service``: command-line tools and the portal's store stop their
watches with it too, and they do not load faststream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

CANCEL_AGAIN_SECONDS: Final = 1.0
"""How long a cancelled task may take to end before it is cancelled again."""


async def cancel_and_wait(tasks: Sequence[asyncio.Task[Any]]) -> list[BaseException]:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again any that swallowed it.

    Returns what the tasks that had failed raised; the caller decides whether that is news.

    Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives as its inner future
    completes (CPython gh-86296, fixed in 3.12), and nats-py's requests use it: a readiness
    loop cancelled mid-request went on looping, and the service's shutdown waited for it
    forever (a rare hang of the crashed-audit test, seen under CPU contention).
    """
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_SECONDS)
        for task in pending:
            task.cancel()
    return [failure for task in tasks if not task.cancelled() and (failure := task.exception()) is not None]
