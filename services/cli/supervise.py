"""How ``hubctl up`` keeps its children running: restart with back-off, say so, report a crash loop.

A child that exits while the hub runs (a crash, an OOM kill, ``kill -9``) is started again
with the same command and port after a pause that doubles with each quick exit, and a line
says which child, how it ended and when it comes back. A child that keeps dying is reported
as a crash loop (with its log's last lines) rather than restarted silently forever at full
speed. Restart counts are written to ``supervision.json`` in the data folder, where
``hubctl status`` reads them.

The decisions (:func:`restart_delay`, :func:`in_crash_loop`) are plain functions; the loop
that polls the children is the only part that touches processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

FIRST_DELAY_SECONDS: Final = 0.5
MAX_DELAY_SECONDS: Final = 30.0
STABLE_SECONDS: Final = 60.0
"""A child that ran this long before exiting starts again with the first delay."""
CRASH_LOOP_EXITS: Final = 5
CRASH_LOOP_WINDOW_SECONDS: Final = 120.0
POLL_SECONDS: Final = 0.25
BACKGROUND_RETRY_SECONDS: Final = 2.0


class Child(Protocol):
    """What the supervisor needs of a child: its name, its process and its log."""

    name: str
    log_path: Path
    process: subprocess.Popen[bytes]


def restart_delay(quick_exits: int) -> float:
    """The pause before the next start after ``quick_exits`` exits in a row, each soon after its start."""
    return float(min(MAX_DELAY_SECONDS, FIRST_DELAY_SECONDS * 2 ** max(0, quick_exits - 1)))


def in_crash_loop(exits: list[float], now: float) -> bool:
    """Whether the exit times (monotonic seconds) show a child dying again and again."""
    return sum(1 for moment in exits if now - moment <= CRASH_LOOP_WINDOW_SECONDS) >= CRASH_LOOP_EXITS


@dataclass
class Watched:
    """One supervised child and its history."""

    child: Child
    start: Callable[[], Child]
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    quick_exits: int = 0
    exits: list[float] = field(default_factory=list)
    restart_at: float | None = None
    last_exit: str = ""
    crash_loop: bool = False


class Supervisor:
    """Restarts ``hubctl up``'s children while the hub runs; stands aside once it stops."""

    def __init__(self, say: Callable[[str], None], record: Path) -> None:
        """``say`` prints a status line; ``record`` is the file ``hubctl status`` reads."""
        self._say = say
        self._record = record
        self._watched: list[Watched] = []
        self._stopping = False

    def add(self, start: Callable[[], Child]) -> Child:
        """Start a child and keep it running."""
        child = start()
        self._watched.append(Watched(child, start))
        return child

    @property
    def children(self) -> list[Child]:
        """Every child as it runs now (a restarted one is its new process)."""
        return [watched.child for watched in self._watched]

    def stop(self) -> None:
        """From now on an exit is the hub stopping, not a failure."""
        self._stopping = True

    async def run(self) -> None:
        """Poll the children until cancelled."""
        self._write()
        while not self._stopping:
            self.check(time.monotonic())
            await asyncio.sleep(POLL_SECONDS)

    def check(self, now: float) -> None:
        """Notice exits and start children whose pause is over."""
        for watched in self._watched:
            if self._stopping:
                return
            if watched.restart_at is None and watched.child.process.poll() is not None:
                self._exited(watched, now)
            elif watched.restart_at is not None and now >= watched.restart_at:
                watched.child = watched.start()
                watched.started_at, watched.restart_at = now, None
                watched.restarts += 1
                self._say(f"!! {watched.child.name} started again (restart {watched.restarts})")
                self._write()

    def _exited(self, watched: Watched, now: float) -> None:
        code = watched.child.process.returncode
        ran = now - watched.started_at
        watched.quick_exits = 1 if ran >= STABLE_SECONDS else watched.quick_exits + 1
        watched.exits = [*watched.exits, now][-CRASH_LOOP_EXITS:]
        delay = restart_delay(watched.quick_exits)
        watched.restart_at = now + delay
        watched.last_exit = f"exit {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"
        self._say(
            f"!! {watched.child.name} stopped ({watched.last_exit}) after {ran:.0f}s; "
            f"restarting in {delay:.1f}s; log {watched.child.log_path}"
        )
        looping = in_crash_loop(watched.exits, now)
        if looping and not watched.crash_loop:
            tail = watched.child.log_path.read_text(errors="replace").splitlines()[-3:]
            self._say(
                f"!! {watched.child.name} is in a crash loop ({len(watched.exits)} exits in "
                f"{CRASH_LOOP_WINDOW_SECONDS:.0f}s); last log lines: " + " | ".join(tail)
            )
        watched.crash_loop = looping
        self._write()

    def _write(self) -> None:
        state = {  # keyed by the log's name: referrals, referrals-2, gateway, ...
            watched.child.log_path.stem: {
                "restarts": watched.restarts,
                "last_exit": watched.last_exit,
                "crash_loop": watched.crash_loop,
                "pid": watched.child.process.pid,
            }
            for watched in self._watched
        }
        with contextlib.suppress(OSError):
            staging = self._record.with_name(f".{self._record.name}.new")
            staging.write_text(json.dumps(state, indent=1))
            staging.replace(self._record)


async def keep_running(name: str, job: Callable[[], Coroutine[Any, Any, None]], say: Callable[[str], None]) -> None:
    """Run a background job of ``hubctl up`` forever, starting it again whenever it ends or fails.

    A reporter that loses NATS (a broker paused for a GC, a disk stall, a leader election)
    must never stop the hub: its failure is one line, and it tries again a moment later.
    """
    while True:
        try:
            await job()
            reason = "ended"
        except Exception as exc:  # noqa: BLE001 - any failure of a reporter is survived and said, never raised
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        with contextlib.suppress(OSError):
            say(f"!! {name} interrupted ({reason}); trying again in {BACKGROUND_RETRY_SECONDS:.0f}s")
        await asyncio.sleep(BACKGROUND_RETRY_SECONDS)


def read_record(path: Path) -> dict[str, dict[str, Any]]:
    """What ``supervision.json`` says, or nothing when no ``hubctl up`` wrote one."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
