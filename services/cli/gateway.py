"""``hubctl gateway …`` and ``hubctl run gateway``: the FHIR gateway's commands.

``hubctl gateway client add --clinic X --jwks FILE`` registers a clinic system's public keys
(``--generate`` makes an ES384 key pair and writes the private key, 0600, for a demo).
Registration is written with the operator's ``admin`` key into the gateway's client bucket,
which the gateway itself may only read: whoever holds the gateway's NATS key cannot add a
key that would let it mint a clinic's access.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import nats

from referral_hub.cli.commands import fetch_registry
from referral_hub.errors import HubError
from referral_hub.gateway import auth
from referral_hub.gateway.adapters import register_client
from referral_hub.runtime import credentials, logs, natsauth
from referral_hub.runtime.credentials import write_secret
from referral_hub.runtime.servers import server_urls

DEFAULT_PORT: Final = 8490
GATEWAY_URL_ENV: Final = "HUB_GATEWAY_URL"


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
    run.add_argument("--tls-cert", type=Path, default=None, help="gateway: serve HTTPS with this certificate (PEM)")
    run.add_argument("--tls-key", type=Path, default=None, help="gateway: the certificate's private key (PEM)")


def run_or_service(service_runner: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``hubctl run``: the gateway here, every other service by ``service_runner``."""

    def run(args: argparse.Namespace) -> int:
        if args.service != "gateway":
            return service_runner(args)
        from referral_hub.gateway.app import GatewaySettings  # noqa: PLC0415 - Litestar loads only for the gateway
        from referral_hub.gateway.app import run as serve  # noqa: PLC0415 - as above

        logs.configure("gateway", json=args.log_json)
        serve(
            GatewaySettings(
                nats_url=args.nats_url,
                host=args.gateway_host,
                port=args.gateway_port,
                public_url=args.gateway_url,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
            )
        )
        return 0

    return run


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
    add.set_defaults(run=client_add)


async def client_add(args: argparse.Namespace) -> int:
    """Register (or replace) a clinic system's keys."""
    if not args.clinic:
        msg = "'hubctl gateway client add' needs --clinic (or HUB_CLINIC)"
        raise GatewayUsageError(msg)
    connection = await nats.connect(
        server_urls(args.nats_url), connect_timeout=5, **credentials.for_hub_user(natsauth.ADMIN).connect_options()
    )
    try:
        clinic = next((c for c in await fetch_registry(connection) if c.id == args.clinic), None)
        if clinic is None or not clinic.members:
            msg = f"clinic {args.clinic!r} is not registered (with members); see 'hubctl clinics'"
            raise GatewayUsageError(msg)
        actor = args.actor or clinic.members[0].id
        if not clinic.has_member(actor):
            msg = f"{actor} is not a member of {clinic.id}"
            raise GatewayUsageError(msg)
        if args.generate is not None:
            private, jwks = auth.generate_client_key(f"{clinic.id}-{os.urandom(4).hex()}")
            write_secret(args.generate, json.dumps(private, indent=2).encode())
        else:
            jwks = json.loads(args.jwks.read_text())
        try:
            auth.public_key_set(jwks)
        except ValueError as exc:
            raise GatewayUsageError(str(exc)) from exc
        await register_client(connection.jetstream(), auth.ClientRecord(clinic=clinic.id, jwks=jwks, actor=actor))
    finally:
        await connection.drain()
    where = f"; private key written to {args.generate}" if args.generate else ""
    print(f"registered {len(jwks['keys'])} key(s) for {clinic.id} (actor {actor}){where}")  # noqa: T201 - the command's output
    return 0
