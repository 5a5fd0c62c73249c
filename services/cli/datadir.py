"""One data folder for every ``hubctl`` command: ``--data-dir``, else ``$HUB_DATA_DIR``, else ``.hub-data``.

``hubctl up`` keeps everything a local hub owns there (the JetStream store, credentials,
keys, logs, caches); every other command finds what it needs in the same folder, whatever
the working folder. The folder is made absolute and put in the environment once, so the
client library, child processes and each subcommand's defaults all agree on it, and no
command writes anywhere else.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from referral_hub.runtime.broker import credentials
from referral_hub.runtime.broker.credentials import CREDS_DIR_ENV, DATA_DIR_ENV, DEFAULT_DATA_DIR

AUDIT_INDEX_FILE = "audit-index.sqlite"
SIGNING_KEY_FILE = "audit-signing.key"
SUPERVISION_FILE = "supervision.json"
"""What ``hubctl up`` says about its children (restarts, crash loops), for ``hubctl status``."""


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--creds-dir``, shared by every subcommand."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"the local hub's data folder: store, credentials, keys, logs, caches "
        f"(default: ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--creds-dir",
        type=Path,
        default=None,
        help=f"NATS credentials directory (hubctl nats-config --out); default: ${CREDS_DIR_ENV}, "
        "else auth/ in the data folder when it exists",
    )


def settle(args: argparse.Namespace) -> None:
    """Resolve the data folder and credentials once, into ``args`` and the environment.

    ``--data-dir`` wins over ``$HUB_DATA_DIR``; ``--creds-dir`` over ``$HUB_NATS_CREDS_DIR``
    over the data folder's ``auth/`` (used only when it exists, so a hub without
    authorization is reached anonymously).
    """
    named: Path | None = getattr(args, "data_dir", None)
    if named is not None:
        os.environ[DATA_DIR_ENV] = str(named.resolve())
    folder = credentials.data_dir()
    os.environ[DATA_DIR_ENV] = str(folder)
    if hasattr(args, "data_dir"):
        args.data_dir = folder
    chosen: Path | None = getattr(args, "creds_dir", None)
    if chosen is None and os.environ.get(CREDS_DIR_ENV):
        chosen = Path(os.environ[CREDS_DIR_ENV])
    if chosen is None and credentials.local_creds_dir().is_dir():
        chosen = credentials.local_creds_dir()
    if chosen is not None:
        os.environ[CREDS_DIR_ENV] = str(chosen.resolve())
        if hasattr(args, "creds_dir"):
            args.creds_dir = chosen.resolve()


def in_data_dir(name: str) -> Path:
    """A file of the current data folder (after :func:`settle`)."""
    return credentials.data_dir() / name
