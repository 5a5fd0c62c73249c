"""A secured hub (generated accounts, real nats-server), its services, and a real gateway process.

The gateway runs as ``hubctl run gateway`` would: a separate process with the hub's
credentials directory, reached over real HTTP. Two clinic systems are registered with
generated ES384 keys; their private JWKs are handed to the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from referral_hub.gateway import auth
from referral_hub.gateway.adapters import register_client
from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from tests.helpers import RunningHub, secure_server

CLINICS = [clinic.id for clinic in load_registry_file().clinics]
SYSTEMS = ("harbor-pt", "lotus-acu", "kneadwell-massage")
"""Clinics with a registered system (a clinic may use the gateway and plain NATS side by side)."""


@pytest.fixture
def nats_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedNats]:
    server = secure_server(tmp_path, monkeypatch, CLINICS)
    server.start()
    yield server
    server.stop()


@dataclass
class GatewayProcess:
    """A running ``hubctl run gateway``, and how to restart or kill it."""

    nats_url: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    options: tuple[str, ...] = ()
    """More ``hubctl run gateway`` options, for example ``--audit-index``."""
    private_hooks: bool = True
    """``--allow-private-hook-endpoints``: the tests' receivers listen on loopback."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fhir(self) -> str:
        return f"{self.base}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.base}/auth/token"

    def start(self) -> None:
        handle = self.log.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [
                *(sys.executable, "-m", "referral_hub.cli", "run", "gateway"),
                *("--nats-url", self.nats_url, "--gateway-port", str(self.port)),
                *self.options,
                *(("--allow-private-hook-endpoints",) if self.private_hooks else ()),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.fhir}/metadata", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError("gateway did not start: " + self.log.read_text())

    def kill(self) -> None:
        """``kill -9``: no shutdown of any kind."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Systems:
    """The registered clinic systems' private keys, and the gateway they talk to."""

    gateway: GatewayProcess
    keys: dict[str, dict[str, Any]]

    def assertion(self, clinic: str, **claims: Any) -> str:
        return auth.client_assertion(self.keys[clinic], clinic, self.gateway.token_url, datetime.now(UTC), **claims)

    async def token(self, clinic: str, scope: str = "") -> str:
        async with httpx.AsyncClient() as http:
            answer = await http.post(self.gateway.token_url, data=token_form(self.assertion(clinic), scope))
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])


def token_form(assertion: str, scope: str = "") -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": auth.ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    if scope:
        form["scope"] = scope
    return form


@pytest.fixture
async def gateway(hub: RunningHub, provisioned: Client, tmp_path: Path) -> AsyncIterator[Systems]:
    keys = {}
    for clinic in SYSTEMS:
        private, jwks = auth.generate_client_key(f"{clinic}-test")
        actor = next(c for c in load_registry_file().clinics if c.id == clinic).members[0].id
        await register_client(provisioned.jetstream(), auth.ClientRecord(clinic=clinic, jwks=jwks, actor=actor))
        keys[clinic] = private
    process = GatewayProcess(hub.url, free_port(), tmp_path / "gateway.log")
    await asyncio.to_thread(process.start)
    yield Systems(process, keys)
    await asyncio.to_thread(process.stop)
