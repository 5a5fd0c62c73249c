"""Fixtures: a real nats-server per test (free ports, temporary store), and the hub on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
import structlog
from nats.aio.client import Client

from referral_hub.audit import app as audit_app
from referral_hub.notifications import app as notifications_app
from referral_hub.referrals import app as referrals_app
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.embedded import EmbeddedCluster, EmbeddedNats, free_port, free_ports
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.hosting.service import ServiceApp, ServiceSettings, serve
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file

from .helpers import RunningHub
from .security.hostile import ROWS_DIR_ENV, reported_rows, summary_table

_ROWS_DIR = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """One folder per run where every test process (xdist worker or not) writes its hostile-suite rows."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        directory = Path(tempfile.mkdtemp(prefix="hub-hostile-rows-"))
        os.environ[ROWS_DIR_ENV] = str(directory)
        config.stash[_ROWS_DIR] = directory


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The hostile suite's table of attack, expected and observed, gathered from every worker."""
    directory = config.stash.get(_ROWS_DIR, None)
    if directory is None:
        return
    rows = reported_rows(directory)
    shutil.rmtree(directory, ignore_errors=True)
    if rows:
        terminalreporter.section("hostile clients: attack, expected, observed")
        terminalreporter.write_line(summary_table(rows))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow modules first, the longest first, so parallel workers do not end on one long module.

    ``make test`` hands whole modules to its workers in this order; a long module drawn last
    would leave the other workers idle while it runs. The order within a module is kept.
    """
    weight: dict[str, int] = {}
    for item in items:
        if item.get_closest_marker("slow") is not None:
            name = item.module.__name__
            weight[name] = weight.get(name, 0) - _SLOW_WEIGHT.get(name, 1)
    items.sort(key=lambda item: weight.get(item.module.__name__, 0))


_SLOW_WEIGHT = {
    "tests.test_fuzz_hostile": 1000,
    "tests.test_prometheus": 20,
    "tests.test_up": 100,
    "tests.test_up_supervision": 40,
}
"""Modules whose few tests are each minutes long, weighted like that many ordinary slow tests."""


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    """Tests that configure logging must not leave it pointing at a closed capture stream."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", port=free_port(), monitor_port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """Three nats-servers routed into one JetStream cluster on loopback."""
    cluster = EmbeddedCluster(
        tmp_path / "cluster", port=free_ports(3), monitor_port=free_ports(3), cluster_port=free_ports(3)
    )
    cluster.start()
    asyncio.run(_until_jetstream_answers(cluster.url))
    yield cluster
    cluster.stop()


async def _until_jetstream_answers(url: str) -> None:
    """A new cluster is healthy before its meta leader answers API requests; wait for that too."""
    connection = await nats.connect(server_urls(url))
    try:
        for _ in range(60):
            with contextlib.suppress(nats.errors.Error):
                await connection.jetstream().account_info()
                return
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


@pytest.fixture
async def provisioned(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    await provision_as_operator(nats_server.url, registry=load_registry_file())
    connection = await nats.connect(nats_server.url, **credentials.for_hub_user(permissions.ADMIN).connect_options())
    yield connection
    await connection.drain()


async def start_services(
    url: str, factories: dict[str, Callable[[str], ServiceApp]]
) -> tuple[list[asyncio.Task[None]], asyncio.Event, dict[str, int]]:
    stop = asyncio.Event()
    ports = {name: free_port() for name in factories}
    tasks = [
        asyncio.create_task(serve(factory(url), ServiceSettings(url, ports[name]), stop))
        for name, factory in factories.items()
    ]
    await asyncio.sleep(0)
    return tasks, stop, ports


SERVICE_FACTORIES: dict[str, Callable[[str], ServiceApp]] = {
    "referrals": referrals_app.create_app,
    "notifications": notifications_app.create_app,
    "audit": audit_app.create_app,
}


@pytest.fixture
async def hub(nats_server: EmbeddedNats, provisioned: Client) -> AsyncIterator[RunningHub]:
    tasks, stop, ports = await start_services(nats_server.url, SERVICE_FACTORIES)
    running = RunningHub(nats_server.url, provisioned, ports)
    yield running
    for client in running.clients.values():
        with contextlib.suppress(Exception):
            await client.close()
    stop.set()
    await asyncio.gather(*tasks)
