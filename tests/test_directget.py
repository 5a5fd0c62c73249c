"""Reading a stream by batched direct gets against a real nats-server: the protocol, gaps, prefixes, retries."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import api

from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port
from referral_hub.runtime.jetstream import directget

STREAM = "READ_ME"


def subject_of(n: int) -> str:
    return "read.a" if n % 2 else "read.b"


async def stored_stream(
    connection: Client, count: int, *, deleted: tuple[int, ...] = (), direct: bool = True, one_subject: bool = False
) -> None:
    """``count`` messages on ``read.a`` / ``read.b`` (odd / even sequences), or all on ``read.a``; minus ``deleted``."""
    js = connection.jetstream()
    await js.add_stream(api.StreamConfig(name=STREAM, subjects=["read.*"], allow_direct=direct))
    for n in range(1, count + 1):
        await js.publish("read.a" if one_subject else subject_of(n), b"m%d" % n)
    for seq in deleted:
        await js.delete_msg(STREAM, seq)


async def read(source, start: int = 1, **options) -> list[tuple[int, str, bytes]]:
    return [message async for message in directget.read_stream(source, STREAM, start, **options)]


async def test_the_server_answers_a_batch_as_the_reader_expects(nats_server: EmbeddedNats) -> None:
    """The protocol facts ``runtime.jetstream.directget`` relies on, asked of nats-server itself."""
    connection = await nats.connect(nats_server.url)
    try:
        await stored_stream(connection, 6, deleted=(3,))
        inbox = connection.new_inbox()
        subscription = await connection.subscribe(inbox)
        await connection.publish(f"$JS.API.DIRECT.GET.{STREAM}", b'{"seq": 2, "batch": 3}', reply=inbox)
        answer = [await subscription.next_msg(timeout=2) for _ in range(4)]
        await connection.publish(f"$JS.API.DIRECT.GET.{STREAM}", b'{"seq": 7, "batch": 3}', reply=inbox)
        nothing = await subscription.next_msg(timeout=2)
        bare_request = b'{"seq": 2, "batch": 3, "no_hdr": true}'
        await connection.publish(f"$JS.API.DIRECT.GET.{STREAM}", bare_request, reply=inbox)
        bare = [await subscription.next_msg(timeout=2) for _ in range(4)]
        last = await connection.request(f"$JS.API.STREAM.MSG.GET.{STREAM}", b'{"last_by_subj": "read.*"}')
        await connection.jetstream().delete_msg(STREAM, 6)
        last_of_all = await connection.request(f"$JS.API.STREAM.MSG.GET.{STREAM}", b'{"last_by_subj": ">"}')
    finally:
        await connection.close()

    messages, end = answer[:3], answer[3]
    assert [m.headers["Nats-Sequence"] for m in messages] == ["2", "4", "5"]  # deleted 3 stepped over
    assert [m.headers["Nats-Last-Sequence"] for m in messages] == ["0", "2", "4"]
    assert [m.headers["Nats-Num-Pending"] for m in messages] == ["3", "2", "1"]
    assert [m.headers["Nats-Subject"] for m in messages] == ["read.b", "read.b", "read.a"]
    assert [m.data for m in messages] == [b"m2", b"m4", b"m5"]
    assert end.headers["Status"] == "204"
    assert end.headers["Nats-Last-Sequence"] == "5"
    assert end.headers["Nats-Num-Pending"] == "1"
    assert "Nats-Sequence" not in end.headers
    assert nothing.headers["Status"] == "404"
    # Without headers: no sequences at all; the end still names the last one sent, but its
    # pending count is the one from the first sequence asked for (2, 4, 5, 6), not what is left (6).
    assert [(m.headers, m.data) for m in bare[:3]] == [(None, b"m2"), (None, b"m4"), (None, b"m5")]
    assert bare[3].headers["Status"] == "204"
    assert bare[3].headers["Nats-Last-Sequence"] == "5"
    assert bare[3].headers["Nats-Num-Pending"] == "4"
    # The leader's last message: by a subject filter, but never by ">" once the last one is deleted.
    assert json.loads(last.data)["message"]["seq"] == 6
    assert json.loads(last_of_all.data)["error"]["err_code"] == directget.NO_MESSAGE


@pytest.mark.parametrize("one_subject", [False, True], ids=["with-headers", "without-headers"])
async def test_reads_exactly_the_stored_sequences_in_order_across_batches_and_gaps(
    nats_server: EmbeddedNats, *, one_subject: bool
) -> None:
    """Two subjects are read with headers; one literal subject without, gaps asked for again with them."""
    deleted = (1, 4, 5, 8, 13, 21, 29, 30)
    subject = "read.a" if one_subject else None
    connection = await nats.connect(nats_server.url)
    try:
        await stored_stream(connection, 30, deleted=deleted, one_subject=one_subject)
        everything = await read(connection, batch=4, subject=subject)
        from_a_gap = await read(connection.jetstream(), 8, batch=3, subject=subject)
        one_at_a_time = await read(connection, 20, batch=1, subject=subject)
        past_the_end = await read(connection, 31, subject=subject)
    finally:
        await connection.close()

    stored = [n for n in range(1, 31) if n not in deleted]
    assert everything == [(n, "read.a" if one_subject else subject_of(n), b"m%d" % n) for n in stored]
    assert [seq for seq, _, _ in from_a_gap] == [n for n in stored if n >= 8]
    assert [seq for seq, _, _ in one_at_a_time] == [n for n in stored if n >= 20]
    assert past_the_end == []


async def test_one_subject_is_read_without_headers_and_a_gap_with_them(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = await nats.connect(nats_server.url)
    try:
        await stored_stream(connection, 12, deleted=(6,), one_subject=True)
        publish, asked = connection.publish, []

        async def recording(subject: str, payload: bytes = b"", reply: str = "", headers=None) -> None:
            if subject.startswith("$JS.API.DIRECT.GET."):
                request = json.loads(payload)
                asked.append((request["seq"], request.get("no_hdr", False)))
            await publish(subject, payload, reply=reply, headers=headers)

        monkeypatch.setattr(connection, "publish", recording)
        stored = await read(connection, batch=4, subject="read.a")
    finally:
        await connection.close()

    assert [seq for seq, _, _ in stored] == [n for n in range(1, 13) if n != 6]
    # 1-4 bare; 5-8 bare has a gap, so again with headers (5, 7, 8, 9); then 10-12 bare.
    assert asked == [(1, True), (5, True), (5, False), (10, True)]


async def test_one_of_two_interleaved_subjects(nats_server: EmbeddedNats) -> None:
    connection = await nats.connect(nats_server.url)
    try:
        await stored_stream(connection, 30, deleted=(4, 8, 30))
        only_b = await read(connection, 2, subject="read.b", batch=2)
    finally:
        await connection.close()

    assert only_b == [(n, "read.b", b"m%d" % n) for n in range(2, 30, 2) if n not in {4, 8}]


async def test_a_replica_that_answers_short_is_made_up_for_by_the_leader(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other direct get goes to an empty stream, as a lagging replica would answer: "nothing"."""
    connection = await nats.connect(nats_server.url)
    try:
        await stored_stream(connection, 20, deleted=(7,))
        await connection.jetstream().add_stream(api.StreamConfig(name="EMPTY", subjects=["empty"], allow_direct=True))
        publish, asked = connection.publish, []

        async def lagging(subject: str, payload: bytes = b"", reply: str = "", headers=None) -> None:
            if subject == f"$JS.API.DIRECT.GET.{STREAM}":
                asked.append(json.loads(payload)["seq"])
                if len(asked) % 2 == 0:
                    subject = "$JS.API.DIRECT.GET.EMPTY"
            await publish(subject, payload, reply=reply, headers=headers)

        monkeypatch.setattr(connection, "publish", lagging)
        stored = await read(connection, batch=5)
    finally:
        await connection.close()

    assert [seq for seq, _, _ in stored] == [n for n in range(1, 21) if n != 7]
    assert len(asked) > 4


async def test_a_read_ends_at_the_stream_end_as_of_the_request(nats_server: EmbeddedNats) -> None:
    connection = await nats.connect(nats_server.url)
    try:
        await stored_stream(connection, 10)
        seen = []
        async for seq, _, _ in directget.read_stream(connection, STREAM, batch=3):
            seen.append(seq)
            await connection.jetstream().publish("read.a", b"later")
    finally:
        await connection.close()

    assert seen == list(range(1, 11))


async def test_a_forged_sequence_header_in_a_stored_message_is_not_believed(nats_server: EmbeddedNats) -> None:
    connection = await nats.connect(nats_server.url)
    try:
        await stored_stream(connection, 2)
        forged = {"Nats-Sequence": "99", "Nats-Subject": "elsewhere", "Nats-Last-Sequence": "7", "Status": "204"}
        await connection.jetstream().publish("read.a", b"", headers=forged)
        await connection.jetstream().publish("read.b", b"m4")
        stored = await read(connection, batch=10)
    finally:
        await connection.close()

    assert stored == [(1, "read.a", b"m1"), (2, "read.b", b"m2"), (3, "read.a", b""), (4, "read.b", b"m4")]


async def test_an_empty_stream_and_a_missing_one(nats_server: EmbeddedNats) -> None:
    connection = await nats.connect(nats_server.url)
    try:
        await stored_stream(connection, 0)
        empty = await read(connection)
        with pytest.raises(directget.DirectGetError, match="stream not found"):
            [m async for m in directget.read_stream(connection, "NO_SUCH_STREAM")]
    finally:
        await connection.close()

    assert empty == []


async def test_no_responders_are_retried_until_direct_gets_are_answered(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream without responders on its direct-get subject (as while a cluster elects): retried, bounded."""
    monkeypatch.setattr(directget, "RETRY_SECONDS", 0.05)
    connection = await nats.connect(nats_server.url)
    try:
        await stored_stream(connection, 5, direct=False)
        with pytest.raises(directget.DirectGetError, match="no answer after 20 attempts"):
            await read(connection)
        reading = asyncio.create_task(read(connection))
        await asyncio.sleep(0.3)
        config = (await connection.jetstream().stream_info(STREAM)).config
        config.allow_direct = True
        await connection.jetstream().update_stream(config)
        stored = await reading
    finally:
        await connection.close()

    assert [seq for seq, _, _ in stored] == [1, 2, 3, 4, 5]


def importing_accounts(response_type: str) -> str:
    """Account ``OWNER`` has the stream; ``READER`` reaches its JetStream API under ``$JS.OWNER.API``."""
    return (
        "accounts {\n"
        "  OWNER: { jetstream: enabled, users: [{user: owner, password: owner}],\n"
        f'    exports: [{{service: "$JS.API.>", response_type: {response_type}}}] }}\n'
        "  READER: { users: [{user: reader, password: reader}],\n"
        '    imports: [{service: {account: OWNER, subject: "$JS.API.>"}, to: "$JS.OWNER.API.>"}] }\n'
        "}\n"
    )


async def test_a_reader_in_another_account_reads_under_its_import_prefix(tmp_path: Path) -> None:
    server = EmbeddedNats(
        tmp_path / "nats", port=free_port(), monitor_port=free_port(), auth_config=importing_accounts("stream")
    )
    server.start()
    try:
        owner = await nats.connect(server.url, user="owner", password="owner")  # noqa: S106 - a test account
        reader = await nats.connect(server.url, user="reader", password="reader")  # noqa: S106 - a test account
        try:
            await stored_stream(owner, 12, deleted=(6,))
            through_prefix = await read(reader, batch=5, prefix="$JS.OWNER.API")
            through_context = await read(reader.jetstream(prefix="$JS.OWNER.API"), batch=5)
            reply = await reader.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=2)
        finally:
            await owner.close()
            await reader.close()
    finally:
        server.stop()

    stored = [n for n in range(1, 13) if n != 6]
    assert [seq for seq, _, _ in through_prefix] == stored
    assert through_context == through_prefix
    assert "error" in json.loads(reply.data)  # the reader's own account has no such stream
