"""JetStream's own encryption at rest: with a key, no stored byte reveals a payload."""

from __future__ import annotations

from pathlib import Path

import nats

from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port
from referral_hub.runtime.jetstream.provision import provision

CANARY = b"pt-canary-7731-anticoagulant"


async def stored_bytes_after_publishing(tmp_path: Path, key: str) -> bytes:
    server = EmbeddedNats(tmp_path / "nats", port=free_port(), monitor_port=free_port(), encryption_key=key)
    server.start()
    try:
        connection = await nats.connect(server.url)
        await provision(connection.jetstream())
        await connection.jetstream().publish("clinic.harbor-pt.out.referral.request", b'{"patient_ref": "%s"}' % CANARY)
        await connection.drain()
    finally:
        server.stop()
    return b"".join(path.read_bytes() for path in (tmp_path / "nats" / "jetstream").rglob("*") if path.is_file())


async def test_without_a_key_the_store_holds_the_payload_in_clear(tmp_path: Path) -> None:
    assert CANARY in await stored_bytes_after_publishing(tmp_path, key="")


async def test_with_a_key_no_stored_byte_reveals_the_payload(tmp_path: Path) -> None:
    stored = await stored_bytes_after_publishing(tmp_path, key="test-only-jetstream-key-0123456789abcdef")

    assert stored
    assert CANARY not in stored
    assert b"anticoagulant" not in stored
