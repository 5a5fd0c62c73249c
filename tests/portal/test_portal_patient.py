"""The person behind a referral in the portal: typed in by the sender, read by the parties, by nobody else.

One hub and one portal process for the module; every demo clinic has a sealing key in the
key store the portal holds (as ``hubctl up`` arranges) and registered in the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from uuid import UUID

import httpx
import msgspec
import nats
import pytest
import pytest_asyncio

from referral_hub.cli.commands import fetch_registry
from referral_hub.client import ClinicClient
from referral_hub.contracts.referrals import ReferralRequested
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file, store_clinic
from referral_hub.sealing import parties
from referral_hub.sealing.keystore import KEYS_DIR_ENV, KeyStore
from tests.conftest import SERVICE_FACTORIES, start_services
from tests.helpers import RunningHub, eventually

from .conftest import RunningPortal, csrf_of, log_in, portal_process

pytestmark = pytest.mark.asyncio(loop_scope="module")

SAM, BEN, RAJ = "sam.lee@kneadwell-massage", "ben.okafor@harbor-pt", "raj.patel@lotus-acu"
FAMILY = f"Testperson-{secrets.token_hex(3)}"
"""A clearly synthetic, unique family name."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def keyed_portal(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[RunningPortal, KeyStore]]:
    """A hub whose clinics registered sealing keys, and a portal holding their private halves."""
    directory = tmp_path_factory.mktemp("patient-portal")
    store = KeyStore(directory / "sealing-keys")
    server = EmbeddedNats(directory / "nats", port=free_port(), monitor_port=free_port())
    server.start()
    try:
        await provision_as_operator(server.url, registry=load_registry_file())
        admin = await nats.connect(server.url, **credentials.for_hub_user(permissions.ADMIN).connect_options())
        for clinic in load_registry_file().clinics:
            keyed = msgspec.structs.replace(clinic, sealing_keys=(store.generate(clinic.id).public,))
            await store_clinic(admin.jetstream(), keyed)
        tasks, stop, ports = await start_services(server.url, SERVICE_FACTORIES)
        hub = RunningHub(server.url, admin, ports)
        try:
            async with portal_process(hub, directory / "portal.log", {KEYS_DIR_ENV: str(store.directory)}) as running:
                yield running, store
        finally:
            for client in hub.clients.values():
                with contextlib.suppress(Exception):
                    await client.close()
            stop.set()
            await asyncio.gather(*tasks)
            await admin.drain()
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def members(keyed_portal: tuple[RunningPortal, KeyStore]) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    portal, _ = keyed_portal
    clients = {name: portal.client() for name in (SAM, BEN, RAJ)}
    for name, client in clients.items():
        assert (await log_in(client, portal.logins[name])).status_code == 303
    yield clients
    for client in clients.values():
        await client.aclose()


def form(token: str, recipient: str, patient_ref: str, **person: str) -> dict[str, str]:
    return {
        "_csrf_token": token,
        "recipient": recipient,
        "patient_ref": patient_ref,
        "reason": "Post-operative knee rehabilitation",
        "pd_given": "Synthia",
        "pd_family": FAMILY,
        "pd_birth_date": "1984-03-07",
        "pd_phone": "+1 555 0100 4321",
        "pd_email": "synthia@example.org",
    } | {f"pd_{name}": value for name, value in person.items()}


async def refer(client: httpx.AsyncClient, recipient: str, patient_ref: str, **person: str) -> httpx.Response:
    token = csrf_of((await client.get("/referrals/new")).text)
    return await client.post("/referrals/new", data=form(token, recipient, patient_ref, **person))


async def test_the_form_refuses_a_birth_date_in_the_future_inline(members: dict[str, httpx.AsyncClient]) -> None:
    answer = await refer(members[SAM], "harbor-pt|physical_therapy", "pt-pd-future", birth_date="2999-01-01")
    assert answer.status_code == 400
    assert 'id="pd_birth_date-error"' in answer.text
    assert "The birth date 2999-01-01 is in the future." in answer.text


async def test_the_form_refuses_an_impossible_phone_number_inline(members: dict[str, httpx.AsyncClient]) -> None:
    answer = await refer(members[SAM], "harbor-pt|physical_therapy", "pt-pd-phone", phone="12")
    assert answer.status_code == 400
    assert 'id="pd_phone-error"' in answer.text


async def test_the_recipient_reads_the_name_and_phone_on_its_referral_page(
    members: dict[str, httpx.AsyncClient],
) -> None:
    sent = await refer(members[SAM], "harbor-pt|physical_therapy", "pt-pd-0001")
    assert sent.status_code == 303, sent.text
    path = sent.headers["location"].removeprefix("/portal")
    page = await eventually(lambda: _showing(members[BEN], path))
    assert f'<dd id="patient-name">Synthia {FAMILY}</dd>' in page
    assert '<dd id="patient-phone">+1 555 0100 4321</dd>' in page


async def test_the_recipient_inbox_row_shows_the_name(members: dict[str, httpx.AsyncClient]) -> None:
    sent = await refer(members[SAM], "harbor-pt|physical_therapy", "pt-pd-0002", given="Rowena")
    assert sent.status_code == 303, sent.text
    inbox = await eventually(lambda: _inbox_with(members[BEN], f"Rowena {FAMILY}"))
    assert f'<span class="patient-name">Rowena {FAMILY}</span>' in inbox


async def test_the_sender_reads_its_own_copy(members: dict[str, httpx.AsyncClient]) -> None:
    sent = await refer(members[SAM], "harbor-pt|physical_therapy", "pt-pd-0003", given="Selma")
    page = await eventually(lambda: _showing(members[SAM], sent.headers["location"].removeprefix("/portal")))
    assert f"Selma {FAMILY}" in page


async def test_another_clinic_gets_the_same_404_as_for_an_unknown_referral(
    members: dict[str, httpx.AsyncClient],
) -> None:
    sent = await refer(members[SAM], "harbor-pt|physical_therapy", "pt-pd-0004", given="Ottilie")
    path = sent.headers["location"].removeprefix("/portal")
    await eventually(lambda: _showing(members[BEN], path))
    outsider = await members[RAJ].get(path)
    unknown = await members[RAJ].get(f"/referrals/{UUID(int=7)}")
    assert (outsider.status_code, outsider.text) == (unknown.status_code, unknown.text)
    assert outsider.status_code == 404
    assert "Ottilie" not in outsider.text


async def test_a_clinic_the_referral_is_forwarded_to_reads_the_details_without_retyping(
    keyed_portal: tuple[RunningPortal, KeyStore], members: dict[str, httpx.AsyncClient]
) -> None:
    """Harbor PT refers to Kneadwell; Kneadwell forwards to Riverside, and the portal re-seals to Riverside itself."""
    portal, store = keyed_portal
    sent = await refer(members[BEN], "kneadwell-massage|massage", "pt-pd-0005", given="Forwardina")
    path = sent.headers["location"].removeprefix("/portal")
    page = await eventually(lambda: _showing(members[SAM], path))
    forwarded = await members[SAM].post(
        f"{path}/forward", data={"_csrf_token": csrf_of(page), "to_clinic": "riverside-wellness", "reason": "closer"}
    )
    assert forwarded.status_code == 303, forwarded.text
    riverside = await portal.hub.clinic("riverside-wellness")
    request = await eventually(lambda: _requested(riverside))
    assert request.patient_details is not None
    registry = {clinic.id: clinic for clinic in await fetch_registry(portal.hub.connection)}
    details = parties.read(store, registry, request.patient_details, request.referral_id, "riverside-wellness")
    assert details.display_name == f"Forwardina {FAMILY}"


async def _showing(client: httpx.AsyncClient, path: str) -> str | None:
    page = await client.get(path)
    return page.text if page.status_code == 200 and 'id="patient-name"' in page.text else None


async def _inbox_with(client: httpx.AsyncClient, text: str) -> str | None:
    page = await client.get("/inbox")
    return page.text if text in page.text else None


async def _requested(client: ClinicClient) -> ReferralRequested | None:
    page = await client.read_page()
    found = [item.message for item in client._items(page) if isinstance(item.message, ReferralRequested)]  # noqa: SLF001 - the client's own decoding
    return found[-1] if found else None
