"""Answers a clinic's inbox reads: its messages after an event number, straight from the store.

Clinics may not create consumers (see ``runtime.broker.permissions``), so the hub answers replay
requests itself. A clinic asks on ``hub.inbox.<id>.read`` (its account imports exactly that
subject, so the id in it is authenticated by the server) with an :class:`InboxRead`, and
gets an :class:`InboxPage` of the stored messages after ``after``, oldest first.

The reads are direct gets on ``CLINIC_IN``: event numbers grow with the stream sequence
within one clinic's subjects, so the first message after ``after`` is found by bisecting
the sequence range (about twenty gets for a million messages), then read forward. Nothing
is acknowledged or consumed: any number of readers of one clinic see the same inbox.
"""

from __future__ import annotations

import contextlib
from typing import Final

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from referral_hub.contracts.inbox import InboxPage, InboxRead, InboxStored
from referral_hub.runtime.jetstream import streams, subjects
from referral_hub.runtime.messaging.inbox_writer import event_number_of

MAX_PAGE_MESSAGES: Final = 200
MAX_PAGE_BYTES: Final = 512 * 1024
"""A page stays well under the server's 1 MB ``max_payload``; the reader asks again for more."""
QUEUE_GROUP: Final = "inbox-read"
"""Replicas of the answering service share the requests."""

log = structlog.get_logger(__name__)
_request: Final = msgspec.json.Decoder(InboxRead)
_page: Final = msgspec.json.Encoder()


class InboxReader:
    """Reads one clinic's stored inbox by event number, without a consumer."""

    def __init__(self, js: JetStreamContext) -> None:
        """Read through ``js`` (the hub account's JetStream)."""
        self._js = js

    async def _next_from(self, clinic: str, sequence: int) -> tuple[int, bytes] | None:
        """The clinic's first stored message at or after ``sequence``: (sequence, data)."""
        try:
            raw = await self._js.get_msg(
                streams.CLINIC_IN, seq=sequence, subject=subjects.clinic_inbox(clinic), next=True, direct=True
            )
        except NotFoundError:
            return None
        return raw.seq or 0, raw.data or b""

    async def _head(self, clinic: str) -> tuple[int, int] | None:
        try:
            last = await self._js.get_last_msg(streams.CLINIC_IN, subjects.clinic_inbox(clinic), direct=True)
        except NotFoundError:
            return None
        return last.seq or 0, event_number_of(last.data or b"")

    async def _first_after(self, clinic: str, after: int, head_sequence: int) -> int:
        """The stream sequence of the clinic's first message numbered above ``after`` (one exists)."""
        first = (await self._js.stream_info(streams.CLINIC_IN)).state.first_seq
        best, low, high = head_sequence, first, head_sequence
        while low <= high:
            middle = (low + high) // 2
            found = await self._next_from(clinic, middle)
            if found is None or found[0] > high:
                high = middle - 1
            elif event_number_of(found[1]) > after:
                best, high = found[0], middle - 1
            else:
                low = found[0] + 1
        return best

    async def page(self, clinic: str, request: InboxRead) -> InboxPage:
        """The clinic's stored messages numbered above ``request.after``, oldest first, one page."""
        head = await self._head(clinic)
        if head is None:
            return InboxPage(last_event_number=0)
        head_sequence, last_number = head
        if request.after >= last_number:
            return InboxPage(last_event_number=last_number)
        limit = max(1, min(request.limit, MAX_PAGE_MESSAGES))
        sequence = await self._first_after(clinic, request.after, head_sequence)
        messages: list[InboxStored] = []
        size = 0
        while len(messages) < limit and sequence <= head_sequence:
            found = await self._next_from(clinic, sequence)
            if found is None or found[0] > head_sequence:
                break
            stored_at, data = found
            if messages and size + len(data) > MAX_PAGE_BYTES:
                break
            messages.append(InboxStored(sequence=stored_at, message=msgspec.Raw(data)))
            size += len(data)
            sequence = stored_at + 1
        return InboxPage(last_event_number=last_number, messages=tuple(messages))


async def answer(reader: InboxReader, request: Msg) -> None:
    """Answer one read request; a malformed one gets a page that says why, never silence."""
    clinic = subjects.parse_inbox_read(request.subject)
    if clinic is None or not request.reply:
        return
    try:
        asked = _request.decode(request.data or b"{}")
    except msgspec.DecodeError as exc:
        await request.respond(_page.encode(InboxPage(last_event_number=0, error=f"malformed read request: {exc}")))
        return
    await request.respond(_page.encode(await reader.page(clinic, asked)))


async def serve_inbox_reads(connection: Client) -> None:
    """Answer every clinic's inbox reads until cancelled (a service's background job)."""
    reader = InboxReader(connection.jetstream())
    subscription = await connection.subscribe(subjects.INBOX_READ_ALL, queue=QUEUE_GROUP)
    try:
        async for request in subscription.messages:
            try:
                await answer(reader, request)
            except (nats.errors.Error, TimeoutError) as exc:
                # The clinic asks again; one failed read must not end the loop.
                log.warning("inbox read failed", subject=request.subject, error=type(exc).__name__)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await subscription.unsubscribe()
