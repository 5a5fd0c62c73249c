"""The acknowledgement policy every service handler runs under.

:func:`handle_one` turns the JetStream message into a :class:`Incoming`, hands it to a plain
async function, publishes what that function returns, and only then acknowledges.

Acknowledgement policy, decided deliberately (faststream's default REJECT_ON_ERROR would
``term()`` a message whose handler raised, losing it):
- bad input never raises: the domain turns it into a typed rejection, which is published
  and then acknowledged;
- an infrastructure failure (NATS timeout, KV conflict) raises; we ``nak`` with a capped
  exponential delay so the message comes back, never ``term``;
- after ``MAX_DELIVER`` attempts the server stops redelivering and announces it on the
  MAX_DELIVERIES advisory; the message itself stays in its stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from referral_hub.runtime.hosting.metrics import HANDLING_SECONDS, MESSAGES_HANDLED
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER
from referral_hub.runtime.messaging.inbox_writer import InboxWriter
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.outgoing import Outgoing, ToInbox

MAX_NAK_DELAY_SECONDS: Final = 30.0
log = structlog.get_logger(__name__)


def incoming_from_nats(raw: Msg) -> Incoming:
    """A JetStream message as the plain record handlers and the pure core read."""
    meta = raw.metadata
    return Incoming(
        subject=raw.subject,
        data=raw.data,
        headers=dict(raw.headers or {}),
        stream=meta.stream,
        sequence=meta.sequence.stream,
        stored_at=meta.timestamp,
        attempt=meta.num_delivered,
    )


@dataclass(frozen=True)
class Handled:
    """What a handler decided: its outcome (for metrics and the log line) and its effects."""

    outcome: str
    outgoing: Sequence[Outgoing | ToInbox] = ()
    log_fields: Mapping[str, object] | None = None
    on_stored: Callable[[], None] | None = None
    """Called once every outgoing message is stored, and only then (never after a failure)."""


class Effects:
    """Carries out a handler's effects: stream publishes and numbered inbox deliveries."""

    def __init__(self, connection: Client) -> None:
        """Built once the service is connected; every handler of the service shares it."""
        self.inbox = InboxWriter(connection)

    async def apply(self, outgoing: Sequence[Outgoing | ToInbox]) -> None:
        """Publish everything concurrently and wait for every ack.

        Each output carries ``Nats-Msg-Id``, so a redelivered command re-publishing the same
        outputs has no second effect within the stream's de-duplication window.
        """
        js = self.inbox.jetstream
        await asyncio.gather(
            *(
                self.inbox.deliver(item)
                if isinstance(item, ToInbox)
                else js.publish(item.subject, item.payload, headers={MSG_ID_HEADER: item.msg_id})
                for item in outgoing
            ),
        )


class _Ids(msgspec.Struct):
    """The two ids every hub message and audit entry carries; every other field is skipped unread."""

    message_id: str = ""
    correlation_id: str = ""


_ids: Final = msgspec.json.Decoder(_Ids)


def message_ids(data: bytes) -> dict[str, str]:
    """``message_id`` and ``correlation_id`` of a stored message, for its log lines; none for unreadable bytes.

    Every service's lines carry them (notifications and audit as well as referrals), so one
    referral's path is followed across the hub's logs by its correlation id.
    """
    try:
        ids = _ids.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        # msgspec reports JSON nested past its depth limit as RecursionError, not DecodeError;
        # such bytes are refused by the handler like any other, and must not stop the loop here.
        return {}
    return {
        name: value for name, value in (("message_id", ids.message_id), ("correlation_id", ids.correlation_id)) if value
    }


def nak_delay(attempt: int) -> float:
    """Capped exponential back-off for a message whose handling failed ``attempt`` times."""
    return float(min(2 ** max(attempt - 1, 0), MAX_NAK_DELAY_SECONDS))


async def handle_one(
    service: str,
    handler: str,
    effects: Effects,
    process: Callable[[Incoming], Awaitable[Handled]],
    raw: Msg,
) -> bool:
    """Process, apply effects, then ack; on failure nak with back-off. True if acknowledged."""
    delivery = incoming_from_nats(raw)
    started = time.perf_counter()
    structlog.contextvars.bind_contextvars(
        subject=delivery.subject,
        stream_sequence=delivery.sequence,
        attempt=delivery.attempt,
        **message_ids(delivery.data),
    )
    try:
        handled = await process(delivery)
        await effects.apply(handled.outgoing)
        if handled.on_stored is not None:
            handled.on_stored()
    except Exception:
        delay = nak_delay(delivery.attempt)
        log.exception("handling failed; will redeliver", handler=handler, retry_in_seconds=delay)
        MESSAGES_HANDLED.labels(service, handler, "retried").inc()
        await raw.nak(delay=delay)
        return False
    else:
        await raw.ack()
        MESSAGES_HANDLED.labels(service, handler, handled.outcome).inc()
        log.info("handled", handler=handler, outcome=handled.outcome, **(handled.log_fields or {}))
        return True
    finally:
        HANDLING_SECONDS.labels(service, handler).observe(time.perf_counter() - started)
        structlog.contextvars.unbind_contextvars(
            "subject",
            "stream_sequence",
            "attempt",
            "message_id",
            "correlation_id",
            "causation_id",
            "clinic",
        )
