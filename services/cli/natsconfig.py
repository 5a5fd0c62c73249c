"""``hubctl nats-config``: nats-server configuration and one credential per clinic, from the registry."""

from __future__ import annotations

import argparse
from pathlib import Path

from referral_hub.cli.commands import out
from referral_hub.runtime.broker import permissions
from referral_hub.runtime.broker.credentials import break_glass_dir_for, clinic_seed_path, hub_seed_path
from referral_hub.runtime.broker.server_config import TlsRequest, generate
from referral_hub.runtime.jetstream.registry_cache import load_registry_file


def tls_request(args: argparse.Namespace) -> TlsRequest | None:
    """The TLS the arguments ask for: none, a generated development CA, or the given files."""
    given = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(given) and not all(given):
        msg = "--tls-cert, --tls-key and --tls-ca go together"
        raise permissions.NatsAuthError(msg)
    if not (args.tls or args.mtls or all(given)):
        return None
    return TlsRequest(
        mutual=args.mtls,
        cert_file=args.tls_cert,
        key_file=args.tls_key,
        ca_file=args.tls_ca,
        server_names=tuple(args.tls_name) or TlsRequest().server_names,
    )


def cluster_options(args: argparse.Namespace) -> permissions.ClusterOptions | None:
    """The cluster block the arguments ask for, if any."""
    if not args.cluster_routes:
        return None
    routes = tuple(route.strip() for route in args.cluster_routes.split(",") if route.strip())
    return permissions.ClusterOptions(args.cluster_name, args.cluster_port, routes, args.cluster_host)


def nats_config(args: argparse.Namespace) -> int:
    """Write the configuration, the seeds (kept when present; ``--rotate`` replaces) and TLS files."""
    registry = load_registry_file(args.registry)
    clinic_ids = [clinic.id for clinic in registry.clinics]
    unknown = sorted(
        set(args.rotate) - set(clinic_ids) - set(permissions.HUB_USERS) - set(permissions.BREAK_GLASS_USERS)
    )
    if unknown:
        msg = f"--rotate names no clinic or hub user: {', '.join(unknown)}"
        raise permissions.NatsAuthError(msg)
    directory: Path = args.out
    store = args.store_dir or (directory / "jetstream").resolve()
    server = permissions.ServerOptions(
        store_dir=str(store),
        host=args.host,
        port=args.port,
        monitor_port=args.monitor_port,
        sync_interval=args.sync,
        server_name=args.server_name,
    )
    glass = args.break_glass_dir or break_glass_dir_for(directory)
    written = generate(
        directory,
        clinic_ids,
        server,
        tls=tls_request(args),
        cluster=cluster_options(args),
        rotate=args.rotate,
        break_glass_dir=glass,
    )
    out(f"wrote {written.config_file} ({len(written.users)} users in accounts HUB, AUDIT and one per clinic)")
    out(f"wrote {written.auth_file} (the authorization block alone, to include in another configuration)")
    for user in permissions.HUB_USERS:
        out(f"  hub user {user:<14} {hub_seed_path(directory, user)}")
    for user in permissions.BREAK_GLASS_USERS:
        out(f"  break-glass {user:<11} {glass / f'{user}.nk'}  (keep offline; hubctl provision --break-glass)")
    for clinic in clinic_ids:
        out(f"  clinic {clinic:<16} {clinic_seed_path(directory, clinic)}")
    if written.tls is not None:
        mode = "mutual TLS" if written.tls.verify_clients else "TLS"
        out(f"  {mode}: certificate {written.tls.cert_file}, CA {written.tls.ca_file}")
    if args.rotate:
        out(f"rotated {', '.join(args.rotate)}: reload the server (nats-server --signal reload) to apply")
    out("seed files (*.nk) are secrets, mode 0600: give each clinic only its own")
    return 0
