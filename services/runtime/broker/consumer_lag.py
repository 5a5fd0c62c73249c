"""The hub's durable consumers as the broker sees them, from nats-server's ``/jsz?consumers=true``.

Lag used to be reported by each consuming process about itself, so a frozen or dead service
took its own lag series with it, exactly when they mattered. Read from the broker instead,
a consumer whose process is stopped keeps its series, and they show the backlog growing
and the acknowledgements standing still.

For each of the hub's service consumers (``topology.CONSUMERS``; clinics' own inbox
consumers are theirs, not the hub's):

- pending: stored messages not yet delivered; ack pending: delivered, not yet acknowledged;
- waiting pulls: fetch requests waiting at the server, 0 when no process is reading;
- ack floor age: seconds since the ack floor (every message up to the oldest unacknowledged
  one) last moved, while messages wait; 0 when nothing waits. A healthy consumer holds it
  near 0 whatever the traffic; a stopped one makes it grow by one each second.

Plain functions of the decoded JSON: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

JSZ_QUERY = "/jsz?consumers=true"
"""One request answers both the server's JetStream figures and every consumer's state."""


@dataclass(frozen=True)
class ConsumerState:
    """One durable consumer's figures, as one server reports them."""

    account: str
    stream: str
    consumer: str
    pending: int
    ack_pending: int
    redelivered: int
    waiting: int
    ack_floor_age_seconds: float


def _moment(text: object) -> datetime | None:
    """nats-server's RFC 3339 times carry nanoseconds; Python reads at most microseconds."""
    if not isinstance(text, str) or not text:
        return None
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def ack_floor_age(consumer: Mapping[str, Any], now: datetime | None) -> float:
    """Seconds since the ack floor last moved (since creation if it never did), while messages wait; else 0."""
    waiting = int(consumer.get("num_pending", 0)) + int(consumer.get("num_ack_pending", 0))
    floor = consumer.get("ack_floor") or {}
    moved = _moment(floor.get("last_active")) or _moment(consumer.get("created"))
    if waiting == 0 or now is None or moved is None:
        return 0.0
    return max(0.0, (now - moved).total_seconds())


def consumer_states(jsz: Mapping[str, Any], durables: Iterable[str]) -> list[ConsumerState]:
    """The named durables found in one ``/jsz?consumers=true`` answer, in the order the server lists them."""
    wanted = set(durables)
    now = _moment(jsz.get("now"))
    found: list[ConsumerState] = []
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            for consumer in stream.get("consumer_detail") or []:
                if consumer.get("name") not in wanted:
                    continue
                found.append(
                    ConsumerState(
                        account=str(account.get("name", "")),
                        stream=str(stream.get("name", "")),
                        consumer=str(consumer["name"]),
                        pending=int(consumer.get("num_pending", 0)),
                        ack_pending=int(consumer.get("num_ack_pending", 0)),
                        redelivered=int(consumer.get("num_redelivered", 0)),
                        waiting=int(consumer.get("num_waiting", 0)),
                        ack_floor_age_seconds=ack_floor_age(consumer, now),
                    )
                )
    return found
