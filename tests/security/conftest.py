"""Hostile-client suite fixtures: one secured hub per module, checked once more at the end of the run.

Each module gets a nats-server configured by ``runtime.broker.server_config.generate`` (what ``hubctl
up`` runs), provisioned by ``provision_as_operator`` and served by the real referrals,
notifications and audit services. Its services stop with the module; the server itself is
kept until the end of the session, when the auditor reads and verifies its whole audit
chain, and the summary table of every attack is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import nats
import nats.errors
import pytest
import pytest_asyncio

from referral_hub.audit.adapters import read_chain
from referral_hub.audit.domain import verify
from referral_hub.contracts.audit import AuditEntry
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.credentials import NatsCredentials
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from tests.helpers import secure_server

from .hostile import AttackedHub, AuditLog, report, running_services

CLINICS = [clinic.id for clinic in load_registry_file().clinics]
HUB_READER_SECONDS = 10.0
"""How long the final check gives the hub's own chain reader (``audit.adapters.read_chain``)."""


@pytest.fixture(scope="session")
def attacked_hubs() -> Iterator[list[AttackedHub]]:
    """Every hub the suite attacked; at the end each one's audit chain must still verify."""
    hubs: list[AttackedHub] = []
    yield hubs
    broken = []
    for hub in hubs:
        try:
            verdict, intact = asyncio.run(final_chain_check(hub))
        finally:
            hub.server.stop()
        report(
            f"after the suite: the audit chain of the '{hub.name}' hub",
            "verifies; the hub's reader agrees",
            verdict,
        )
        if not intact:
            broken.append(f"{hub.name}: {verdict}")
    assert not broken, "audit chain no longer verifies: " + "; ".join(broken)


async def final_chain_check(hub: AttackedHub) -> tuple[str, bool]:
    """Read the whole chain as the auditor, by direct gets and with the hub's own reader; verify both."""
    auditor_key = credentials.hub_seed_path(hub.auth_dir, permissions.AUDITOR)
    identity = NatsCredentials(permissions.hub_inbox_prefix(permissions.AUDITOR), nkey_file=auditor_key)
    problems: list[str] = []

    async def collect(error: Exception) -> None:
        problems.append(str(error))

    auditor = await nats.connect(hub.url, error_cb=collect, **identity.connect_options())
    try:
        log = AuditLog(auditor)
        stored = await log.refresh()
        verdict = f"{log.verified} of {stored} stored entries verify (direct gets)"
        intact = log.intact and log.verified > 0
        if log.foreign:
            verdict += f"; FOREIGN: {log.foreign[0]}"
        entries: list[AuditEntry] = []
        try:
            async with asyncio.timeout(HUB_READER_SECONDS):
                entries = [entry async for entry in read_chain(auditor.jetstream(timeout=1))]
        except (TimeoutError, nats.errors.Error) as exc:
            refused = f" ({problems[0]})" if problems else ""
            return f"{verdict}; the hub's reader FAILED: {type(exc).__name__}{refused}", False
        count, fault = verify(entries)
        agrees = fault is None and count == log.verified
        verdict += f"; the hub's reader verifies {count}" if agrees else f"; the hub's reader DISAGREES: {fault}"
        return verdict, intact and agrees
    finally:
        with contextlib.suppress(nats.errors.Error):
            await auditor.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured_hub(request, tmp_path_factory, attacked_hubs) -> AsyncIterator[AttackedHub]:
    """A secured, provisioned hub with its services, shared by one module's tests."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    directory = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch:
        server = secure_server(directory, patch, CLINICS)
        hub = AttackedHub(name, server, directory / "auth")
        attacked_hubs.append(hub)
        server.start()
        await provision_as_operator(server.url, registry=load_registry_file())
        hub.admin = await nats.connect(server.url, **credentials.for_hub_user(permissions.ADMIN).connect_options())
        hub.auditor = await nats.connect(server.url, **credentials.for_hub_user(permissions.AUDITOR).connect_options())
        hub.audit = AuditLog(hub.auditor)
        try:
            async with running_services(hub, getattr(request.module, "SERVICE_FACTORIES", None)):
                yield hub
                for client in hub.clients.values():
                    with contextlib.suppress(Exception):
                        await client.close()
                for hostile in hub.hostiles.values():
                    with contextlib.suppress(Exception):
                        await hostile.close()
        finally:
            for connection in (hub.admin, hub.auditor):
                with contextlib.suppress(nats.errors.Error):
                    await connection.close()
