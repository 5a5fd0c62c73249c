"""``hubctl portal …`` and ``hubctl run portal``: the clinic portal's commands.

``hubctl portal invite`` prints a one-time, expiring enrolment link for one member;
``hubctl run portal`` serves the portal; ``hubctl up`` calls :func:`demo_logins` to create
demo members with known passwords and TOTP secrets, clearly marked as demo.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from referral_hub.cli.commands import fetch_registry
from referral_hub.errors import HubError
from referral_hub.portal import accounts, domain
from referral_hub.portal.adapters import PortalStore
from referral_hub.runtime.hosting import logs

if TYPE_CHECKING:
    from referral_hub.cli.up import ServiceProcess

DEFAULT_PORT: Final = 8480
PORTAL_URL_ENV: Final = "HUB_PORTAL_URL"
DEMO_PASSWORD: Final = "demo-password-{member}"  # noqa: S105 - published demo logins, marked as such
"""Demo logins only: each demo member's password is this with its member id."""


class PortalUsageError(HubError):
    """A portal command was asked for something that does not exist."""


def base_url(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> str:
    """Where the portal is reached, as links should name it."""
    return os.environ.get(PORTAL_URL_ENV, f"http://{host}:{port}/portal")


def add_run_options(run: argparse.ArgumentParser) -> None:
    """``hubctl run portal``'s own options."""
    run.add_argument("--portal-host", default="127.0.0.1", help="portal: listen address (default: %(default)s)")
    run.add_argument("--portal-port", type=int, default=DEFAULT_PORT, help="portal: port (default: %(default)s)")
    run.add_argument(
        "--portal-metrics-port",
        type=int,
        default=None,
        help="portal: port for /metrics and /health, apart from the pages (default: not served; "
        "hubctl up uses the port after the NATS exporter's)",
    )


def serve(args: argparse.Namespace) -> int:
    """``hubctl run portal``: serve until stopped."""
    from referral_hub.portal.app import PortalSettings  # noqa: PLC0415 - Litestar loads only for the portal
    from referral_hub.portal.app import run as serve_app  # noqa: PLC0415 - as above

    logs.configure("portal", json=args.log_json)
    serve_app(
        PortalSettings(
            nats_url=args.nats_url,
            host=args.portal_host,
            port=args.portal_port,
            metrics_port=args.portal_metrics_port,
            metrics_host=args.metrics_host,
        )
    )
    return 0


def add_commands(sub: Any) -> None:  # noqa: ANN401 - argparse's subparsers action has no public type
    """``hubctl portal invite``."""
    portal = sub.add_parser("portal", help="the clinic portal: invite members")
    portal_sub = portal.add_subparsers(dest="portal_command", required=True, metavar="PORTAL_COMMAND")
    invite = portal_sub.add_parser("invite", help="print a one-time, expiring link for a member to set up a login")
    from referral_hub.cli.main import _common  # noqa: PLC0415 - shared options, imported late to avoid a cycle

    _common(invite)
    invite.add_argument("--member", required=True, help="the member's id in the clinic registry")
    invite.add_argument("--url", default=None, help=f"the portal's public URL (default: ${PORTAL_URL_ENV} or local)")
    invite.set_defaults(run=invite_command)


def add_bench(bench_sub: Any) -> None:  # noqa: ANN401 - argparse's subparsers action has no public type
    """``hubctl bench portal``."""
    from referral_hub.cli.main import _common  # noqa: PLC0415 - shared options, imported late to avoid a cycle

    bench = bench_sub.add_parser("portal", help="portal inbox render p99 (1,000 messages) and live-update latency")
    _common(bench)
    bench.add_argument("--duration", type=float, default=20.0, help="seconds of load (default: %(default)s)")
    bench.add_argument("--members", type=int, default=8, help="simulated members over HTTP (default: %(default)s)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--sync", default="always", help="JetStream sync_interval for the run (default: %(default)s)")
    bench.set_defaults(run=bench_command)


async def bench_command(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    from referral_hub.cli.bench_portal import bench_portal  # noqa: PLC0415 - only this command needs it

    figures = await bench_portal(args.duration, args.members, args.sync)
    if args.json:
        print(json.dumps(figures))  # noqa: T201 - the command's output
    else:
        for name, value in figures.items():
            print(f"{name:24} {value}")  # noqa: T201 - as above
    return 0


async def invite_command(args: argparse.Namespace) -> int:
    """Create the invite and print the link once; only its hash is kept."""
    if not args.clinic:
        msg = "'hubctl portal invite' needs --clinic (or HUB_CLINIC)"
        raise PortalUsageError(msg)
    store = await PortalStore.open(args.nats_url)
    try:
        # The live registry, as the portal reads it: a member added by `hubctl roster set` can be invited.
        clinic = next((c for c in await fetch_registry(store.connection) if c.id == args.clinic), None)
        if clinic is None or not clinic.has_member(args.member):
            msg = f"{args.member} is not a member of {args.clinic} in the hub's registry"
            raise PortalUsageError(msg)
        token = await accounts.create_invite(store, clinic.id, args.member, domain.utc_now())
    finally:
        await store.close()
    url = (args.url or base_url()).rstrip("/")
    hours = int(accounts.INVITE_LIFETIME.total_seconds() // 3600)
    print(f"{url}/invite/{token}")  # noqa: T201 - the command's output
    print(f"one-time link for {args.member}@{clinic.id}; expires in {hours} h")  # noqa: T201 - as above
    return 0


def choose_port() -> int:
    """The usual portal port when it is free, else any free one."""
    from referral_hub.runtime.broker.embedded import free_port  # noqa: PLC0415 - only hubctl up needs it

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            return free_port()
    return DEFAULT_PORT


def start_portal(nats_url: str, port: int, metrics_port: int, log_dir: Path, env: dict[str, str]) -> ServiceProcess:
    """``hubctl run portal`` as a child of ``hubctl up``, in its own session like every service.

    Its ``ServiceProcess`` port is the metrics port (``/metrics`` and ``/health``); the pages are on ``port``.
    """
    from referral_hub.cli.up import ServiceProcess  # noqa: PLC0415 - up imports this module

    log_path = log_dir / "portal.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "referral_hub.cli",
                "run",
                "portal",
                "--nats-url",
                nats_url,
                "--portal-port",
                str(port),
                "--portal-metrics-port",
                str(metrics_port),
                "--log-json",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
        )
    return ServiceProcess("portal", metrics_port, log_path, process)


def announce(port: int, logins: list[DemoLogin], out: Callable[[str], None]) -> None:
    """Print the portal's URL and the demo logins, clearly marked as demo.

    The logins are made before the banner (:func:`demo_logins` hashes passwords for
    seconds), so that once the banner is out, Ctrl-C always finds the hub's own stop path.
    """
    out(f"  portal          {base_url(port=port)}/login  (invite a member: hubctl portal invite --clinic X --member M)")
    for line in describe_demo_logins(logins):
        out(f"  {line}")
    out("")


@dataclass(frozen=True)
class DemoLogin:
    """One demo member's login, printed by ``hubctl up``."""

    username: str
    password: str
    totp_secret: str


DEMO_MEMBERS: Final = (
    ("kneadwell-massage", "sam.lee"),
    ("harbor-pt", "ben.okafor"),
    ("harbor-pt", "ana.ruiz"),
    ("lotus-acu", "raj.patel"),
)
DEMO_SECRETS: Final = {
    "sam.lee": "JBSWY3DPEHPK3PXPSAMLEEDEMOAAAAAA",
    "ben.okafor": "JBSWY3DPEHPK3PXPBENOKAFORDEMOAAA",
    "ana.ruiz": "JBSWY3DPEHPK3PXPANARUIZDEMOAAAAA",
    "raj.patel": "JBSWY3DPEHPK3PXPRAJPATELDEMOAAAA",
}
"""Fixed, published TOTP secrets: demo only, so a reader can log in from the README."""


async def demo_logins(nats_url: str) -> list[DemoLogin]:
    """Create (or reset) the demo members' logins; for ``hubctl up`` on a demo hub only."""
    store = await PortalStore.open(nats_url)
    try:
        made = []
        for clinic, member in DEMO_MEMBERS:
            password = DEMO_PASSWORD.format(member=member)
            secret = DEMO_SECRETS[member]
            await accounts.set_demo_member(store, clinic, member, password, secret)
            made.append(DemoLogin(f"{member}@{clinic}", password, secret))
        return made
    finally:
        await store.close()


def describe_demo_logins(logins: list[DemoLogin]) -> list[str]:
    """Lines for ``hubctl up`` to print: DEMO logins with their current code."""
    lines = ["DEMO portal logins (demo passwords and TOTP secrets; never use these for real patients):"]
    lines.extend(
        f"  {login.username:32} password {login.password:28} TOTP secret {login.totp_secret} "
        f"(code now {accounts.current_code(login.totp_secret)})"
        for login in logins
    )
    return lines


def demo_logins_sync(nats_url: str) -> list[DemoLogin]:
    """:func:`demo_logins` for callers outside an event loop."""
    return asyncio.run(demo_logins(nats_url))
