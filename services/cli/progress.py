"""Progress bars for ``hubctl``'s long-running commands, on a terminal only.

A bar goes to stderr, and only when both stdout and stderr are terminals and the output is
not ``--json``: a pipe, a file or a script gets the same plain lines as before, and nothing
that would have to be stripped from them. ``rich`` draws it and clears it when done.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

REFRESH_SECONDS: Final = 0.2

Tick = Callable[[int], None]


def wanted(*, as_json: bool = False) -> bool:
    """Whether a bar helps here: a person at a terminal, reading text rather than JSON."""
    return not as_json and sys.stdout.isatty() and sys.stderr.isatty()


def _bar(*, counted: bool) -> Progress:
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    if counted:
        columns.append(MofNCompleteColumn())
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=Console(stderr=True), transient=True)


def _ignore(_count: int = 1) -> None:
    """Where no bar is drawn, counting costs nothing."""


@contextlib.contextmanager
def counting(description: str, total: int | None = None, *, show: bool) -> Iterator[Tick]:
    """A bar advanced by the returned ``tick(n)``; without ``show``, ``tick`` does nothing."""
    if not show:
        yield _ignore
        return
    with _bar(counted=total is not None) as bar:
        task = bar.add_task(description, total=total)

        def tick(count: int = 1) -> None:
            bar.advance(task, count)

        yield tick


@contextlib.asynccontextmanager
async def timed(description: str, seconds: float, *, show: bool) -> AsyncIterator[None]:
    """A bar that fills over ``seconds`` (a benchmark's planned load) while the body runs."""
    if not show:
        yield
        return
    with _bar(counted=False) as bar:
        task = bar.add_task(description, total=max(seconds, REFRESH_SECONDS))
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def fill() -> None:
            while True:
                bar.update(task, completed=min(loop.time() - started, seconds))
                await asyncio.sleep(REFRESH_SECONDS)

        filler = asyncio.create_task(fill())
        try:
            yield
        finally:
            filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await filler
