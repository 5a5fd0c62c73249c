"""Reading a stream in order without a consumer: JetStream batched direct gets.

A reader that may not create consumers (the audit log's operators, see ``runtime.broker.permissions``)
reads with ``$JS.API.DIRECT.GET.<stream>``, which any replica of a stream with
``allow_direct`` answers. What nats-server 2.15 does with a request body
``{"seq": N, "batch": K}`` (optionally ``"next_by_subj"``; ``server/stream.go``,
``getDirectRequest``), checked against the server in ``tests/test_directget.py``:

- the stored messages at and after ``N`` (matching the subject, if given) come back as
  separate messages on the request's reply subject, at most ``K`` of them, fewer once
  ``max_bytes`` (default: the server's ``max_pending``) is reached; deleted and expired
  sequences are stepped over;
- each carries its own stored headers followed by ``Nats-Stream``, ``Nats-Subject``,
  ``Nats-Sequence``, ``Nats-Time-Stamp``, ``Nats-Num-Pending`` (how many matching
  messages follow it) and ``Nats-Last-Sequence`` (the sequence of the message sent before
  it in this batch, 0 for the first). The server appends these after the stored headers,
  and nats-py keeps the last value of a repeated header, so a stored message cannot
  forge them;
- the batch ends with a ``204 EOB`` status message carrying ``Nats-Num-Pending`` and
  ``Nats-Last-Sequence`` (the last sequence sent); nothing at or after ``N`` is a single
  ``404`` with no EOB; ``seq`` 0 is a ``408``; a stream with no responder (none yet, or
  not ``allow_direct``) is the ``503`` no-responders status;
- with ``"no_hdr": true`` the messages come with no headers at all, not even
  ``Nats-Sequence``; the EOB keeps its headers, but its ``Nats-Num-Pending`` is then the
  count from ``N`` on, not what is left after the batch.

Any replica answers, and a follower only has to be 90% caught up to subscribe, so a
direct get may end early. The reader therefore takes the end from the stream's leader
first (``STREAM.INFO``'s last sequence, or for one subject ``STREAM.MSG.GET`` with
``last_by_subj``), reads direct gets up to it, and asks the leader for the next message
whenever a replica's answer falls short of that end. Nothing is created on the server and
nothing is acknowledged.

Through an account import (another API prefix), the export of ``DIRECT.GET`` must declare
``response_type: stream``: a singleton import lets only the first message of each answer
through, and the reader then waits out ``REPLY_TIMEOUT_SECONDS`` for every batch (it says so
in a log line, and still reads everything).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Final, TypeVar

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from referral_hub.errors import HubError

DEFAULT_PREFIX: Final = "$JS.API"
"""Where an account reaches its own JetStream API; an imported one has another prefix."""
BATCH: Final = 1000
"""Messages asked for per direct get."""
REPLY_TIMEOUT_SECONDS: Final = 5.0
"""How long to wait for the next message of an answer before asking again."""
UNAVAILABLE_ATTEMPTS: Final = 20
"""Consecutive "no responders" (a cluster electing a leader or adding a replica) before giving up."""
TIMEOUT_ATTEMPTS: Final = 3
"""Consecutive unanswered requests (a node dying mid-answer, or no permission) before giving up."""
RETRY_SECONDS: Final = 0.5
BARE_GAPS_IN_A_ROW: Final = 3
"""Batches without headers that had a gap, one after another, before a read asks for headers only."""
NO_MESSAGE: Final = 10037
"""The JetStream API's error code for "no message found"."""
_UNAVAILABLE: Final = frozenset({503, 10008})
_SEQUENCE: Final = "Nats-Sequence"
log = structlog.get_logger(__name__)
_STATUS: Final = "Status"


class DirectGetError(HubError):
    """The server refused a read of a stream (no such stream, a malformed request, ...)."""


class _StoredMessage(msgspec.Struct, frozen=True):
    subject: str
    seq: int
    data: str = ""


class _ApiError(msgspec.Struct, frozen=True):
    code: int
    err_code: int = 0
    description: str = ""


class _MsgGetResponse(msgspec.Struct, frozen=True):
    message: _StoredMessage | None = None
    error: _ApiError | None = None


class _StreamState(msgspec.Struct, frozen=True):
    messages: int = 0
    last_seq: int = 0


class _StreamInfoResponse(msgspec.Struct, frozen=True):
    state: _StreamState | None = None
    error: _ApiError | None = None


Response = TypeVar("Response", _MsgGetResponse, _StreamInfoResponse)
_msg_get: Final = msgspec.json.Decoder(_MsgGetResponse)
_stream_info: Final = msgspec.json.Decoder(_StreamInfoResponse)
_encoder: Final = msgspec.json.Encoder()


@dataclass(frozen=True)
class Stored:
    """One stored message: its stream sequence, subject and payload."""

    sequence: int
    subject: str
    data: bytes


def endpoint(source: Client | JetStreamContext, prefix: str | None = None) -> tuple[Client, str]:
    """The connection and API prefix to read through: ``prefix``, else the context's own, else ``$JS.API``."""
    if isinstance(source, JetStreamContext):
        # nats-py keeps a context's connection and prefix (domain included) private.
        return source._nc, prefix or source._prefix  # noqa: SLF001 - no public accessor
    return source, prefix or DEFAULT_PREFIX


async def _unavailable_pause(attempt: int, limit: int, what: str) -> None:
    if attempt >= limit:
        msg = f"{what}: no answer after {attempt} attempts"
        raise DirectGetError(msg)
    await asyncio.sleep(RETRY_SECONDS)


async def _api_request(
    connection: Client, subject: str, request: dict[str, object], decoder: msgspec.json.Decoder[Response]
) -> Response:
    """One JetStream API request, answered by the stream's leader; a cluster's brief unavailability is retried.

    Returns the answer, an error in it included, unless that error says "unavailable".
    """
    unavailable = timeouts = 0
    while True:
        try:
            reply = await connection.request(subject, _encoder.encode(request), timeout=REPLY_TIMEOUT_SECONDS)
        except nats.errors.NoRespondersError:
            unavailable += 1
            await _unavailable_pause(unavailable, UNAVAILABLE_ATTEMPTS, subject)
            continue
        except nats.errors.TimeoutError:
            timeouts += 1
            await _unavailable_pause(timeouts, TIMEOUT_ATTEMPTS, subject)
            continue
        answer = decoder.decode(reply.data)
        error = answer.error
        if error is None or (error.code not in _UNAVAILABLE and error.err_code not in _UNAVAILABLE):
            return answer
        unavailable += 1
        await _unavailable_pause(unavailable, UNAVAILABLE_ATTEMPTS, subject)


def _refused(stream: str, error: _ApiError) -> DirectGetError:
    return DirectGetError(f"reading {stream}: {error.description} ({error.err_code})")


async def leader_get(
    source: Client | JetStreamContext, stream: str, request: dict[str, object], *, prefix: str | None = None
) -> Stored | None:
    """One message through the stream's leader (``STREAM.MSG.GET``), or ``None`` if there is none.

    ``request`` is the API's: ``{"seq": N}``, ``{"last_by_subj": S}`` or
    ``{"seq": N, "next_by_subj": S}``; subjects may be wildcards. (Not ``last_by_subj: ">"``:
    nats-server 2.15 answers it with the message at the stream's last sequence, "no message
    found" if that one was deleted.)
    """
    connection, api = endpoint(source, prefix)
    answer = await _api_request(connection, f"{api}.STREAM.MSG.GET.{stream}", request, _msg_get)
    if answer.error is not None:
        if answer.error.err_code == NO_MESSAGE:
            return None
        raise _refused(stream, answer.error)
    if answer.message is None:
        msg = f"reading {stream}: an answer with neither a message nor an error"
        raise DirectGetError(msg)
    found = answer.message
    return Stored(found.seq, found.subject, base64.b64decode(found.data))


async def _end(connection: Client, api: str, stream: str, subject: str | None) -> int:
    """The last sequence to read, as the stream's leader has it now; 0 if there is nothing to read."""
    if subject:
        last = await leader_get(connection, stream, {"last_by_subj": subject}, prefix=api)
        return last.sequence if last is not None else 0
    answer = await _api_request(connection, f"{api}.STREAM.INFO.{stream}", {}, _stream_info)
    if answer.error is not None:
        raise _refused(stream, answer.error)
    state = answer.state or _StreamState()
    return state.last_seq if state.messages else 0


@dataclass
class _Answer:
    """How one direct get ended."""

    status: str = ""
    """``204`` (end of batch), ``404``, ``503``, another status; or ``timeout``, ``dropped`` (part
    of the answer never arrived) and ``gaps`` (a batch without headers skipped a sequence)."""
    last: int = 0
    """After a ``204``: the sequence the server says it sent last."""
    description: str = ""


async def read_stream(  # noqa: PLR0913 - the stream, where to start, and three independent options
    source: Client | JetStreamContext,
    stream: str,
    start_seq: int = 1,
    *,
    subject: str | None = None,
    batch: int = BATCH,
    prefix: str | None = None,
) -> AsyncGenerator[tuple[int, str, bytes], None]:
    """(sequence, subject, data) of every stored message from ``start_seq`` on, in order.

    Reads up to the stream's last message (matching ``subject``, if given) as of the call,
    ``batch`` messages per request; a message stored meanwhile is not read. Sequences that
    were deleted or expired are skipped; nothing is read twice. ``source`` is a connection
    or a JetStream context (whose API prefix is used unless ``prefix`` is given).
    """
    connection, api = endpoint(source, prefix)
    subject = None if subject == ">" else subject
    end = await _end(connection, api, stream, subject)
    if max(start_seq, 1) > end:
        return
    reader = _Reader(_Read(connection, api, stream, subject, batch, end), max(start_seq, 1))
    messages = reader.messages()
    try:
        async for stored in messages:
            yield stored.sequence, stored.subject, stored.data
    finally:
        await messages.aclose()


@dataclass(frozen=True)
class _Read:
    """What one read asks for: a stream (or its messages on ``subject``) up to sequence ``end``."""

    connection: Client
    api: str
    stream: str
    subject: str | None
    batch: int
    end: int


class _Reader:
    """One read: direct gets from ``wanted`` up to the end, the leader filling in where they fall short.

    Reading one literal subject, batches are asked for without headers (``no_hdr``), which
    saves nats-py most of its work per message: the sequences are known only if the batch
    has none missing, which its end tells (``Nats-Last-Sequence`` minus the first asked for
    plus one is how many arrived). A batch with a gap (a deleted or expired message, or one
    that never reached us) is asked for again with headers, and after a few of those in a
    row (a subject whose messages are interleaved with others) the read keeps to headers.
    """

    def __init__(self, read: _Read, wanted: int) -> None:
        self._read = read
        self.wanted = wanted
        self._arrived: asyncio.Queue[Msg] = asyncio.Queue()
        self._inbox = read.connection.new_inbox()
        self._requests = self._unavailable = self._unanswered = 0
        self._bare = read.subject is not None and not {"*", ">"} & set(read.subject.split("."))
        self._headers_next = False
        self._gaps_in_a_row = 0

    async def _collect(self, message: Msg) -> None:
        self._arrived.put_nowait(message)

    async def messages(self) -> AsyncGenerator[Stored, None]:
        """Every message up to the end, in order."""
        subscription = await self._read.connection.subscribe(f"{self._inbox}.*", cb=self._collect)
        try:
            while self.wanted <= self._read.end:
                answer = _Answer()
                async with contextlib.aclosing(self._answer(answer)) as batch:
                    async for stored in batch:
                        if stored.sequence > self._read.end:
                            return
                        yield stored
                        self.wanted = stored.sequence + 1
                        self._unavailable = self._unanswered = 0
                if self.wanted > self._read.end:
                    return
                if answer.status in {"204", "404"}:
                    # The replica that answered holds nothing more up to the end, but it may lag
                    # behind the leader: the leader says whether there is a next message.
                    found = await self._leader_next()
                    if found is None:
                        return
                    yield found
                    self.wanted = found.sequence + 1
                else:
                    await self._pause_or_raise(answer)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _request(self, *, bare: bool) -> str:
        """Ask for the next batch from ``wanted``; returns the reply subject its answer comes on."""
        read = self._read
        self._requests += 1
        reply = f"{self._inbox}.{self._requests}"
        body: dict[str, object] = {"seq": self.wanted, "batch": max(1, min(read.batch, read.end - self.wanted + 1))}
        if read.subject:
            body["next_by_subj"] = read.subject
        if bare:
            body["no_hdr"] = True
        await read.connection.publish(f"{read.api}.DIRECT.GET.{read.stream}", _encoder.encode(body), reply=reply)
        return reply

    async def _answer(self, answer: _Answer) -> AsyncGenerator[Stored, None]:
        """Ask for batches and yield their messages until one ends short; ``answer`` says how.

        A complete batch is followed by the next request, so a ``204`` in ``answer`` means
        the replica sent nothing (more) before the end.
        """
        while self.wanted <= self._read.end:
            bare = self._bare and not self._headers_next
            self._headers_next = False
            reply, first, ended = await self._request(bare=bare), self.wanted, _Answer()
            batch = self._bare_batch(reply, first, ended) if bare else self._headed_batch(reply, ended)
            sent = 0
            async with contextlib.aclosing(batch) as stored_batch:
                async for stored in stored_batch:
                    sent += 1
                    yield stored
            if ended.status == "gaps":
                self._headers_next = True
                self._gaps_in_a_row += 1
                self._bare = self._bare and self._gaps_in_a_row < BARE_GAPS_IN_A_ROW
            elif ended.status != "204" or sent == 0:
                answer.status, answer.description = ended.status, ended.description
                return

    async def _reply(self, reply: str) -> Msg | None:
        """The next message of the answer on ``reply`` (the rest of answers given up on are dropped)."""
        while True:
            message = await _next(self._arrived)
            if message is None or message.subject == reply:
                return message

    async def _headed_batch(self, reply: str, ended: _Answer) -> AsyncGenerator[Stored, None]:
        """One answer's messages, each naming its sequence and subject."""
        sent_before = 0
        while (message := await self._reply(reply)) is not None:
            headers = message.headers or {}
            if _SEQUENCE not in headers:
                _end_of(ended, headers, sent_before)
                return
            if int(headers.get("Nats-Last-Sequence", "-1")) != sent_before:
                ended.status = "dropped"  # a message of this answer never reached us
                return
            sent_before = int(headers[_SEQUENCE])
            yield Stored(sent_before, headers.get("Nats-Subject", ""), message.data)
        ended.status = "timeout"

    async def _bare_batch(self, reply: str, first: int, ended: _Answer) -> AsyncGenerator[Stored, None]:
        """One answer's messages without headers: yielded only once its end shows that none is missing."""
        payloads: list[bytes] = []
        while (message := await self._reply(reply)) is not None:
            if not message.headers:
                payloads.append(message.data)
                continue
            if _SEQUENCE in message.headers:
                self._bare = False  # a server that ignores no_hdr: headers from now on
                ended.status = "gaps"
                return
            _end_of(ended, message.headers, first + len(payloads) - 1)
            if ended.status == "dropped":
                ended.status = "gaps"
            if ended.status != "204":
                return
            self._gaps_in_a_row = 0
            subject = self._read.subject or ""
            for offset, data in enumerate(payloads):
                yield Stored(first + offset, subject, data)
            return
        ended.status = "timeout"

    async def _leader_next(self) -> Stored | None:
        read = self._read
        found = await leader_get(
            read.connection, read.stream, {"seq": self.wanted, "next_by_subj": read.subject or ">"}, prefix=read.api
        )
        return found if found is not None and found.sequence <= read.end else None

    async def _pause_or_raise(self, answer: _Answer) -> None:
        """After an answer that was cut short: wait a moment before asking again, or give up."""
        what = f"direct get on {self._read.stream}"
        if answer.status == "503":
            self._unavailable += 1
            await _unavailable_pause(self._unavailable, UNAVAILABLE_ATTEMPTS, what)
        elif answer.status in {"timeout", "dropped"}:
            # Part of the answer never arrived: ask again from the first message missing.
            log.warning("a direct get's answer stopped short; asking again", stream=self._read.stream, at=self.wanted)
            self._unanswered += 1
            await _unavailable_pause(self._unanswered, TIMEOUT_ATTEMPTS, what)
        else:
            msg = f"{what} refused: {answer.status} {answer.description}".rstrip()
            raise DirectGetError(msg)


async def _next(arrived: asyncio.Queue[Msg]) -> Msg | None:
    """The next reply, or ``None`` if none arrives in time."""
    with contextlib.suppress(asyncio.QueueEmpty):
        return arrived.get_nowait()
    try:
        return await asyncio.wait_for(arrived.get(), REPLY_TIMEOUT_SECONDS)
    except TimeoutError:
        return None


def _end_of(ended: _Answer, headers: dict[str, str], last_received: int) -> None:
    """Fill ``ended`` from a status reply (no ``Nats-Sequence``): end of batch, nothing found, or a refusal.

    An end of batch whose last sequence is not the last one received means messages of the
    answer were lost on the way (``dropped``).
    """
    description = headers.get("Description", "").strip()
    ended.status = headers.get(_STATUS, "?")
    ended.last = int(headers.get("Nats-Last-Sequence", "0"))
    ended.description = description.splitlines()[0] if description else ""
    if ended.status == "204" and ended.last != last_received:
        ended.status = "dropped"
