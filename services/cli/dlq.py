"""``hubctl dlq list`` and ``hubctl dlq replay``: inspect dead letters, and re-drive them once the cause is fixed."""

from __future__ import annotations

import argparse
from typing import Final

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from referral_hub.cli import progress
from referral_hub.cli.commands import UsageError, connect, out
from referral_hub.contracts.rejections import DeadLetter
from referral_hub.runtime.jetstream import streams
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER

REPLAYED_FROM_HEADER: Final = "Hub-Replayed-From"
REPLAYABLE: Final = frozenset({streams.CLINIC_OUT, streams.HUB_EVENTS})
"""Streams whose messages are re-driven by publishing them again; consumers of each are idempotent."""
_dead_letter: Final = msgspec.json.Decoder(DeadLetter)


class DeadLetterView(msgspec.Struct, frozen=True, kw_only=True):
    """One dead letter as ``hubctl dlq list --json`` prints it (the payload stays in the stream)."""

    sequence: int
    code: str
    service: str
    reason: str
    original_subject: str
    original_stream: str
    original_sequence: int
    offending_message_id: str
    payload_bytes: int


async def read_dead_letter(js: JetStreamContext, sequence: int) -> DeadLetter:
    """The dead letter stored at ``sequence`` of ``HUB_DEADLETTER``."""
    try:
        stored = await js.get_msg(streams.HUB_DEADLETTER, sequence)
    except NotFoundError as exc:
        msg = f"no dead letter #{sequence}; see 'hubctl dlq list'"
        raise UsageError(msg) from exc
    return _dead_letter.decode(stored.data or b"")


async def dlq_list(args: argparse.Namespace) -> int:
    """``hubctl dlq list``: every dead letter (or those of ``--code``), oldest first."""
    connection = await connect(args.nats_url)
    try:
        js = connection.jetstream()
        info = await js.stream_info(streams.HUB_DEADLETTER)
        stored = range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else range(0)
        for sequence in stored:
            try:
                letter = await read_dead_letter(js, sequence)
            except UsageError:
                continue  # removed from the stream (by its limits or an operator)
            if args.code and letter.code != args.code:
                continue
            view = DeadLetterView(
                sequence=sequence,
                code=str(letter.code),
                service=letter.service,
                reason=letter.reason,
                original_subject=letter.original_subject,
                original_stream=letter.original_stream,
                original_sequence=letter.original_sequence,
                offending_message_id=letter.offending_message_id,
                payload_bytes=len(letter.payload),
            )
            if args.json:
                out(msgspec.json.encode(view).decode())
            else:
                out(
                    f"#{sequence:<6} {view.code:<22} {view.service:<20} {view.original_stream}#{view.original_sequence}"
                    f"  {view.original_subject}  {view.reason[:80]}"
                )
    finally:
        await connection.drain()
    return 0


async def dlq_replay(args: argparse.Namespace) -> int:
    """``hubctl dlq replay SEQ...``: publish each original again, where it was first stored.

    The replay's ``Nats-Msg-Id`` is derived from the dead letter, so replaying one twice has
    one effect; and the handlers recognise a message they already applied by its own id.
    """
    connection = await connect(args.nats_url)
    try:
        js = connection.jetstream()
        with progress.counting("replaying", len(args.sequences), show=progress.wanted()) as tick:
            for sequence in args.sequences:
                await _replay_one(js, sequence)
                tick(1)
    finally:
        await connection.drain()
    return 0


async def _replay_one(js: JetStreamContext, sequence: int) -> None:
    """Publish one dead letter's original again, under a message id derived from the dead letter."""
    letter = await read_dead_letter(js, sequence)
    if letter.original_stream not in REPLAYABLE:
        msg = f"dead letter #{sequence} came from {letter.original_stream}, which cannot be replayed"
        raise UsageError(msg)
    source = f"{streams.HUB_DEADLETTER}:{sequence}"
    headers = {
        **letter.original_headers,
        MSG_ID_HEADER: f"replay/{source}",
        REPLAYED_FROM_HEADER: source,
    }
    ack = await js.publish(letter.original_subject, letter.payload, headers=headers)
    verdict = "already replayed" if ack.duplicate else "replayed"
    out(f"#{sequence} {verdict}: {letter.original_subject} stored as {ack.stream} #{ack.seq}")
