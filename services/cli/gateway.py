"""``hubctl gateway …`` and ``hubctl run gateway``: the FHIR gateway's commands.

``hubctl gateway client add --clinic X --jwks FILE`` registers a clinic system's public keys
(``--generate`` makes an ES384 key pair and writes the private key, 0600, for a demo).
Registration is written with the operator's ``admin`` key into the gateway's client bucket,
which the gateway itself may only read: whoever holds the gateway's NATS key cannot add a
key that would let it mint a clinic's access.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import nats

from referral_hub.cli.commands import fetch_registry
from referral_hub.errors import HubError
from referral_hub.gateway import auth, scopes
from referral_hub.gateway.adapters import register_client
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.credentials import write_secret
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.hosting import logs

if TYPE_CHECKING:
    from nats.aio.client import Client

    from referral_hub.cli.up import ServiceProcess
    from referral_hub.contracts.registry import Clinic

DEFAULT_PORT: Final = 8490
DEMO_CLINIC: Final = "harbor-pt"
GATEWAY_URL_ENV: Final = "HUB_GATEWAY_URL"
AUDIT_INDEX_ENV: Final = "HUB_GATEWAY_AUDIT_INDEX"
REGISTRY_SETTLE_SECONDS: Final = 5.0


class GatewayUsageError(HubError):
    """A gateway command was asked for something that cannot be done."""


def add_run_options(run: argparse.ArgumentParser) -> None:
    """``hubctl run gateway``'s own options."""
    run.add_argument("--gateway-host", default="127.0.0.1", help="gateway: listen address (default: %(default)s)")
    run.add_argument("--gateway-port", type=int, default=DEFAULT_PORT, help="gateway: port (default: %(default)s)")
    run.add_argument(
        "--gateway-url",
        default=os.environ.get(GATEWAY_URL_ENV, ""),
        help=f"gateway: public base URL, the token audience (default: ${GATEWAY_URL_ENV} or the listen address)",
    )
    run.add_argument(
        "--gateway-metrics-port",
        type=int,
        default=None,
        help="gateway: port for /metrics and /health, apart from the FHIR port (default: not served; "
        "hubctl up uses the portal's metrics port + 1)",
    )
    run.add_argument("--tls-cert", type=Path, default=None, help="gateway: serve HTTPS with this certificate (PEM)")
    run.add_argument("--tls-key", type=Path, default=None, help="gateway: the certificate's private key (PEM)")
    run.add_argument(
        "--audit-index",
        type=Path,
        default=os.environ.get(AUDIT_INDEX_ENV) or None,
        help=f"gateway: serve AuditEvent search from this index file, reading the audit log as the auditor user "
        f"(default: ${AUDIT_INDEX_ENV}; off when unset)",
    )
    run.add_argument(
        "--allow-private-hook-endpoints",
        action="store_true",
        help="gateway, development only: let rest-hook subscriptions reach loopback and private addresses "
        "(and plain http on loopback); refused by default",
    )
    run.add_argument(
        "--rate-limit", type=float, default=50.0, help="gateway: requests/s per clinic (default: %(default)s)"
    )
    run.add_argument(
        "--rate-burst", type=float, default=200.0, help="gateway: burst of requests per clinic (default: %(default)s)"
    )


def serve(args: argparse.Namespace) -> int:
    """``hubctl run gateway``: serve until stopped."""
    from referral_hub.gateway.app import run as serve_app  # noqa: PLC0415 - Litestar loads only for the gateway
    from referral_hub.gateway.web import GatewaySettings  # noqa: PLC0415 - as above

    logs.configure("gateway", json=args.log_json)
    serve_app(
        GatewaySettings(
            nats_url=args.nats_url,
            host=args.gateway_host,
            port=args.gateway_port,
            public_url=args.gateway_url,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            audit_index=args.audit_index,
            allow_private_hook_endpoints=args.allow_private_hook_endpoints,
            rate_per_second=args.rate_limit,
            rate_burst=args.rate_burst,
            metrics_port=args.gateway_metrics_port,
            metrics_host=args.metrics_host,
        )
    )
    return 0


def add_commands(sub: Any) -> None:  # noqa: ANN401 - argparse's subparsers action has no public type
    """``hubctl gateway client add``."""
    gateway = sub.add_parser("gateway", help="the FHIR gateway: register clinic systems")
    gateway_sub = gateway.add_subparsers(dest="gateway_command", required=True, metavar="GATEWAY_COMMAND")
    client = gateway_sub.add_parser("client", help="clinic systems allowed to ask for tokens")
    client_sub = client.add_subparsers(dest="client_command", required=True, metavar="CLIENT_COMMAND")
    add = client_sub.add_parser("add", help="register a clinic system's public JWKS (RS384 or ES384)")
    from referral_hub.cli.main import _common  # noqa: PLC0415 - shared options, imported late to avoid a cycle

    _common(add)
    keys = add.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks", type=Path, help="a JSON Web Key Set file of public keys")
    keys.add_argument(
        "--generate", type=Path, metavar="KEY_FILE", help="make an ES384 key pair; write the private key here"
    )
    add.add_argument("--actor", default=None, help="the member recorded as actor (default: the clinic's first)")
    add.add_argument(
        "--scope",
        default=" ".join(scopes.SUPPORTED_SCOPES),
        help="the most this system's tokens may carry, SMART v1 or v2 scopes separated by spaces "
        "(default: everything the gateway offers)",
    )
    add.set_defaults(run=client_add)


async def client_add(args: argparse.Namespace) -> int:
    """Register (or replace) a clinic system's keys."""
    if not args.clinic:
        msg = "'hubctl gateway client add' needs --clinic (or HUB_CLINIC)"
        raise GatewayUsageError(msg)
    try:
        ceiling = scopes.ceiling(args.scope.split())
    except scopes.ScopeError as exc:
        raise GatewayUsageError(str(exc)) from exc
    registered = await register(
        args.nats_url, args.clinic, jwks_file=args.jwks, generate=args.generate, actor=args.actor, ceiling=ceiling
    )
    print(registered)  # noqa: T201 - the command's output
    return 0


async def register(  # noqa: PLR0913 - keyword-only choices of one registration
    nats_url: str,
    clinic_id: str,
    *,
    jwks_file: Path | None,
    generate: Path | None,
    actor: str | None,
    ceiling: tuple[str, ...] = scopes.SUPPORTED_SCOPES,
) -> str:
    """Store a clinic's public JWKS with the operator's key; with ``generate``, make the key pair first."""
    connection = await nats.connect(
        server_urls(nats_url), connect_timeout=5, **credentials.for_hub_user(permissions.ADMIN).connect_options()
    )
    try:
        clinic = await _registered(connection, clinic_id)
        if clinic is None or not clinic.members:
            msg = f"clinic {clinic_id!r} is not registered (with members); see 'hubctl clinics'"
            raise GatewayUsageError(msg)
        member = actor or clinic.members[0].id
        if not clinic.has_member(member):
            msg = f"{member} is not a member of {clinic.id}"
            raise GatewayUsageError(msg)
        if generate is not None:
            private, jwks = auth.generate_client_key(f"{clinic.id}-{os.urandom(4).hex()}")
            write_secret(generate, json.dumps(private, indent=2).encode())
        elif jwks_file is not None:
            jwks = json.loads(jwks_file.read_text())  # noqa: ASYNC240 - one small file, read once by a CLI command
        else:
            msg = "give --jwks FILE or --generate KEY_FILE"
            raise GatewayUsageError(msg)
        try:
            auth.public_key_set(jwks)
        except ValueError as exc:
            raise GatewayUsageError(str(exc)) from exc
        record = auth.ClientRecord(clinic=clinic.id, jwks=jwks, actor=member, scopes=ceiling)
        await register_client(connection.jetstream(), record)
    finally:
        await connection.drain()
    where = f"; private key written to {generate}" if generate else ""
    return f"registered {len(jwks['keys'])} key(s) for {clinic.id} (actor {member}, scopes {' '.join(ceiling)}){where}"


async def _registered(connection: Client, clinic_id: str) -> Clinic | None:
    """The clinic's registry record, asked again for a few seconds while it is missing.

    On a cluster just provisioned (``hubctl up --cluster 3``), a registry written a moment
    ago can be missing from a read served by a replica that has not caught up yet.
    """
    deadline = time.monotonic() + REGISTRY_SETTLE_SECONDS
    while True:
        clinic = next((c for c in await fetch_registry(connection) if c.id == clinic_id), None)
        if (clinic is not None and clinic.members) or time.monotonic() > deadline:
            return clinic
        await asyncio.sleep(0.2)


# --- hubctl up ---------------------------------------------------------------------------------


def choose_port() -> int:
    """The usual gateway port when it is free, else any free one."""
    from referral_hub.runtime.broker.embedded import free_port  # noqa: PLC0415 - only hubctl up needs it

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            return free_port()
    return DEFAULT_PORT


def start_gateway(  # noqa: PLR0913, PLR0917 - where it listens, where it keeps its files, and its extra options
    nats_url: str,
    port: int,
    metrics_port: int,
    data_dir: Path,
    env: dict[str, str],
    options: tuple[str, ...] = (),
) -> ServiceProcess:
    """``hubctl run gateway`` as a child of ``hubctl up`` (plain HTTP on loopback, for local use).

    A local hub's rest-hook receivers run on the same machine, so this gateway may deliver to
    loopback and private addresses (``--allow-private-hook-endpoints``); a production gateway,
    started with ``hubctl run gateway``, refuses them.

    It serves AuditEvent search from an index in the data directory, so it holds the read-only
    ``auditor`` key as well as the clinics' (SECURITY.md, the gateway).
    """
    from referral_hub.cli.up import ServiceProcess  # noqa: PLC0415 - up imports this module

    log_path = data_dir / "logs" / "gateway.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "referral_hub.cli",
                "run",
                "gateway",
                "--nats-url",
                nats_url,
                "--gateway-port",
                str(port),
                "--gateway-metrics-port",
                str(metrics_port),
                "--audit-index",
                str(data_dir / "gateway-audit-index.sqlite"),
                "--allow-private-hook-endpoints",  # a local demo: receivers run on this machine
                *options,
                "--log-json",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
        )
    return ServiceProcess("gateway", metrics_port, log_path, process)


async def announce(nats_url: str, port: int, data_dir: Path, out: Callable[[str], None]) -> None:
    """Register a DEMO client for one clinic (a new key each start) and print the FHIR base URL and its key file."""
    key_file = data_dir / "gateway" / f"{DEMO_CLINIC}.jwk.json"
    await register(nats_url, DEMO_CLINIC, jwks_file=None, generate=key_file, actor=None)
    base = f"http://127.0.0.1:{port}"
    out(f"  FHIR gateway    {base}/fhir  (token: {base}/auth/token; see docs/gateway.md)")
    out(f"  DEMO client     {DEMO_CLINIC}: private ES384 key in {key_file} (demo only; register yours with")
    out("                  hubctl gateway client add --clinic X --jwks FILE)")
    out("")


# --- hubctl bench gateway ----------------------------------------------------------------------


def add_bench(bench_sub: Any) -> None:  # noqa: ANN401 - argparse's subparsers action has no public type
    """``hubctl bench gateway``."""
    bench = bench_sub.add_parser("gateway", help="referral lifecycles over HTTP/FHIR beside the same over NATS")
    bench.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default: %(default)s)")
    bench.add_argument("--workers", type=int, default=4, help="concurrent lifecycles (default: %(default)s)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--sync", default="always", help="JetStream sync_interval for the run (default: %(default)s)")
    bench.set_defaults(run=bench_command)


async def bench_command(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    from referral_hub.cli.bench_gateway import bench_gateway  # noqa: PLC0415 - only this command needs it

    figures = await bench_gateway(args.duration, args.workers, args.sync)
    if args.json:
        print(json.dumps(figures))  # noqa: T201 - the command's output
    else:
        for name, value in figures.items():
            print(f"{name:24} {value}")  # noqa: T201 - the command's output
    return 0
