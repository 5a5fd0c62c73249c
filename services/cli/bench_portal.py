"""``hubctl bench portal``: inbox render time and live-update latency, over HTTP, beside NATS's own.

A throwaway hub (nats-server and the three services as processes) and the portal as its own
process. One clinic's inbox is filled with 1,000 messages; N simulated members, logged in
with password and TOTP, fetch the inbox page over HTTP for half the run, each pausing
between loads as a person does (``inbox_render_p99_ms``). For the other half the clinic takes lifecycle steps one after
another; each step's latency is measured twice on one clock, from the publish to the
inbox message reaching a plain NATS subscriber of the clinic (``nats_inbox_p99_ms``), and to
the portal's server-sent event reaching an open HTTP connection (``live_update_p99_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Final

import httpx
import pyotp
from nats.aio.msg import Msg

from referral_hub.cli.bench import UNLIMITED_CLINIC_RATE, bench_server, percentile, start_hub
from referral_hub.cli.portal import start_portal
from referral_hub.cli.up import stop_services, wait_ready
from referral_hub.client import ClinicClient, new_id, utc_now
from referral_hub.contracts.base import Modality
from referral_hub.contracts.referrals import ReferralAccept, ReferralRequest
from referral_hub.portal import accounts
from referral_hub.portal.adapters import PortalStore
from referral_hub.runtime.broker.embedded import SYNC_ALWAYS, free_port
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.jetstream.registry_cache import load_registry_file

INBOX_SIZE: Final = 1000
SENDER: Final = "kneadwell-massage"
CLINIC: Final = "harbor-pt"
MEMBERS: Final = ("ana.ruiz", "ben.okafor", "front.harbor")
PASSWORD: Final = "bench-password-not-real"  # noqa: S105 - a throwaway hub's throwaway login
STEP_TIMEOUT: Final = 10.0
THINK_SECONDS: Final = (0.05, 0.25)
"""A member's pause between two inbox loads: far quicker than a person, so members still overlap."""


def _request(index: int) -> ReferralRequest:
    return ReferralRequest(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=SENDER,
        actor="sam.lee",
        correlation_id=new_id(),
        referral_id=new_id(),
        patient_ref=f"pt-bench-{index:05d}",
        recipient_clinic=CLINIC,
        modality=Modality.PHYSICAL_THERAPY,
        reason="Benchmark referral",
    )


async def fill_inbox(url: str) -> list[ReferralRequest]:
    """Send referrals until the clinic's inbox holds ``INBOX_SIZE`` messages."""
    sender = await ClinicClient.connect(url, SENDER)
    reader = await ClinicClient.connect(url, CLINIC)
    try:
        requests = [_request(index) for index in range(INBOX_SIZE)]
        for start in range(0, len(requests), 100):
            await asyncio.gather(*(sender.send(request) for request in requests[start : start + 100]))
        deadline = time.perf_counter() + 120
        while await reader.last_event_number() < INBOX_SIZE and time.perf_counter() < deadline:  # noqa: ASYNC110 - polling the hub's answer
            await asyncio.sleep(0.2)
        return requests
    finally:
        await sender.close()
        await reader.close()


async def sessions(url: str, base: str) -> list[httpx.Cookies]:
    """Log each bench member in once, with password and TOTP, as a browser would."""
    store = await PortalStore.open(url)
    secrets = {member: pyotp.random_base32() for member in MEMBERS}
    try:
        for member, secret in secrets.items():
            await accounts.set_demo_member(store, CLINIC, member, PASSWORD, secret)
    finally:
        await store.close()
    jars = []
    for member, secret in secrets.items():
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            page = await client.get("/login")
            token = page.text.split('name="_csrf_token" value="', 1)[1].split('"', 1)[0]
            answer = await client.post(
                "/login",
                data={
                    "_csrf_token": token,
                    "username": f"{member}@{CLINIC}",
                    "password": PASSWORD,
                    "code": pyotp.TOTP(secret).now(),
                },
            )
            if answer.status_code != 303:  # noqa: PLR2004 - the redirect after a good login
                msg = f"bench login failed: {answer.status_code}"
                raise RuntimeError(msg)
            jars.append(client.cookies)
    return jars


async def render_latencies(
    base: str, jars: list[httpx.Cookies], members: int, seconds: float, think: tuple[float, float] = THINK_SECONDS
) -> list[float]:
    """``members`` readers fetch the inbox's first page for ``seconds``, each pausing ``think``; latencies in ms.

    Each member waits a random time in ``think`` after each page, as a person does before
    reloading, so members overlap at random instead of all requesting again the instant a
    page arrives: with no pause, N members on one 2-core machine measure N renders queued
    behind each other (and the bench's own client starved of CPU), not one render.
    """
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def member(index: int) -> None:
        pauses = random.Random(index)  # noqa: S311 - think times, not secrets
        async with httpx.AsyncClient(base_url=base, cookies=jars[index % len(jars)], timeout=30) as client:
            await asyncio.sleep(pauses.uniform(0, think[1]))
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = await client.get("/inbox")
                if response.status_code == 200:  # noqa: PLR2004 - HTTP OK
                    latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(pauses.uniform(*think))

    await asyncio.gather(*(member(index) for index in range(members)))
    return latencies


async def live_latencies(  # noqa: C901 - two arrival paths timed side by side, on purpose in one place
    url: str, base: str, jar: httpx.Cookies, requests: list[ReferralRequest], seconds: float
) -> tuple[list[float], list[float]]:
    """Accept referrals one at a time; per step, ms to the NATS inbox subscriber and to the SSE reader."""
    nats_seen: dict[str, float] = {}
    sse_seen: dict[str, float] = {}
    clinic = await ClinicClient.connect(url, CLINIC)

    async def on_inbox(raw: Msg) -> None:
        if raw.subject.endswith("referral.transitioned"):
            for referral_id in pending:
                if referral_id.encode() in raw.data:
                    nats_seen.setdefault(referral_id, time.perf_counter())

    pending: set[str] = set()
    subscription = await clinic.connection.subscribe(subjects.clinic_inbox(CLINIC), cb=on_inbox)
    connected = asyncio.Event()

    async def read_events() -> None:
        async with (
            httpx.AsyncClient(base_url=base, cookies=jar, timeout=None) as client,  # noqa: S113 - a stream held open on purpose
            client.stream("GET", "/events") as response,
        ):
            async for line in response.aiter_lines():
                connected.set()
                if line.startswith("data:"):
                    for referral_id in pending:
                        if referral_id in line:
                            sse_seen.setdefault(referral_id, time.perf_counter())

    reader = asyncio.create_task(read_events())
    try:
        await asyncio.wait_for(connected.wait(), 30)
        sent: dict[str, float] = {}
        stop = time.perf_counter() + seconds
        for request in requests:
            if time.perf_counter() > stop:
                break
            key = str(request.referral_id)
            pending.add(key)
            accept = ReferralAccept(
                message_id=new_id(),
                occurred_at=utc_now(),
                sender_clinic=CLINIC,
                actor="ben.okafor",
                correlation_id=request.correlation_id,
                referral_id=request.referral_id,
                patient_ref=request.patient_ref,
            )
            sent[key] = time.perf_counter()
            await clinic.send(accept)
            deadline = time.perf_counter() + STEP_TIMEOUT
            while (key not in sse_seen or key not in nats_seen) and time.perf_counter() < deadline:  # noqa: ASYNC110 - two arrivals on other tasks
                await asyncio.sleep(0.001)
            pending.discard(key)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await reader
        await subscription.unsubscribe()
        await clinic.close()
    live = [(sse_seen[k] - t) * 1000 for k, t in sent.items() if k in sse_seen]
    direct = [(nats_seen[k] - t) * 1000 for k, t in sent.items() if k in nats_seen]
    return live, direct


async def bench_portal(duration: float, members: int = 8, sync_interval: str = SYNC_ALWAYS) -> dict[str, float | str]:
    """The whole benchmark; returns the figures under their published names."""
    async with bench_server(sync_interval) as server:
        registry = load_registry_file()
        services = await start_hub(server.url, server.scratch, registry, UNLIMITED_CLINIC_RATE)
        port = free_port()
        portal = start_portal(server.url, port, free_port(), server.scratch / "logs", {})
        try:
            await wait_ready(portal)
            base = f"http://127.0.0.1:{port}/portal"
            requests = await fill_inbox(server.url)
            jars = await sessions(server.url, base)
            await render_latencies(base, jars, 1, 1.0, (0.0, 0.0))  # the mirror's first load and warm-up
            rendered = await render_latencies(base, jars, members, duration / 2)
            live, direct = await live_latencies(server.url, base, jars[0], requests, duration / 2)
        finally:
            stop_services([portal, *services])
    live_p99, nats_p99 = percentile(live, 0.99), percentile(direct, 0.99)
    return {
        "inbox_messages": INBOX_SIZE,
        "members": members,
        "inbox_renders": len(rendered),
        "inbox_renders_per_second": round(len(rendered) / (duration / 2), 1),
        "inbox_render_p50_ms": round(percentile(rendered, 0.50), 2),
        "inbox_render_p99_ms": round(percentile(rendered, 0.99), 2),
        "live_updates": len(live),
        "live_update_p50_ms": round(percentile(live, 0.50), 2),
        "live_update_p99_ms": round(live_p99, 2),
        "nats_inbox_p50_ms": round(percentile(direct, 0.50), 2),
        "nats_inbox_p99_ms": round(nats_p99, 2),
        "live_minus_nats_p99_ms": round(live_p99 - nats_p99, 2),
        "ratio": round(live_p99 / nats_p99, 2) if nats_p99 > 0 else 0.0,
        "sync_interval": sync_interval,
    }
