"""The portal as a real process beside a real nats-server and the hub's services, and HTTP helpers."""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import nats
import pyotp
import pytest
import pytest_asyncio

from referral_hub.audit import app as audit_app
from referral_hub.audit.checkpoints import new_key_seed, verifier_key
from referral_hub.cli.portal import DemoLogin, demo_logins
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from tests.conftest import SERVICE_FACTORIES, start_services
from tests.helpers import RunningHub

CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')


@dataclass
class RunningPortal:
    """The portal process and where to reach it."""

    url: str
    hub: RunningHub
    logins: dict[str, DemoLogin]

    def client(self) -> httpx.AsyncClient:
        """A fresh cookie jar, as a new browser would have."""
        return httpx.AsyncClient(base_url=self.url, follow_redirects=False, timeout=20)


async def _until_healthy(url: str, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            if process.returncode is not None:
                msg = f"the portal exited with {process.returncode}"
                raise AssertionError(msg)
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    msg = "the portal did not come up"
    raise AssertionError(msg)


@contextlib.asynccontextmanager
async def portal_process(
    hub: RunningHub, log_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[RunningPortal]:
    """The portal as its own process on ``hub``, with the demo logins made; stopped on exit."""
    port = free_port()
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "referral_hub.cli", "run", "portal"),
        *("--nats-url", hub.url, "--portal-port", str(port)),
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}/portal"
    try:
        await _until_healthy(url, process)
        logins = {login.username: login for login in await demo_logins(hub.url)}
        yield RunningPortal(url, hub, logins)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


@pytest.fixture
async def portal(hub: RunningHub, tmp_path: Path) -> AsyncIterator[RunningPortal]:
    async with portal_process(hub, tmp_path / "portal.log") as running:
        yield running


AUDIT_SIGNING_SEED = new_key_seed()
"""The signing key of the module-scoped hub's audit service; the portal pins its verifier key."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_portal(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningPortal]:
    """One hub and one portal for a whole module, with an audit service that signs checkpoints often.

    A module's tests share it, so each starts nothing; they must not depend on one another's
    absence (each uses its own patients), and a member logs in once per module: a TOTP code
    is accepted only once.
    """
    directory = tmp_path_factory.mktemp("portal-hub")
    server = EmbeddedNats(directory / "nats", port=free_port(), monitor_port=free_port())
    server.start()
    try:
        await provision_as_operator(server.url, registry=load_registry_file())
        admin = await nats.connect(server.url, **credentials.for_hub_user(permissions.ADMIN).connect_options())
        factories = {
            **SERVICE_FACTORIES,
            "audit": partial(
                audit_app.create_app,
                signing_key=AUDIT_SIGNING_SEED,
                checkpoints=audit_app.CheckpointPolicy(entries=1000, seconds=1.0, poll_seconds=0.25),
            ),
        }
        tasks, stop, ports = await start_services(server.url, factories)
        hub = RunningHub(server.url, admin, ports)
        env = {"HUB_AUDIT_VERIFIER_KEY": str(verifier_key(AUDIT_SIGNING_SEED))}
        try:
            async with portal_process(hub, directory / "portal.log", env) as running:
                yield running
        finally:
            for client in hub.clients.values():
                with contextlib.suppress(Exception):
                    await client.close()
            stop.set()
            await asyncio.gather(*tasks)
            await admin.drain()
    finally:
        server.stop()


def csrf_of(page: str) -> str:
    """The CSRF token a rendered form carries."""
    found = CSRF_INPUT.search(page)
    assert found, "the form carries no CSRF token"
    return html.unescape(found[1])


async def log_in(
    client: httpx.AsyncClient,
    login: DemoLogin,
    *,
    code: str | None = None,
    password: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Log in over HTTP as a browser would: fetch the form, post it with its token."""
    page = await client.get("/login", headers=headers)
    return await client.post(
        "/login",
        headers=headers,
        data={
            "_csrf_token": csrf_of(page.text),
            "username": login.username,
            "password": password if password is not None else login.password,
            "code": code if code is not None else pyotp.TOTP(login.totp_secret).now(),
        },
    )
