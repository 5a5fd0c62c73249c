"""Foreign messages in the audit streams: the chain and its checkpoints go on around them, and readers name them.

A foreign message is one the audit service did not write. Before the audit log had its own
account a push consumer's ``deliver_subject`` could store one; here the test server has no
authorization, so the operator's connection publishes it directly.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client
from prometheus_client import REGISTRY

from referral_hub.audit.adapters import ChainWriter, Checkpointer, read_chain, read_checkpoints
from referral_hub.audit.checkpoints import load_key, new_key_seed
from referral_hub.audit.domain import describe, verify
from referral_hub.runtime.broker.embedded import EmbeddedNats
from referral_hub.runtime.jetstream import streams, subjects
from referral_hub.runtime.messaging.incoming import Incoming

from .helpers import hubctl

AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
KEY = load_key(new_key_seed())


@pytest.fixture(autouse=True)
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hubctl audit`` trusts only a pinned verifier key: pin the one these logs are signed with."""
    monkeypatch.setenv("HUB_AUDIT_VERIFIER_KEY", str(KEY.current.verifier))


def delivery(seq: int) -> Incoming:
    return Incoming("hub.event.x", b'{"n": %d}' % seq, {}, "HUB_EVENTS", seq, AT, 1)


async def append(writer: ChainWriter, sources: range) -> None:
    await asyncio.gather(*(writer.append(describe(delivery(seq), AT), f"HUB_EVENTS:{seq}") for seq in sources))


def foreign_counted(stream: str) -> float:
    return REGISTRY.get_sample_value("hub_audit_foreign_messages_total", {"stream": stream}) or 0.0


async def consumers(connection: Client) -> tuple[int, int]:
    js = connection.jetstream()
    return (
        (await js.stream_info(streams.AUDIT)).state.consumer_count,
        (await js.stream_info(streams.AUDIT_CHECKPOINTS)).state.consumer_count,
    )


async def test_a_foreign_message_in_the_audit_stream_does_not_stop_the_writer_and_readers_name_it(
    nats_server: EmbeddedNats, provisioned: Client, tmp_path: Path
) -> None:
    js = provisioned.jetstream()
    counted = foreign_counted(streams.AUDIT)
    writer = ChainWriter(provisioned)
    await append(writer, range(1, 6))
    await js.publish(subjects.AUDIT_ENTRY, b"not an audit entry")  # sequence 6
    await append(writer, range(6, 11))
    await js.publish(subjects.AUDIT_ENTRY, b'{"type": "audit.entry", "index": 11}')  # sequence 12, the stream's last
    await append(ChainWriter(provisioned), range(11, 13))  # a new writer finds the foreign message at the end

    skipped = []
    entries = [entry async for entry in read_chain(js, batch=4, foreign=skipped.append)]
    middle = [entry.index async for entry in read_chain(js, start=6, count=3, foreign=skipped.append)]
    verified = await hubctl("audit", "verify", "--nats-url", nats_server.url)
    logged = await hubctl("audit", "log", "--nats-url", nats_server.url)
    queried = await hubctl(
        "audit", "query", "--json", "--index", str(tmp_path / "index.sqlite"), "--nats-url", nats_server.url
    )

    assert verify(entries) == (12, None)
    assert [entry.source_sequence for entry in entries] == list(range(1, 13))
    assert (await js.stream_info(streams.AUDIT)).state.last_seq == 14
    assert middle == [6, 7, 8]
    assert [message.sequence for message in skipped] == [6, 12, 6]
    assert foreign_counted(streams.AUDIT) - counted == 2  # each writer logged and counted the one it met
    assert verified.status == 1
    assert "foreign" in verified.stderr
    assert "AUDIT sequence 6 (audit.entry, 18 bytes)" in verified.stderr
    assert "AUDIT sequence 12" in verified.stderr
    assert "Traceback" not in verified.stderr + logged.stderr + queried.stderr
    assert logged.status == 1
    assert len(logged.stdout.splitlines()) == 12
    assert "AUDIT sequence 6" in logged.stderr
    assert queried.status == 0, queried.stderr
    assert [json.loads(line)["index"] for line in queried.stdout.splitlines()] == list(range(1, 13))
    assert "AUDIT sequence 12" in queried.stderr


async def test_a_foreign_checkpoint_does_not_stop_checkpoints_and_verify_and_prove_name_it(
    nats_server: EmbeddedNats, provisioned: Client, tmp_path: Path
) -> None:
    js = provisioned.jetstream()
    counted = foreign_counted(streams.AUDIT_CHECKPOINTS)
    writer = ChainWriter(provisioned)
    checkpointer = Checkpointer(js, KEY, every_entries=1)
    await append(writer, range(1, 6))
    first = await checkpointer.run_once(AT)
    await js.publish(subjects.AUDIT_CHECKPOINT, b"not a checkpoint")  # checkpoint stream sequence 2
    await js.publish(subjects.AUDIT_ENTRY, b"not an entry either")  # audit stream sequence 6
    await append(writer, range(6, 9))
    second = await checkpointer.run_once(AT + timedelta(minutes=1))
    third = await Checkpointer(js, KEY, every_entries=1).run_once(AT + timedelta(minutes=2))

    skipped = []
    published = await read_checkpoints(js, foreign=skipped.append)
    verified = await hubctl("audit", "verify", "--nats-url", nats_server.url)
    receipt = tmp_path / "receipt.json"
    proved = await hubctl("audit", "prove", "7", "--out", str(receipt), "--nats-url", nats_server.url)
    checked = await hubctl("audit", "check-proof", str(receipt))

    assert first is not None
    assert second is not None
    assert third is None  # nothing new to sign
    assert (second.checkpoint_index, second.from_index, second.to_index) == (2, 6, 8)
    assert published == [first, second]
    assert [message.sequence for message in skipped] == [2]
    assert foreign_counted(streams.AUDIT_CHECKPOINTS) - counted == 1  # by the checkpointer that stepped over it
    assert verified.status == 1
    assert "AUDIT_CHECKPOINTS sequence 2 (audit.checkpoint, 16 bytes)" in verified.stderr
    assert "Traceback" not in verified.stderr + proved.stderr
    assert proved.status == 0, proved.stderr
    assert "AUDIT_CHECKPOINTS sequence 2" in proved.stderr
    assert "AUDIT sequence 6" in proved.stderr
    assert checked.status == 0, checked.stderr
    assert "entry 7" in checked.stdout


async def test_reading_the_audit_log_creates_no_consumer(
    nats_server: EmbeddedNats, provisioned: Client, tmp_path: Path
) -> None:
    js = provisioned.jetstream()
    writer = ChainWriter(provisioned)
    await append(writer, range(1, 301))
    checkpointer = Checkpointer(js, KEY, every_entries=100)
    await checkpointer.run_once(AT)
    await append(writer, range(301, 401))
    seen: list[tuple[int, int]] = []

    async def watch() -> None:
        while True:
            seen.append(await consumers(provisioned))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        signed = await checkpointer.run_once(AT + timedelta(minutes=1))
        results = [
            await hubctl("audit", *command, "--nats-url", nats_server.url)
            for command in (
                ("verify",),
                ("log", "--json"),
                ("prove", "250"),
                ("consistency", "1", "2"),
                ("query", "--index", str(tmp_path / "index.sqlite")),
            )
        ]
    finally:
        watcher.cancel()
    after = await consumers(provisioned)

    assert signed is not None
    assert [result.status for result in results] == [0] * 5, [result.stderr for result in results]
    assert results[0].stdout.startswith("audit chain OK: 400 entries verified; 2 signed checkpoints verified")
    assert len(seen) > 10
    assert set(seen) == {(0, 0)}
    assert after == (0, 0)
