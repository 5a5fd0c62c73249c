"""NATS credentials on disk, and the connection options every hub process derives from them.

A credentials directory (``hubctl nats-config --out DIR`` writes one; ``hubctl up`` keeps
one in ``auth/`` of its data folder, ``--data-dir`` or ``$HUB_DATA_DIR``, default ``.hub-data``)
looks like this::

    DIR/nats-server.conf          the server's configuration (public nkeys only)
    DIR/auth.conf                 the same authorization (and tls) blocks, to include elsewhere
    DIR/clinics/<clinic_id>.nk    one clinic's nkey seed (nats-py ``nkeys_seed``), mode 0600
    DIR/hub/<user>.nk             referrals, notifications, audit, admin, ops; mode 0600
    DIR/tls/ca.pem, server.pem, server-key.pem, clients/<name>.pem and <name>-key.pem

A process finds its own credentials through the environment:

- ``HUB_NATS_CREDS_DIR``: a directory as above; a clinic uses ``clinics/<id>.nk``, a hub
  process ``hub/<user>.nk``, and both trust ``tls/ca.pem`` when it exists;
- ``HUB_NATS_NKEY_FILE``: one seed file, for a machine that holds only its own;
- ``HUB_NATS_CA_FILE``, ``HUB_NATS_CERT_FILE``, ``HUB_NATS_KEY_FILE``: TLS trust and a
  client certificate for mutual TLS.

Seeds are read by nats-py from the file; no seed is ever passed on a command line, put in a
log line or printed.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import nkeys

from referral_hub.errors import HubError
from referral_hub.runtime.broker import permissions

CREDS_DIR_ENV: Final = "HUB_NATS_CREDS_DIR"
NKEY_FILE_ENV: Final = "HUB_NATS_NKEY_FILE"
CA_FILE_ENV: Final = "HUB_NATS_CA_FILE"
CERT_FILE_ENV: Final = "HUB_NATS_CERT_FILE"
KEY_FILE_ENV: Final = "HUB_NATS_KEY_FILE"
BREAK_GLASS_DIR_ENV: Final = "HUB_BREAKGLASS_DIR"
DATA_DIR_ENV: Final = "HUB_DATA_DIR"
DEFAULT_DATA_DIR: Final = Path(".hub-data")
SECRET_MODE: Final = 0o600
SEED_BYTES: Final = 32


class CredentialsError(HubError):
    """A credentials file is missing, unreadable or not what it claims to be."""


def write_secret(path: Path, content: bytes) -> None:
    """Write ``content`` to a new or replaced file that only its owner can read, from the first byte.

    The file is created with mode 0600 (never written world-readable and then narrowed),
    and replaced atomically, so a reader sees the old secret or the new one, never half.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.new")
    staging.unlink(missing_ok=True)
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
    staging.replace(path)


def new_user_seed() -> bytes:
    """A fresh nkey user seed (``SU...``), from the operating system's random source."""
    seed: bytes = nkeys.encode_seed(os.urandom(SEED_BYTES), nkeys.PREFIX_BYTE_USER)
    return seed


def public_key(seed: bytes) -> str:
    """The public nkey (``U...``) of a seed: what the server's configuration holds."""
    try:
        key: bytes = nkeys.from_seed(bytearray(seed.strip())).public_key
    except (nkeys.ErrInvalidSeed, nkeys.ErrInvalidPrefixByte, ValueError) as exc:
        msg = "not an nkey user seed"
        raise CredentialsError(msg) from exc
    return key.decode()


def ensure_seed(path: Path, *, rotate: bool = False) -> str:
    """The public key of the seed at ``path``, creating the seed (0600) if it is missing or ``rotate``."""
    if rotate or not path.exists():
        write_secret(path, new_user_seed() + b"\n")
    return public_key(path.read_bytes())


def clinic_seed_path(directory: Path, clinic_id: str) -> Path:
    """Where a clinic's seed lives in a credentials directory."""
    return directory / "clinics" / f"{clinic_id}.nk"


def hub_seed_path(directory: Path, user: str) -> Path:
    """Where a hub user's seed lives in a credentials directory."""
    return directory / "hub" / f"{user}.nk"


def data_dir() -> Path:
    """The local hub's data folder, absolute: ``$HUB_DATA_DIR``, else ``.hub-data`` here.

    Every local path (credentials, keys, caches, logs) is found under it, so one setting
    serves every command from any working folder.
    """
    named = os.environ.get(DATA_DIR_ENV, "")
    return (Path(named) if named else DEFAULT_DATA_DIR).resolve()


def local_creds_dir() -> Path:
    """Where ``hubctl up`` keeps the credentials of the hub in :func:`data_dir`."""
    return data_dir() / "auth"


def break_glass_dir_for(directory: Path) -> Path:
    """Where break-glass seeds go by default: ``break-glass/`` beside the credentials directory, never in it.

    For ``hubctl up`` (credentials in ``DATA/auth``) that is ``DATA/break-glass``: inside the
    hub's data folder (nothing is written outside it), yet apart from the credentials
    directory that services and ``hubctl`` read, so handing ``auth/`` to a machine never
    hands over a key that can change streams.
    """
    return directory.resolve().parent / "break-glass"


def users_for(
    directory: Path,
    clinic_ids: Iterable[str],
    rotate: Iterable[str] = (),
    break_glass_dir: Path | None = None,
) -> list[permissions.User]:
    """Every user's public key, account and rights; seeds are created where missing and replaced for ``rotate``.

    Existing seeds are kept, so regenerating the configuration after a clinic joins does
    not log everybody else out. Break-glass seeds go to ``break_glass_dir``.
    """
    renew = set(rotate)
    glass = break_glass_dir or break_glass_dir_for(directory)
    users = [
        permissions.User(
            ensure_seed(hub_seed_path(directory, user), rotate=user in renew),
            f"hub user {user}",
            permissions.hub_permissions(user),
            permissions.account_of(user),
        )
        for user in permissions.HUB_USERS
    ]
    users.extend(
        permissions.User(
            ensure_seed(glass / f"{user}.nk", rotate=user in renew),
            f"break-glass {user} (seed kept outside the hub's data)",
            permissions.hub_permissions(user),
            permissions.account_of(user),
        )
        for user in permissions.BREAK_GLASS_USERS
    )
    users.extend(
        permissions.User(
            ensure_seed(clinic_seed_path(directory, clinic), rotate=clinic in renew),
            f"clinic {clinic}",
            permissions.clinic_permissions(clinic),
            permissions.clinic_account(clinic),
        )
        for clinic in clinic_ids
    )
    return users


@dataclass(frozen=True)
class NatsCredentials:
    """What one connection presents: an nkey seed file, TLS trust and a client certificate."""

    inbox_prefix: str = "_INBOX"
    nkey_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        """A client TLS context trusting ``ca_file`` (and presenting the certificate), or ``None``."""
        if self.ca_file is None and self.cert_file is None:
            return None
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None
        )
        if self.cert_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return context

    def seed_file(self) -> str | None:
        """The nkey seed file to sign with, if any; a configured file that is gone is an error, not anonymity."""
        if self.nkey_file is None:
            return None
        if not self.nkey_file.is_file():
            msg = f"nkey seed file {self.nkey_file} does not exist"
            raise CredentialsError(msg)
        return str(self.nkey_file)

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``."""
        options: dict[str, Any] = {"inbox_prefix": self.inbox_prefix}
        seed = self.seed_file()
        if seed is not None:
            options["nkeys_seed"] = seed
        context = self.tls_context()
        if context is not None:
            options["tls"] = context
        return options


def _path_env(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value) if value else None


def _from_environment(inbox_prefix: str, seed_in: Callable[[Path], Path], client_name: str) -> NatsCredentials:
    """What the environment names for one identity; ``seed_in`` finds its seed in a credentials directory."""
    directory = _path_env(CREDS_DIR_ENV)
    nkey_file = _path_env(NKEY_FILE_ENV)
    ca_file = _path_env(CA_FILE_ENV)
    cert_file, key_file = _path_env(CERT_FILE_ENV), _path_env(KEY_FILE_ENV)
    if directory is not None:
        nkey_file = nkey_file or seed_in(directory)
        tls_dir = directory / "tls"
        if ca_file is None and (tls_dir / "ca.pem").exists():
            ca_file = tls_dir / "ca.pem"
        client_cert = tls_dir / "clients" / f"{client_name}.pem"
        if cert_file is None and client_cert.exists():
            cert_file, key_file = client_cert, tls_dir / "clients" / f"{client_name}-key.pem"
    return NatsCredentials(inbox_prefix, nkey_file, ca_file, cert_file, key_file)


def for_clinic(clinic_id: str) -> NatsCredentials:
    """A clinic's credentials, as the environment names them."""
    return _from_environment(
        permissions.clinic_inbox_prefix(clinic_id),
        lambda directory: clinic_seed_path(directory, clinic_id),
        f"clinic-{clinic_id}",
    )


def for_hub_user(user: str) -> NatsCredentials:
    """A hub user's credentials (a service, ``admin``, ``ops`` or ``auditor``), as the environment names them."""
    return _from_environment(permissions.hub_inbox_prefix(user), lambda directory: hub_seed_path(directory, user), user)


def for_break_glass(user: str = permissions.BREAK_GLASS) -> NatsCredentials:
    """A break-glass key: from ``HUB_BREAKGLASS_DIR``, or beside the credentials directory's parent."""
    directory = _path_env(CREDS_DIR_ENV)
    glass = _path_env(BREAK_GLASS_DIR_ENV) or (break_glass_dir_for(directory) if directory else None)
    return replace(for_hub_user(user), nkey_file=glass / f"{user}.nk" if glass else None)


def hub_api_prefix(user: str) -> str:
    """Where ``user`` reaches the hub account's JetStream API.

    That is its own ``$JS.API``, or, from the audit account under authorization (a
    credentials directory or seed file is named), the imported ``$JS.HUB.API``.
    """
    secured = _path_env(CREDS_DIR_ENV) is not None or _path_env(NKEY_FILE_ENV) is not None
    if secured and permissions.account_of(user) == permissions.AUDIT_ACCOUNT:
        return permissions.HUB_API_PREFIX
    return permissions.JS_API
