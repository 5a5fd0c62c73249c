"""The ``portal`` hub key reaches its own buckets and nothing else, on the generated configuration.

It acts for clinics only with each clinic's own key, so if it leaked it could not read an
inbox, the audit log or the hub's referral state, nor speak for a clinic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.embedded import EmbeddedNats
from referral_hub.runtime.jetstream import streams, topology
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from tests.helpers import eventually, secure_server

CLINICS = [clinic.id for clinic in load_registry_file().clinics]


@pytest.fixture
def nats_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedNats]:
    server = secure_server(tmp_path, monkeypatch, CLINICS)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def portal_key(nats_server: EmbeddedNats) -> AsyncIterator[tuple[Client, list[str]]]:
    await provision_as_operator(nats_server.url, registry=load_registry_file())
    errors: list[str] = []

    async def collect(error: Exception) -> None:
        errors.append(str(error))

    connection = await nats.connect(
        nats_server.url, error_cb=collect, **credentials.for_hub_user(permissions.PORTAL).connect_options()
    )
    yield connection, errors
    await connection.close()


async def test_the_portal_key_reads_and_writes_its_own_buckets(portal_key: tuple[Client, list[str]]) -> None:
    connection, errors = portal_key
    js = connection.jetstream()
    for bucket in permissions.PORTAL_BUCKETS:
        kv = await js.key_value(bucket)
        await kv.put("probe", b"1")
        assert (await kv.get("probe")).value == b"1"
    assert errors == []


@pytest.mark.parametrize(
    "subject",
    [
        f"$JS.API.DIRECT.GET.{streams.CLINIC_IN}",
        f"$JS.API.STREAM.MSG.GET.{streams.CLINIC_IN}",
        f"$JS.API.STREAM.INFO.{streams.AUDIT}",
        f"$JS.API.DIRECT.GET.KV_{topology.REFERRALS_KV}",
        f"$JS.API.CONSUMER.CREATE.{streams.CLINIC_IN}",
        "hub.inbox.harbor-pt.read",
    ],
)
async def test_the_portal_key_cannot_read_inboxes_audit_or_hub_state(
    portal_key: tuple[Client, list[str]], subject: str
) -> None:
    connection, errors = portal_key
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await connection.request(subject, b'{"seq": 1}', timeout=1)

    async def refused() -> bool:
        return any("permissions violation" in error.lower() and subject.lower() in error.lower() for error in errors)

    await eventually(refused)


async def test_the_portal_key_cannot_speak_for_a_clinic(portal_key: tuple[Client, list[str]]) -> None:
    connection, errors = portal_key
    subject = "clinic.harbor-pt.out.referral.request"
    await connection.publish(subject, b"{}")
    await connection.flush()

    async def refused() -> bool:
        return any("permissions violation" in error.lower() and subject.lower() in error.lower() for error in errors)

    await eventually(refused)


async def test_the_portal_key_reads_the_live_registry(portal_key: tuple[Client, list[str]]) -> None:
    connection, errors = portal_key
    registry = await connection.jetstream().key_value(topology.REGISTRY_KV)
    entry = await registry.get("clinic.harbor-pt")
    assert entry.value is not None
    assert b'"ben.okafor"' in entry.value
    assert errors == []


async def test_the_portal_key_cannot_change_the_registry(portal_key: tuple[Client, list[str]]) -> None:
    connection, errors = portal_key
    subject = f"$KV.{topology.REGISTRY_KV}.clinic.harbor-pt"
    await connection.publish(subject, b'{"id": "harbor-pt", "members": []}')
    await connection.flush()

    async def refused() -> bool:
        return any("permissions violation" in error.lower() and subject.lower() in error.lower() for error in errors)

    await eventually(refused)
