"""The portal as a real process beside a real nats-server and the hub's services, and HTTP helpers."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp
import pytest

from referral_hub.cli.portal import DemoLogin, demo_logins
from referral_hub.runtime.natsserver import free_port
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


@pytest.fixture
async def portal(hub: RunningHub, tmp_path: Path) -> AsyncIterator[RunningPortal]:
    port = free_port()
    log = (tmp_path / "portal.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "referral_hub.portal",
        "--nats-url",
        hub.url,
        "--port",
        str(port),
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
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


def csrf_of(page: str) -> str:
    """The CSRF token a rendered form carries."""
    found = CSRF_INPUT.search(page)
    assert found, "the form carries no CSRF token"
    return html.unescape(found[1])


async def log_in(client: httpx.AsyncClient, login: DemoLogin, *, code: str | None = None) -> httpx.Response:
    """Log in over HTTP as a browser would: fetch the form, post it with its token."""
    page = await client.get("/login")
    return await client.post(
        "/login",
        data={
            "_csrf_token": csrf_of(page.text),
            "username": login.username,
            "password": login.password,
            "code": code if code is not None else pyotp.TOTP(login.totp_secret).now(),
        },
    )
