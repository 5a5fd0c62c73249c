"""The private sealing keys of the clinics a hub-hosted agent (portal, gateway, ``hubctl``) acts for.

Files, never NATS: ``DIR/<clinic>/<key_id>.key`` (mode 0600, the two raw private keys as
JSON) and ``DIR/<clinic>/current`` (the key id new seals are signed with). ``hubctl up``
keeps them in ``.hub-data/sealing-keys``, beside the NATS credentials and outside the
JetStream store, so a copied JetStream store, backup or export carries no key that opens a
patient's details. Old keys stay, so details sealed before a rotation still open.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Final

import msgspec

from referral_hub.runtime.broker.credentials import CREDS_DIR_ENV, write_secret
from referral_hub.sealing.core import ClinicKeyPair, SealingError, generate

KEYS_DIR_ENV: Final = "HUB_SEALING_KEYS_DIR"
DIR_NAME: Final = "sealing-keys"


class KeyStoreError(SealingError):
    """The key store has no key for a clinic, or a key file is not one."""


class _KeyFile(msgspec.Struct, frozen=True):
    key_id: str
    encryption: str
    signing: str


class KeyStore:
    """One directory of clinics' private sealing keys."""

    def __init__(self, directory: Path) -> None:
        """Keys live under ``directory`` (made 0700 on first write)."""
        self.directory = directory

    @classmethod
    def from_environment(cls) -> KeyStore | None:
        """``$HUB_SEALING_KEYS_DIR``, else ``sealing-keys`` beside the credentials directory, else none."""
        named = os.environ.get(KEYS_DIR_ENV, "")
        if named:
            return cls(Path(named))
        creds = os.environ.get(CREDS_DIR_ENV, "")
        return cls(Path(creds).parent / DIR_NAME) if creds else None

    def _clinic_dir(self, clinic: str) -> Path:
        return self.directory / clinic

    def add(self, clinic: str, pair: ClinicKeyPair, *, current: bool = True) -> None:
        """Keep ``pair`` for ``clinic``; with ``current``, new seals use it from now on."""
        encryption, signing = pair.private_bytes()
        record = _KeyFile(pair.key_id, base64.b64encode(encryption).decode(), base64.b64encode(signing).decode())
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._clinic_dir(clinic).mkdir(mode=0o700, exist_ok=True)
        write_secret(self._clinic_dir(clinic) / f"{pair.key_id}.key", msgspec.json.encode(record))
        if current:
            write_secret(self._clinic_dir(clinic) / "current", pair.key_id.encode())

    def generate(self, clinic: str) -> ClinicKeyPair:
        """A new pair for ``clinic``, kept and made current (a first key, or a rotation)."""
        pair = generate()
        self.add(clinic, pair)
        return pair

    def keys(self, clinic: str) -> dict[str, ClinicKeyPair]:
        """Every pair kept for ``clinic``, by key id (empty when none)."""
        found: dict[str, ClinicKeyPair] = {}
        folder = self._clinic_dir(clinic)
        if not folder.is_dir():
            return found
        for path in sorted(folder.glob("*.key")):
            try:
                record = msgspec.json.decode(path.read_bytes(), type=_KeyFile)
                pair = ClinicKeyPair.from_private_bytes(
                    base64.b64decode(record.encryption), base64.b64decode(record.signing)
                )
            except (msgspec.DecodeError, ValueError) as exc:
                msg = f"{path} is not a sealing key file"
                raise KeyStoreError(msg) from exc
            found[pair.key_id] = pair
        return found

    def current(self, clinic: str) -> ClinicKeyPair:
        """The pair ``clinic`` seals and signs with now; :class:`KeyStoreError` when it has none here."""
        pointer = self._clinic_dir(clinic) / "current"
        key_id = pointer.read_text().strip() if pointer.is_file() else ""
        pair = self.keys(clinic).get(key_id)
        if pair is None:
            msg = f"this key store holds no sealing key for {clinic!r} (see 'hubctl clinic sealing-key')"
            raise KeyStoreError(msg)
        return pair

    def holds(self, clinic: str) -> bool:
        """Whether a current key for ``clinic`` is here."""
        return (self._clinic_dir(clinic) / "current").is_file()
