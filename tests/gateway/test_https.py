"""The gateway over HTTPS: the hub's development PKI, a token whose audience is the https URL, a FHIR read."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
from nats.aio.client import Client

from referral_hub.gateway import auth
from referral_hub.gateway.adapters import register_client
from referral_hub.runtime.broker.embedded import free_port
from referral_hub.runtime.broker.tls import write_development_pki
from tests.helpers import RunningHub, eventually

from .conftest import token_form
from .fhir_helpers import valid


async def test_https_with_the_hubs_certificates(hub: RunningHub, provisioned: Client, tmp_path: Path) -> None:
    cert, key, ca = write_development_pki(tmp_path / "tls", ["127.0.0.1", "localhost"])
    private, jwks = auth.generate_client_key("harbor-pt-tls")
    await register_client(provisioned.jetstream(), auth.ClientRecord(clinic="harbor-pt", jwks=jwks, actor="ben.okafor"))
    port = free_port()
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(  # noqa: S603, ASYNC220 - our own module, fixed arguments; stopped below
        [
            *(sys.executable, "-m", "referral_hub.cli", "run", "gateway", "--nats-url", hub.url),
            *("--gateway-port", str(port)),
            *("--tls-cert", str(cert), "--tls-key", str(key)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    base = f"https://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as https:

            async def up() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await https.get(f"{base}/health")).status_code == 200
                return False

            await eventually(up, timeout=30)
            assertion = auth.client_assertion(private, "harbor-pt", f"{base}/auth/token", datetime.now(UTC))
            token = (await https.post(f"{base}/auth/token", data=token_form(assertion))).json()["access_token"]
            answer = await https.get(f"{base}/fhir/Task", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200
            assert valid(answer.json())["type"] == "searchset"
            statement = valid((await https.get(f"{base}/fhir/metadata")).json())
            token_url = statement["rest"][0]["security"]["extension"][0]["extension"][0]["valueUri"]
            assert token_url == f"{base}/auth/token"
        # Plain HTTP on the TLS port gets no FHIR answer.
        async with httpx.AsyncClient(timeout=5) as plain:
            with contextlib.suppress(httpx.HTTPError):
                refused = await plain.get(f"http://127.0.0.1:{port}/fhir/metadata")
                assert refused.status_code != 200
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)
        log.close()
