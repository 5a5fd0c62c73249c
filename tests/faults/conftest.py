"""Fault-suite fixtures: a secured nats-server or cluster, provisioned, with the services as processes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.embedded import EmbeddedCluster, EmbeddedNats
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from referral_hub.runtime.messaging.admission import BURST_ENV, RATE_ENV
from tests.helpers import secure_cluster, secure_server

from .harness import SERVICES, SUMMARY, HubProcesses, summary_table


@contextlib.asynccontextmanager
async def running_hub(
    server: EmbeddedNats | EmbeddedCluster, log_dir, *, copies: int = 1, stream_replicas: int = 1
) -> AsyncIterator[tuple[HubProcesses, Client]]:
    """Start ``server``, provision it, run ``copies`` processes of every service; stop everything after."""
    server.start()
    admin = await nats.connect(
        server_urls(server.url),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        **credentials.for_hub_user(permissions.ADMIN).connect_options(),
    )
    await provision_as_operator(server.url, replicas=stream_replicas, registry=load_registry_file())
    hub = HubProcesses(server, log_dir)
    hub.log_dir.mkdir()
    try:
        for copy in range(copies):
            for name in SERVICES:
                await hub.start(name, copy)
        yield hub, admin
    finally:
        hub.stop_all()
        with contextlib.suppress(nats.errors.Error, OSError):
            await admin.close()
        server.stop()


@pytest.fixture
def clinic_ids(monkeypatch) -> list[str]:
    """Every registered clinic; the rate limits are lifted, since the fault suite drives load on purpose."""
    monkeypatch.setenv(RATE_ENV, "100000")
    monkeypatch.setenv(BURST_ENV, "100000")
    return [clinic.id for clinic in load_registry_file().clinics]


@pytest.fixture
async def fault_hub(tmp_path, monkeypatch, clinic_ids):
    async with running_hub(secure_server(tmp_path, monkeypatch, clinic_ids), tmp_path / "logs") as running:
        yield running


@pytest.fixture
async def replicated_hub(tmp_path, monkeypatch, clinic_ids):
    """Two processes of every service on one server."""
    async with running_hub(secure_server(tmp_path, monkeypatch, clinic_ids), tmp_path / "logs", copies=2) as running:
        yield running


@pytest.fixture
async def cluster_hub(tmp_path, monkeypatch, clinic_ids):
    """A 3-node cluster with every stream and bucket R3, one process of every service."""
    cluster = secure_cluster(tmp_path, monkeypatch, clinic_ids)
    async with running_hub(cluster, tmp_path / "logs", stream_replicas=3) as running:
        yield running


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARY:
        terminalreporter.section("fault injection: sent vs effects")
        terminalreporter.write_line(summary_table())
