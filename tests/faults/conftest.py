"""Fixtures of the fault-injection suite: a secured nats-server, provisioned, and the services as processes."""

from __future__ import annotations

import contextlib

import nats
import nats.errors
import pytest

from referral_hub.runtime import credentials, natsauth
from referral_hub.runtime.admission import BURST_ENV, RATE_ENV
from referral_hub.runtime.provision import provision
from referral_hub.runtime.registry import load_registry_file, store_registry
from tests.helpers import secure_server

from .harness import SERVICES, SUMMARY, HubProcesses, summary_table


@pytest.fixture
async def fault_hub(tmp_path, monkeypatch):
    monkeypatch.setenv(RATE_ENV, "100000")
    monkeypatch.setenv(BURST_ENV, "100000")
    registry = load_registry_file()
    server = secure_server(tmp_path, monkeypatch, [clinic.id for clinic in registry.clinics])
    server.start()
    admin = await nats.connect(
        server.url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        **credentials.for_hub_user(natsauth.ADMIN).connect_options(),
    )
    await provision(admin.jetstream())
    await store_registry(admin.jetstream(), registry)
    hub = HubProcesses(server, tmp_path / "logs")
    hub.log_dir.mkdir()
    try:
        for name in SERVICES:
            await hub.start(name)
        yield hub, admin
    finally:
        hub.stop_all()
        with contextlib.suppress(nats.errors.Error, OSError):
            await admin.close()
        server.stop()


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARY:
        terminalreporter.section("fault injection: sent vs effects")
        terminalreporter.write_line(summary_table())
