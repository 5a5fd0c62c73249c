"""Messages the hub gave up on become dead letters, never silent leftovers.

When a consumer's MaxDeliver runs out, JetStream keeps the message in its stream and
announces it on ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>``. The
``HUB_ADVISORIES`` stream captures those announcements (a service that was down would
miss them on core NATS), and this handler turns each into a ``processing_failed`` dead
letter holding the original bytes, plus a rejection in the sending clinic's inbox when a
clinic sent it. Both land in audited streams.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from referral_hub.contracts.rejections import RejectionCode
from referral_hub.runtime.jetstream import streams
from referral_hub.runtime.jetstream.subjects import parse_clinic_out
from referral_hub.runtime.messaging.ack_policy import Handled
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.refusal_outputs import offender_of, refusal_outputs
from referral_hub.runtime.messaging.refusals import Refusal


class _Advisory(msgspec.Struct):
    """The fields of ``io.nats.jetstream.advisory.v1.max_deliver`` we use."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int = 0


class MaxDeliveriesHandler:
    """Dead-letters the message a MAX_DELIVERIES advisory names."""

    def __init__(self, js: JetStreamContext, is_registered_clinic: Callable[[str], bool]) -> None:
        """Read originals through ``js``; tell a sender only if it is a registered clinic."""
        self._js = js
        self._is_registered_clinic = is_registered_clinic

    async def __call__(self, delivery: Incoming) -> Handled:
        """Fetch the original and return its dead letter (and rejection)."""
        try:
            advisory = msgspec.json.decode(delivery.data, type=_Advisory)
        except msgspec.DecodeError as exc:
            return Handled(outcome="undecodable", log_fields={"error": str(exc)[:300]})
        try:
            raw = await self._js.get_msg(advisory.stream, advisory.stream_seq)
        except NotFoundError:
            return Handled(outcome="gone", log_fields={"stream": advisory.stream, "stream_seq": advisory.stream_seq})
        original = Incoming(
            subject=raw.subject or "",
            data=raw.data or b"",
            headers=dict(raw.headers or {}),
            stream=advisory.stream,
            sequence=advisory.stream_seq,
            stored_at=raw.time or datetime.now(UTC),
            attempt=advisory.deliveries,
        )
        out = parse_clinic_out(original.subject)
        sender = (
            out.clinic_id
            if out is not None and advisory.stream == streams.CLINIC_OUT and self._is_registered_clinic(out.clinic_id)
            else None
        )
        refusal = Refusal(
            RejectionCode.PROCESSING_FAILED,
            f"{advisory.consumer} failed to process it {advisory.deliveries} times; kept for operators",
        )
        return Handled(
            outcome="dead_lettered",
            outgoing=refusal_outputs(advisory.consumer, original, refusal, offender_of(original, sender)),
            log_fields={"consumer": advisory.consumer, "stream": advisory.stream, "stream_seq": advisory.stream_seq},
        )
