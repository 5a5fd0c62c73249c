"""The audit log's pinned verifier key: where ``hubctl audit`` finds it, and ``hubctl audit verifier-key``.

Every ``hubctl audit`` command that judges a checkpoint (``verify``, ``prove``,
``consistency``, ``check-proof``) needs the hub's verifier key, pinned by whoever runs it, in
signed-note form (``<name>+<key id>+<base64 key>``). It is looked for, in this order:

1. ``--verifier-key KEY`` (``check-proof`` also takes ``--trusted-key HEX``, a raw public key);
2. ``$HUB_AUDIT_VERIFIER_KEY``;
3. the file ``$HUB_AUDIT_VERIFIER_KEY_FILE``;
4. ``audit-verifier.pub`` in the credentials directory (``hubctl up`` writes it there).

Without one, these commands refuse to run (fail closed) and say how to pin. There is
deliberately no trust-on-first-use: the only place a first use could learn the key from is
the checkpoint store, which is exactly what an attacker who rewrote history controls (the
finding this closes: a history re-signed with a fresh key passed because the verifier took
the key each checkpoint named). The first use is also typically the moment of an audit after
an incident, when the store is least to be trusted. The key is public: take it from the
operator, from ``hubctl up``'s banner, or from the signing key itself with ``hubctl audit
verifier-key``, and pin it in configuration.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Final

from referral_hub.audit.checkpoints import VERIFIER_KEY_FILE, verifier_key
from referral_hub.audit.note import NoteError, VerifierKey
from referral_hub.cli import datadir
from referral_hub.errors import HubError

VERIFIER_KEY_ENV: Final = "HUB_AUDIT_VERIFIER_KEY"
VERIFIER_KEY_FILE_ENV: Final = "HUB_AUDIT_VERIFIER_KEY_FILE"
SIGNING_KEY_FILE_ENV: Final = "HUB_AUDIT_SIGNING_KEY_FILE"
HOW_TO_PIN: Final = (
    f"pin the hub's audit verifier key: --verifier-key KEY, or ${VERIFIER_KEY_ENV}=KEY "
    f"(or ${VERIFIER_KEY_FILE_ENV}=FILE). KEY looks like <name>+<8 hex>+<base64>; hubctl up prints it, "
    "and 'hubctl audit verifier-key --signing-key-file FILE' derives it from the signing key. "
    "Take it from the hub's operator, never from the log being checked"
)


class NoVerifierKeyError(HubError):
    """No verifier key is pinned, or the pinned one is not a verifier key."""


def parse_verifier_key(text: str, where: str) -> VerifierKey:
    """A verifier key from ``where``, or a one-line error naming it."""
    try:
        return VerifierKey.parse(text)
    except NoteError as exc:
        msg = f"{where} is not an audit verifier key ({exc}); {HOW_TO_PIN}"
        raise NoVerifierKeyError(msg) from exc


def _from_file(path: Path, where: str) -> VerifierKey:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read {where} {path}: {exc.strerror}"
        raise NoVerifierKeyError(msg) from exc
    return parse_verifier_key(text.strip(), f"{where} {path}")


def pinned_key(args: argparse.Namespace) -> VerifierKey:
    """The pinned verifier key, from the first place that names one; fails closed if none does."""
    given = getattr(args, "verifier_key", None)
    if given:
        return parse_verifier_key(given, "--verifier-key")
    named = os.environ.get(VERIFIER_KEY_ENV, "").strip()
    if named:
        return parse_verifier_key(named, f"${VERIFIER_KEY_ENV}")
    file_named = os.environ.get(VERIFIER_KEY_FILE_ENV, "").strip()
    if file_named:
        return _from_file(Path(file_named), f"${VERIFIER_KEY_FILE_ENV}")
    creds_dir: Path | None = getattr(args, "creds_dir", None)
    if creds_dir is not None and (creds_dir / VERIFIER_KEY_FILE).is_file():
        return _from_file(creds_dir / VERIFIER_KEY_FILE, "the credentials directory's verifier key")
    msg = f"no audit verifier key is pinned, so no checkpoint can be trusted; {HOW_TO_PIN}"
    raise NoVerifierKeyError(msg)


def add_verifier_key_option(parser: argparse.ArgumentParser) -> None:
    """``--verifier-key``, for every command that judges checkpoints."""
    parser.add_argument(
        "--verifier-key",
        metavar="KEY",
        help=f"the hub's pinned audit verifier key, <name>+<key id>+<base64> (default: ${VERIFIER_KEY_ENV}, "
        f"${VERIFIER_KEY_FILE_ENV}, else {VERIFIER_KEY_FILE} in the credentials directory); required",
    )


def show_verifier_key(args: argparse.Namespace) -> int:
    """``hubctl audit verifier-key [--signing-key-file FILE]``: the verifier key to pin, from the signing key."""
    local = datadir.in_data_dir(datadir.SIGNING_KEY_FILE)
    path: Path | None = args.signing_key_file or (
        Path(os.environ[SIGNING_KEY_FILE_ENV]) if os.environ.get(SIGNING_KEY_FILE_ENV) else None
    )
    if path is None and local.is_file():
        path = local
    if path is None:
        msg = f"name the audit signing key: --signing-key-file FILE or ${SIGNING_KEY_FILE_ENV}"
        raise NoVerifierKeyError(msg)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read the audit signing key {path}: {exc.strerror}"
        raise NoVerifierKeyError(msg) from exc
    try:
        key = verifier_key(text, args.origin)
    except NoteError as exc:
        msg = f"{path}: {exc}"
        raise NoVerifierKeyError(msg) from exc
    print(key)  # noqa: T201 - the CLI's output, alone on its line for scripts
    return 0
