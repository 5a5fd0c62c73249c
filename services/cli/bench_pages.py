"""``hubctl bench pages``: alert-to-page latency through the whole chain, at a steady offered load.

A clinic raises an alert; the referrals service fans it out to the care team; notifications
pages the other clinic's on-call member by a signed webhook to a real HTTP receiver in this
process. The latency is from publishing ``alert.raise`` to the receiver reading the POST, on
one clock. Alerts are offered at a fixed rate (open loop: a slow hub does not slow the
offer), and an alert whose page never arrives within the drain time counts as lost. The
receiver verifies every page's Standard Webhooks signature, with the ``standardwebhooks``
library, against the secret of the clinic in its path; a page that fails counts as lost, and
under ``bad_signatures``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

import msgspec
import nats

from referral_hub.cli import plots
from referral_hub.cli.bench import bench_server, measure_baseline, percentile, start_hub
from referral_hub.cli.up import stop_services
from referral_hub.client import ClinicClient
from referral_hub.contracts.alerts import AlertRaise
from referral_hub.contracts.base import Modality
from referral_hub.contracts.referrals import ReferralTransitioned
from referral_hub.contracts.registry import ChannelKind, Clinic, ContactChannel, Registry
from referral_hub.demo.traffic import demo_alert, demo_referral, lifecycle_command
from referral_hub.notifications.webhooks import SECRET_ENV, new_secret, verify
from referral_hub.runtime.broker.embedded import SYNC_ALWAYS
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.jetstream.registry_cache import load_registry_file

PATIENTS: Final = 40
DRAIN_SECONDS: Final = 15.0
BASELINE_SECONDS: Final = 2.0
"""Seconds of each raw nats-py measurement (publish+ack, then KV put) before the hub starts."""
RECEIVER_BACKLOG: Final = 1024


@dataclass
class Arrivals:
    """Page POSTs the receiver read and verified, by alert id, with the time they arrived."""

    secrets: dict[str, str] = field(default_factory=dict)
    """Each clinic's webhook secret (a throwaway, for a throwaway hub)."""
    at: dict[str, float] = field(default_factory=dict)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def table(self) -> str:
        """The secrets as the notifications service reads them (``HUB_WEBHOOK_SECRET``)."""
        return msgspec.json.encode({clinic: [secret] for clinic, secret in self.secrets.items()}).decode()

    def record(self, path: str, body: bytes, headers: dict[str, str]) -> bool:
        """Keep the first verified page per alert (the dedup key is ``alert:<alert_id>:<clinic>``)."""
        arrived = time.perf_counter()
        secret = self.secrets.get(path.rstrip("/").rpartition("/")[2])
        if secret is None or not verify([secret], body, headers):
            with self.lock:
                self.bad_signatures += 1
            return False
        dedup_key = msgspec.json.decode(body, type=_Page).dedup_key
        alert_id = dedup_key.split(":")[1] if dedup_key.count(":") == 2 else ""  # noqa: PLR2004 - three parts
        with self.lock:
            self.at.setdefault(alert_id, arrived)
        return True


class _Page(msgspec.Struct):
    dedup_key: str = ""


def receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    """A real HTTP server on loopback that records signed arrivals (204) and refuses others (401)."""

    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as a production receiver would: the hub keeps its connections to a
        # receiver, and a new TCP connection per page would measure the receiver's accept loop.
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signed = arrivals.record(self.path, body, dict(self.headers))
            self.send_response(204 if signed else 401)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    class Server(ThreadingHTTPServer):
        # socketserver's listen backlog is 5: at 200 new connections a second the rest wait
        # for TCP's SYN retry (1 s, then 3 s), which the benchmark would count as hub latency.
        request_queue_size = RECEIVER_BACKLOG
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def paged_registry(url: str) -> Registry:
    """The demo clinics, every member reachable by webhook at ``<url>/<clinic>``."""
    clinics = []
    for clinic in load_registry_file().clinics:
        hook = (ContactChannel(kind=ChannelKind.WEBHOOK, address=f"{url}/{clinic.id}"),)
        members = tuple(msgspec.structs.replace(m, channels=hook) for m in clinic.members)
        clinics.append(msgspec.structs.replace(clinic, members=members))
    return Registry(clinics=tuple(clinics))


async def care_teams(url: str, clinics: list[Clinic]) -> list[tuple[str, Clinic]]:
    """``PATIENTS`` patients, each on a team of two clinics (a referral, accepted); returns (patient, raiser)."""
    import random  # noqa: PLC0415 - only the setup needs it

    rng = random.Random(11)  # noqa: S311 - load shape, not security
    clients = {clinic.id: await ClinicClient.connect(url, clinic.id) for clinic in clinics}
    teams = []
    try:
        for _ in range(PATIENTS):
            sender, recipient = rng.sample(clinics, 2)
            request = demo_referral(sender, recipient, rng)
            await clients[sender.id].send_and_confirm(request)
            actor, accept = lifecycle_command("accept", request, sender, recipient)
            answer = await clients[actor.id].send_and_confirm(accept)
            if isinstance(answer.message, ReferralTransitioned):
                teams.append((request.patient_ref, sender))
    finally:
        for client in clients.values():
            await client.close()
    return teams


def alert(patient_ref: str, raiser: Clinic) -> AlertRaise:
    """The demo's anticoagulant alert, naming every modality, so the other clinic is always paged."""
    return msgspec.structs.replace(demo_alert(raiser, patient_ref), modalities=tuple(Modality), techniques=())


async def offer(url: str, teams: list[tuple[str, Clinic]], rate: float, duration: float) -> dict[str, float]:
    """Publish alerts at ``rate`` per second for ``duration``; returns send times by alert id."""
    clients = {raiser.id: await ClinicClient.connect(url, raiser.id) for _, raiser in teams}
    sent: dict[str, float] = {}
    pending: set[asyncio.Task[object]] = set()
    started = time.perf_counter()
    count = round(rate * duration)
    try:
        for index in range(count):
            await asyncio.sleep(max(started + index / rate - time.perf_counter(), 0))
            patient_ref, raiser = teams[index % len(teams)]
            message = alert(patient_ref, raiser)
            sent[str(message.alert_id)] = time.perf_counter()
            task = asyncio.create_task(clients[raiser.id].send(message))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    finally:
        for client in clients.values():
            await client.close()
    return sent


async def bench_pages(rate: float, duration: float, sync_interval: str = SYNC_ALWAYS) -> dict[str, float | str]:
    """The whole benchmark; returns the figures under their published names."""
    arrivals = Arrivals()
    http = receiver(arrivals)
    try:
        async with bench_server(sync_interval) as server:
            url, scratch = server.url, server.scratch
            connection = await nats.connect(server_urls(url))
            baseline = await measure_baseline(connection, BASELINE_SECONDS)
            await connection.drain()
            registry = paged_registry(f"http://127.0.0.1:{http.server_address[1]}/page")
            arrivals.secrets.update({clinic.id: new_secret() for clinic in registry.clinics})
            services = await start_hub(url, scratch, registry, {SECRET_ENV: arrivals.table()})
            try:
                teams = await care_teams(url, list(registry.clinics))
                sent = await offer(url, teams, rate, duration)
                deadline = time.perf_counter() + DRAIN_SECONDS
                while len(arrivals.at.keys() & sent.keys()) < len(sent) and time.perf_counter() < deadline:  # noqa: ASYNC110 - the arrivals come from a thread
                    await asyncio.sleep(0.1)
            finally:
                stop_services(services)
    finally:
        http.shutdown()
    latencies = [(arrivals.at[a] - t) * 1000 for a, t in sent.items() if a in arrivals.at]
    figures: dict[str, float | str] = {
        "offered_per_s": rate,
        "alerts": len(sent),
        "pages_delivered": len(latencies),
        "lost": len(sent) - len(latencies),
        "bad_signatures": arrivals.bad_signatures,
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies, default=0.0), 2),
        "sync_interval": sync_interval,
        "baseline_js_publish_per_s": round(baseline.js_publish_per_s, 1),
        "baseline_kv_put_per_s": round(baseline.kv_put_per_s, 1),
    }
    return figures


def pages_plot(figures: dict[str, float | str], duration: float) -> plots.LatencyPlot:
    """The run's one offered rate: alert-to-page p50 and p99 beside the raw baseline of the same server."""

    def number(name: str) -> float:
        return float(figures[name])

    return plots.LatencyPlot(
        heading=f"hubctl bench pages: alert to signed webhook page, sync {figures['sync_interval']}",
        offered_per_s=(number("offered_per_s"),),
        achieved_per_s=(number("pages_delivered") / duration,),
        curves=(plots.Curve("alert to page", (number("p50_ms"),), (number("p99_ms"),)),),
        baseline_js_publish_per_s=number("baseline_js_publish_per_s"),
        baseline_kv_put_per_s=number("baseline_kv_put_per_s"),
    )
