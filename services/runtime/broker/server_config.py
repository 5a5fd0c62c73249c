"""Write a credentials directory: server configuration, one nkey seed per user, optional TLS.

What ``hubctl nats-config`` and ``hubctl up`` run. The layout is described in
``runtime.broker.credentials``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from referral_hub.runtime.broker import permissions
from referral_hub.runtime.broker.credentials import users_for
from referral_hub.runtime.broker.tls import DEFAULT_SERVER_NAMES, write_development_pki


@dataclass(frozen=True)
class TlsRequest:
    """Generate a development CA (no files given), or use the given certificate, key and CA."""

    mutual: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    server_names: tuple[str, ...] = DEFAULT_SERVER_NAMES


@dataclass(frozen=True)
class Generated:
    """What was written where."""

    config_file: Path
    auth_file: Path
    users: list[permissions.User] = field(repr=False)
    tls: permissions.TlsFiles | None

    @property
    def auth_block(self) -> str:
        """The authorization (and tls) blocks, for a server configured elsewhere (``hubctl up``)."""
        return self.auth_file.read_text()


def _tls_files(directory: Path, request: TlsRequest, client_names: Sequence[str]) -> permissions.TlsFiles:
    if request.cert_file is not None and request.key_file is not None and request.ca_file is not None:
        cert, key, ca = request.cert_file, request.key_file, request.ca_file
    else:
        cert, key, ca = write_development_pki(
            directory / "tls", request.server_names, client_names if request.mutual else ()
        )
    return permissions.TlsFiles(str(cert.resolve()), str(key.resolve()), str(ca.resolve()), request.mutual)


def generate(  # noqa: PLR0913 - the keyword-only options of one command, each independent
    directory: Path,
    clinic_ids: Sequence[str],
    server: permissions.ServerOptions,
    *,
    tls: TlsRequest | None = None,
    cluster: permissions.ClusterOptions | None = None,
    rotate: Sequence[str] = (),
    break_glass_dir: Path | None = None,
) -> Generated:
    """Write ``nats-server.conf``, ``auth.conf``, the seeds (kept if present) and TLS material.

    Break-glass seeds go to ``break_glass_dir`` (by default ``credentials.break_glass_dir_for``),
    never into ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    users = users_for(directory, clinic_ids, rotate, break_glass_dir)
    client_names = [
        *permissions.HUB_USERS,
        *permissions.BREAK_GLASS_USERS,
        *(f"clinic-{clinic}" for clinic in clinic_ids),
    ]
    tls_files = _tls_files(directory, tls, client_names) if tls is not None else None
    auth_file = directory / "auth.conf"
    auth_file.write_text(permissions.render_auth(users, tls_files))
    config_file = directory / "nats-server.conf"
    config_file.write_text(permissions.render_server_config(server, users, tls_files, cluster))
    return Generated(config_file, auth_file, users, tls_files)
