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
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

import msgspec
import nats
from nats.aio.client import Client

from referral_hub.cli import plots, raw_chain
from referral_hub.cli.bench import (
    UNLIMITED_CLINIC_RATE,
    Baseline,
    bench_server,
    drive,
    measure_baseline,
    percentile,
    significant,
    start_hub,
)
from referral_hub.cli.up import stop_services
from referral_hub.client import ClinicClient, new_id
from referral_hub.contracts.alerts import AlertRaise, Severity
from referral_hub.contracts.base import Modality
from referral_hub.contracts.referrals import ReferralTransitioned
from referral_hub.contracts.registry import ChannelKind, Clinic, ContactChannel, Registry
from referral_hub.demo.traffic import demo_alert, demo_referral, lifecycle_command
from referral_hub.notifications.webhooks import SECRET_ENV, new_secret, verify
from referral_hub.runtime.broker.embedded import SYNC_ALWAYS
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER

PATIENTS: Final = 40
DRAIN_SECONDS: Final = 15.0
BASELINE_SECONDS: Final = 2.0
"""Seconds of each raw nats-py measurement (publish+ack, then KV put) before the hub starts."""
RECEIVER_BACKLOG: Final = 1024
KEPT_UP_SHARE: Final = 0.9
"""A chain keeps up with an offered rate when it pages at no less than this share of it, losing none."""
WARM_UP_PER_S: Final = 10.0
"""Alerts per second for one second through each chain before measuring: the raw chain's processes
start with the hub's already running, and neither's first page should be counted as its latency."""
REFERRAL_WORKERS: Final = 16
"""Concurrent referral lifecycles beside the absolute alerts: unrelated work the page must not wait behind."""


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


@dataclass(frozen=True)
class Team:
    """One patient's care team of two clinics: the one that raises alerts and the one paged."""

    patient_ref: str
    raiser: Clinic
    paged: str


async def care_teams(url: str, clinics: list[Clinic]) -> list[Team]:
    """``PATIENTS`` patients, each on a team of two clinics (a referral, accepted)."""
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
                teams.append(Team(request.patient_ref, sender, recipient.id))
    finally:
        for client in clients.values():
            await client.close()
    return teams


def alert(patient_ref: str, raiser: Clinic, severity: Severity = Severity.RELATIVE) -> AlertRaise:
    """The demo's anticoagulant alert, naming every modality, so the other clinic is always paged."""
    return msgspec.structs.replace(
        demo_alert(raiser, patient_ref), modalities=tuple(Modality), techniques=(), severity=severity
    )


Send = Callable[[Team], Awaitable[str]]
"""Publishes one alert for a team (waiting for its acknowledgement); returns the alert id."""


async def offer(teams: list[Team], send: Send, rate: float, duration: float) -> dict[str, float]:
    """Publish alerts at ``rate`` per second for ``duration`` (open loop); returns send times by alert id."""
    sent: dict[str, float] = {}
    pending: set[asyncio.Task[str]] = set()
    started = time.perf_counter()

    async def one(team: Team, at: float) -> str:
        alert_id = await send(team)
        sent[alert_id] = at
        return alert_id

    for index in range(round(rate * duration)):
        await asyncio.sleep(max(started + index / rate - time.perf_counter(), 0))
        task = asyncio.create_task(one(teams[index % len(teams)], time.perf_counter()))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return sent


def hub_sender(clients: dict[str, ClinicClient], severity: Severity = Severity.RELATIVE) -> Send:
    """Alerts through the hub, as the team's raising clinic sends them."""

    async def send(team: Team) -> str:
        message = alert(team.patient_ref, team.raiser, severity)
        await clients[team.raiser.id].send(message)
        return str(message.alert_id)

    return send


def raw_sender(connection: Client) -> Send:
    """Alerts into the raw chain (``raw_chain``), published and acknowledged the same way."""
    js = connection.jetstream()

    async def send(team: Team) -> str:
        alert_id = str(new_id())
        body = msgspec.json.encode(raw_chain.RawAlert(alert_id, team.patient_ref, team.raiser.id))
        await js.publish(raw_chain.out_subject(team.raiser.id), body, headers={MSG_ID_HEADER: alert_id})
        return alert_id

    return send


@dataclass(frozen=True)
class Run:
    """One chain at one offered rate: what was sent when, and which pages arrived when."""

    offered_per_s: float
    sent: dict[str, float]
    arrived: dict[str, float]

    @property
    def latencies_ms(self) -> list[float]:
        """Alert-to-page latency of every page that arrived."""
        return [(self.arrived[a] - t) * 1000 for a, t in self.sent.items() if a in self.arrived]

    @property
    def lost(self) -> int:
        """Alerts whose page did not arrive within the drain time."""
        return len(self.sent) - len(self.latencies_ms)

    @property
    def achieved_per_s(self) -> float:
        """Pages delivered per second, from the first send to the last arrival."""
        arrivals = [self.arrived[a] for a in self.sent if a in self.arrived]
        if not arrivals:
            return 0.0
        return len(arrivals) / max(max(arrivals) - min(self.sent.values()), 1e-9)

    @property
    def kept_up(self) -> bool:
        """Every page arrived, at no less than :data:`KEPT_UP_SHARE` of the offered rate."""
        return self.lost == 0 and self.achieved_per_s >= KEPT_UP_SHARE * self.offered_per_s

    def quantile(self, fraction: float) -> float:
        """A latency quantile in ms, to 0.01."""
        return round(percentile(self.latencies_ms, fraction), 2)


def saturation(runs: list[Run]) -> float | None:
    """The lowest offered rate a chain did not keep up with (None: it kept up with every one)."""
    return min((run.offered_per_s for run in runs if not run.kept_up), default=None)


async def run_chain(send: Send, teams: list[Team], arrivals: Arrivals, rate: float, duration: float) -> Run:
    """Offer ``rate`` alerts/s for ``duration`` through ``send``; wait up to the drain time for their pages."""
    sent = await offer(teams, send, rate, duration)
    deadline = time.perf_counter() + DRAIN_SECONDS
    while len(arrivals.at.keys() & sent.keys()) < len(sent) and time.perf_counter() < deadline:  # noqa: ASYNC110 - the arrivals come from a thread
        await asyncio.sleep(0.05)
    with arrivals.lock:
        arrived = {a: arrivals.at[a] for a in sent if a in arrivals.at}
    return Run(rate, sent, arrived)


def start_raw_chain(url: str, receiver_url: str, teams: list[Team], secrets: str) -> list[subprocess.Popen[bytes]]:
    """The raw chain's fan-out and pager, each its own process, as the hub's services are."""
    members = {team.patient_ref: [team.raiser.id, team.paged] for team in teams}
    arguments = (("fanout", msgspec.json.encode(members).decode()), ("pager", receiver_url))
    return [
        subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "referral_hub.cli.raw_chain", role, url, argument],
            env={**os.environ, SECRET_ENV: secrets},
            start_new_session=True,
        )
        for role, argument in arguments
    ]


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop the raw chain's processes and wait for them."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class PagesReport:
    """Every run of the benchmark, with the raw baselines of the same server."""

    sync_interval: str
    baseline: Baseline
    hub: list[Run] = field(default_factory=list)
    raw: list[Run] = field(default_factory=list)
    absolute_alone: Run | None = None
    absolute_with_referrals: Run | None = None
    referral_transitions_per_s: float = 0.0
    bad_signatures: int = 0

    def per_rate(self) -> list[dict[str, float | bool]]:
        """One entry per offered rate: the hub's and the raw chain's figures side by side."""
        rows: list[dict[str, float | bool]] = []
        for hub, raw in zip(self.hub, self.raw, strict=True):
            raw_p99 = raw.quantile(0.99)
            rows.append(
                {
                    "offered_per_s": hub.offered_per_s,
                    "alerts": len(hub.sent),
                    "lost": hub.lost,
                    "p50_ms": hub.quantile(0.50),
                    "p99_ms": hub.quantile(0.99),
                    "max_ms": round(max(hub.latencies_ms, default=0.0), 2),
                    "achieved_per_s": round(hub.achieved_per_s, 1),
                    "kept_up": hub.kept_up,
                    "raw_chain_lost": raw.lost,
                    "raw_chain_p50_ms": raw.quantile(0.50),
                    "raw_chain_p99_ms": raw_p99,
                    "raw_chain_achieved_per_s": round(raw.achieved_per_s, 1),
                    "raw_chain_kept_up": raw.kept_up,
                    "p99_ratio": significant(hub.quantile(0.99) / raw_p99) if raw_p99 else 0.0,
                }
            )
        return rows

    def figures(self) -> dict[str, object]:
        """The published figures: the first offered rate's at the top level, every rate under ``rates``."""
        rows = self.per_rate()
        first = self.hub[0]
        top: dict[str, object] = {
            **rows[0],
            "pages_delivered": len(first.latencies_ms),
            "bad_signatures": self.bad_signatures,
            "sync_interval": self.sync_interval,
            "baseline_js_publish_per_s": round(self.baseline.js_publish_per_s, 1),
            "baseline_kv_put_per_s": round(self.baseline.kv_put_per_s, 1),
            "rates": rows,
            "hub_saturation_per_s": saturation(self.hub),
            "raw_chain_saturation_per_s": saturation(self.raw),
        }
        if self.absolute_alone is not None and self.absolute_with_referrals is not None:
            top |= {
                "absolute_p99_ms": self.absolute_alone.quantile(0.99),
                "absolute_lost": self.absolute_alone.lost,
                "absolute_with_referrals_p99_ms": self.absolute_with_referrals.quantile(0.99),
                "absolute_with_referrals_lost": self.absolute_with_referrals.lost,
                "referral_transitions_per_s": round(self.referral_transitions_per_s, 1),
            }
        return top


async def bench_pages(
    rates: list[float], duration: float, sync_interval: str = SYNC_ALWAYS, *, referral_workers: int = REFERRAL_WORKERS
) -> PagesReport:
    """The whole benchmark: per rate the raw chain, then the hub; then absolute pages alone and beside referrals."""
    arrivals = Arrivals()
    http = receiver(arrivals)
    try:
        async with bench_server(sync_interval) as server:
            url, scratch = server.url, server.scratch
            connection = await nats.connect(server_urls(url))
            report = PagesReport(sync_interval, await measure_baseline(connection, BASELINE_SECONDS))
            registry = paged_registry(f"http://127.0.0.1:{http.server_address[1]}/page")
            arrivals.secrets.update({clinic.id: new_secret() for clinic in registry.clinics})
            services = await start_hub(url, scratch, registry, {SECRET_ENV: arrivals.table(), **UNLIMITED_CLINIC_RATE})
            chain: list[subprocess.Popen[bytes]] = []
            try:
                teams = await care_teams(url, list(registry.clinics))
                await raw_chain.provision(connection.jetstream())
                chain = start_raw_chain(url, f"http://127.0.0.1:{http.server_address[1]}/page", teams, arrivals.table())
                clients = {team.raiser.id: await ClinicClient.connect(url, team.raiser.id) for team in teams}
                for send in (raw_sender(connection), hub_sender(clients)):  # warm up: processes started, caches read
                    await run_chain(send, teams, arrivals, WARM_UP_PER_S, 1.0)
                for rate in rates:
                    report.raw.append(await run_chain(raw_sender(connection), teams, arrivals, rate, duration))
                    report.hub.append(await run_chain(hub_sender(clients), teams, arrivals, rate, duration))
                if referral_workers:
                    absolute = hub_sender(clients, Severity.ABSOLUTE)
                    report.absolute_alone = await run_chain(absolute, teams, arrivals, rates[0], duration)
                    load = asyncio.create_task(drive(url, list(registry.clinics), duration, workers=referral_workers))
                    report.absolute_with_referrals = await run_chain(absolute, teams, arrivals, rates[0], duration)
                    referrals = await load
                    report.referral_transitions_per_s = referrals.transitions / referrals.seconds
                for client in clients.values():
                    await client.close()
            finally:
                stop_processes(chain)
                stop_services(services)
                await connection.drain()
    finally:
        http.shutdown()
    report.bad_signatures = arrivals.bad_signatures
    return report


def pages_plot(report: PagesReport, duration: float) -> plots.LatencyPlot:
    """Alert-to-page p50 and p99 per offered rate, the hub's beside the raw chain's, beside the raw baseline."""
    del duration  # the achieved rate comes from each run's own first send and last arrival
    return plots.LatencyPlot(
        heading=f"hubctl bench pages: alert to signed webhook page, sync {report.sync_interval}",
        offered_per_s=tuple(run.offered_per_s for run in report.hub),
        achieved_per_s=tuple(run.achieved_per_s for run in report.hub),
        curves=(
            plots.Curve(
                "hub: alert to page",
                tuple(run.quantile(0.5) for run in report.hub),
                tuple(run.quantile(0.99) for run in report.hub),
            ),
            plots.Curve(
                "raw nats-py chain",
                tuple(run.quantile(0.5) for run in report.raw),
                tuple(run.quantile(0.99) for run in report.raw),
            ),
        ),
        baseline_js_publish_per_s=report.baseline.js_publish_per_s,
        baseline_kv_put_per_s=report.baseline.kv_put_per_s,
    )
